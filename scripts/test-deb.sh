#!/usr/bin/env bash
# `make test-deb-debian12` / `make test-deb-debian13`: the Debian package of
# RELEASE (bookworm, trixie), built by `make deb` in a throwaway chroot of
# that release from a clean clone of HEAD, then installed the way a user
# installs it, into a fresh minimal chroot of the release:
#   apt-get install ./postgresql-N-machpay-receiver_*.deb
# (apt brings PostgreSQL, pg_partman and the libraries from the package's
# dependencies).  There a cluster made with pg_createcluster preloads the
# library; the extension is created, an event is posted over HTTP with curl
# and its rows are read back; then the package's autopkgtest runs.
# The packages are kept in dist/RELEASE/.  Chroots: scripts/chroot.sh.
# Usage: scripts/test-deb.sh RELEASE
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
release=${1:?usage: test-deb.sh RELEASE}
[ "$(id -u)" -eq 0 ] || { echo "test-deb: run as root (debootstrap, chroot, mount)" >&2; exit 1; }
. scripts/chroot.sh

start=$(date +%s)
commit=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
  echo "test-deb: uncommitted changes are not packaged (building $commit)" >&2

build= target=
scripts=$(mktemp -d /tmp/machpay-chroot-scripts.XXXXXX)
cleanup() {
  local rc=$?
  chroot_kill
  chroot_remove_owned || rc=1
  rm -rf "$scripts"
  echo "test-deb: $release: exit $rc after $(( $(date +%s) - start )) s"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Build.
chroot_remove_stale
git archive "$commit" scripts/deps.sh scripts/pg_major.sh | tar -C "$scripts" -xf -
build=$(chroot_new "$release" "$scripts/scripts")
git clone -q --no-local "$repo" "$build/build/machpay_receiver"
git -C "$build/build/machpay_receiver" checkout -q --detach "$commit"
chroot_run "$build" bash -c 'cd /build/machpay_receiver && make deb'
rm -rf "dist/$release" && mkdir -p "dist/$release"
cp "$build"/build/machpay_receiver/dist/*.deb "dist/$release/"
deb=$(ls "dist/$release"/postgresql-*-machpay-receiver_*.deb | grep -v dbgsym)
echo "test-deb: built $deb after $(( $(date +%s) - start )) s"

# 2. Install into a fresh minimal system.
target=$(chroot_new "$release")
mkdir -p "$target/tmp/pkg"
cp "$deb" "$target/tmp/pkg/"
cp -r "$build/build/machpay_receiver/debian/tests" "$target/tmp/pkg/tests"
chroot_remove "$build"; build=
chroot_run "$target" bash -c '
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends ./tmp/pkg/'"$(basename "$deb")"' curl >/tmp/pkg/apt.log 2>&1 ||
    { tail -n 30 /tmp/pkg/apt.log; exit 1; }
  dpkg-query -W "postgresql-*-machpay-receiver" "postgresql-*-partman"'

# 3. Serve an event.
pgport=$(shuf -i 20000-60000 -n 1)
httpport=$(shuf -i 20000-60000 -n 1)
chroot_run "$target" env PGPORT="$pgport" HTTP_PORT="$httpport" bash -euo pipefail -c '
  pg=$(ls /usr/lib/postgresql)
  pg_createcluster -p "$PGPORT" "$pg" machpay >/dev/null
  printf "%s\n" "shared_preload_libraries = '"'machpay_receiver'"'" "listen_addresses = '"'127.0.0.1'"'" \
         "machpay.port = $HTTP_PORT" "machpay.sse_port = 0" >> "/etc/postgresql/$pg/machpay/postgresql.conf"
  pg_ctlcluster "$pg" machpay start
  trap "pg_ctlcluster $pg machpay stop -m fast" EXIT
  sql() { runuser -u postgres -- psql -X -q -tA -v ON_ERROR_STOP=1 -p "$PGPORT" -d postgres "$@"; }
  sql -c "SET client_min_messages = warning" -c "CREATE SCHEMA partman" \
      -c "CREATE EXTENSION pg_partman SCHEMA partman" -c "CREATE EXTENSION machpay_receiver"
  echo "PostgreSQL $pg: machpay_receiver $(sql -c "SELECT extversion FROM pg_extension WHERE extname = '"'machpay_receiver'"'") with pg_partman $(sql -c "SELECT extversion FROM pg_extension WHERE extname = '"'pg_partman'"'")"
  token=$(sql -c "SELECT machpay.create_ingest_key('"'*'"')")

  deadline=$(( $(date +%s) + 60 ))
  until curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz"; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "ingest server not ready in 60 s" >&2; tail -n 20 /var/log/postgresql/*.log >&2; exit 1; }
    sleep 0.5
  done
  now=$(date +%s)
  body="{\"source\": \"log\", \"entity_id\": \"Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT\", \"time\": $now,
         \"level\": \"warn\", \"message\": \"from the package test\", \"fields\": {\"release\": \"$(. /etc/os-release; echo $VERSION_CODENAME)\"}}"
  reply=$(curl -s -w " %{http_code}" "http://127.0.0.1:$HTTP_PORT/v1/ingest" -H "Authorization: Bearer $token" \
               -H "Content-Type: application/json" --data-binary "$body")
  echo "POST /v1/ingest -> $reply"
  case $reply in *"\"accepted\":1"*" 202") ;; *) echo "unexpected reply" >&2; exit 1 ;; esac

  deadline=$(( $(date +%s) + 30 ))
  until [ "$(sql -c "SELECT count(*) FROM machpay.debug_logs WHERE message = '"'from the package test'"'")" = 1 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "the event did not reach machpay.debug_logs in 30 s" >&2; exit 1; }
    sleep 0.2
  done
  echo "read back: $(sql -c "SELECT level, entity_id, fields FROM machpay.debug_logs WHERE message = '"'from the package test'"'")"
'

# 4. The package's own autopkgtest, in the same system.
chroot_run "$target" sh /tmp/pkg/tests/create-extension
echo "test-deb: $release package installs, serves an HTTP event and passes its autopkgtest"
