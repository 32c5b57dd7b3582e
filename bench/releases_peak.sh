#!/usr/bin/env bash
# http_peak on both supported releases in the same session: PostgreSQL 15
# (Debian 12, bookworm) and 17 (Debian 13, trixie), each in a chroot of its
# release (scripts/chroot.sh, with the packages of deps.sh) where HEAD is
# built and installed, so neither runs on the host and both run the same
# way.  Runs alternate (bookworm, trixie, bookworm, ...) so a change of
# load on the machine falls on both; each run holds
# /tmp/machpay-bench.lock while it measures, and prints the load average
# before and after.
# Usage (as root): bench/releases_peak.sh [ROUNDS=2] [SECONDS=30] [SIZES=10] [PROTOS="h1 h2"]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
secs=${2:-30}
sizes=${3:-10}
protos=${4:-"h1 h2"}
[ "$(id -u)" -eq 0 ] || { echo "releases_peak: run as root (chroot, mount)" >&2; exit 1; }
. scripts/chroot.sh

scripts=$(mktemp -d /tmp/machpay-chroot-scripts.XXXXXX)
cleanup() {
  chroot_kill
  chroot_remove_owned || true
  rm -rf "$scripts"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
git archive HEAD scripts/deps.sh scripts/pg_major.sh | tar -C "$scripts" -xf -

declare -A root
for release in bookworm trixie; do
  root[$release]=$(chroot_new "$release" "$scripts/scripts")
  mkdir -p "${root[$release]}/src"
  git archive HEAD | tar -C "${root[$release]}/src" -xf -
  chroot_run "${root[$release]}" nice -n 10 bash -c 'cd /src && make -j"$(nproc)" >/tmp/build.log 2>&1 && make install >/tmp/install.log 2>&1' ||
    { echo "releases_peak: build on $release failed" >&2; exit 1; }
done

for ((i = 1; i <= rounds; i++)); do
  for release in bookworm trixie; do
    port=$(shuf -i 20000-59000 -n 1)
    echo "## round $i, $release, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    flock /tmp/machpay-bench.lock bash -c '. scripts/chroot.sh
      chroot_run "$1" env BENCH_PORT="$2" BENCH_HTTP_PORT=$(($2 + 1)) BENCH_SSE_PORT=$(($2 + 2)) \
        bash -c "cd /src && bash bench/http_peak.sh $3 32 \"$4\" \"$5\""' \
      releases_peak "${root[$release]}" "$port" "$secs" "$sizes" "$protos"
    echo "## load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
