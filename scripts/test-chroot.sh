#!/usr/bin/env bash
# `make test-debian13` / `make test-debian12`: the whole `make test` inside a
# throwaway chroot of Debian RELEASE (trixie, bookworm), from a clean clone
# of HEAD (uncommitted changes are not tested), as root in the chroot.
# The first run of a release debootstraps it and installs deps.sh's
# packages, cached under /var/tmp/machpay-chroot (scripts/chroot.sh); later
# runs unpack the cache.  The chroot, its mounts and every process started
# in it are gone when this script ends, whatever its outcome; failed runs
# leave their logs in test/results/RELEASE/.
# Usage: scripts/test-chroot.sh RELEASE [make target...]   (default: test)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
release=${1:?usage: test-chroot.sh RELEASE [make target...]}
shift
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(test)
[ "$(id -u)" -eq 0 ] || { echo "test-chroot: run as root (debootstrap, chroot, mount)" >&2; exit 1; }
. scripts/chroot.sh

start=$(date +%s)
commit=$(git rev-parse HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] ||
  echo "test-chroot: uncommitted changes are not tested (testing $commit)" >&2

root=
scripts=$(mktemp -d /tmp/machpay-chroot-scripts.XXXXXX)
cleanup() {
  local rc=$?
  chroot_kill
  chroot_remove_owned || rc=1
  rm -rf "$scripts"
  echo "test-chroot: $release ${targets[*]}: exit $rc after $(( $(date +%s) - start )) s"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The packages are those of the commit under test.
chroot_remove_stale
git archive "$commit" scripts/deps.sh scripts/pg_major.sh | tar -C "$scripts" -xf -
root=$(chroot_new "$release" "$scripts/scripts")
echo "test-chroot: $release ready after $(( $(date +%s) - start )) s ($root)"

git clone -q --no-local "$repo" "$root/build/machpay_receiver"
git -C "$root/build/machpay_receiver" checkout -q --detach "$commit"

status=0
# MACHPAY_TEST_MATRIX=0: the suite in the chroot does not start a matrix of its own.
chroot_run "$root" bash -c 'cd /build/machpay_receiver && MACHPAY_TEST_MATRIX=0 make "$@"' make "${targets[@]}" || status=$?
if [ $status -ne 0 ] && [ -d "$root/build/machpay_receiver/test/results" ]; then
  rm -rf "test/results/$release"
  mkdir -p "test/results/$release"
  cp -r "$root/build/machpay_receiver/test/results/." "test/results/$release/"
  echo "test-chroot: logs of the failed run in test/results/$release/"
fi
exit $status
