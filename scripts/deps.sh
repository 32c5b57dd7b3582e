#!/usr/bin/env bash
# Installs, from Debian's packages, everything machpay_receiver needs to
# build, run and test.  Idempotent: does nothing when all are present.
# The PostgreSQL major is the one the release ships (15 on Debian 12, 17 on
# Debian 13) or PG_CONFIG's when given (scripts/pg_major.sh).
#
#   bash scripts/deps.sh        build, run, test
#   bash scripts/deps.sh deb    also what `make deb` needs (debhelper, pg_buildext)
set -euo pipefail
. "$(dirname "$0")/pg_major.sh"
pg=$(machpay_pg_major)
release=$(debian_codename)

PACKAGES=(
  make gcc pkg-config ca-certificates curl
  "postgresql-$pg" "postgresql-server-dev-$pg" "postgresql-$pg-partman"
  libnghttp2-dev libhttp-parser-dev libssl-dev zlib1g-dev libpq-dev
  libipc-run-perl           # TAP tests (PostgreSQL::Test::Cluster)
  nghttp2-client            # h2load and HTTP/2 tests
  clang libclang-rt-dev     # libFuzzer harness (the runtime of the default clang)
  openssl                   # throwaway TLS certificates in tests
  chromium                  # headless browser test of the SSE console page
  pg-auto-failover-cli "postgresql-$pg-auto-failover"  # make ha-demo, HA tests
  haproxy                   # make ha-demo: the entry that follows the primary
)
for group in "$@"; do
  case $group in
    deb) PACKAGES+=(build-essential debhelper postgresql-server-dev-all) ;;
    *) echo "deps: unknown group $group" >&2; exit 2 ;;
  esac
done
if [ -n "${MACHPAY_EXTRA_PACKAGES:-}" ]; then
  read -r -a extra <<<"$MACHPAY_EXTRA_PACKAGES"
  PACKAGES+=("${extra[@]}")
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: ${missing[*]}; run as root (or: sudo bash scripts/deps.sh)" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# Debian's postgresql-common creates a default cluster on install; we never
# use it (tests and `make run` create their own), so do not create one.
mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ] || ! grep -q '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
  echo "create_main_cluster = false" >> /etc/postgresql-common/createcluster.conf
fi
apt-get install -y -q --no-install-recommends "${missing[@]}"
