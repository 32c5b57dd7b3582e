#!/usr/bin/env bash
# The release half of `make test`: after the suite has passed on this
# machine's Debian release, the same whole suite runs in a throwaway chroot
# of the other supported release (Debian 13 from Debian 12, and the other
# way round), and that release's package is built, installed with apt into
# a fresh chroot and serves an event (scripts/test-chroot.sh,
# scripts/test-deb.sh; bases cached under /var/tmp/machpay-chroot).
# MACHPAY_TEST_MATRIX=0 skips it; the suite inside a chroot sets that, so
# the matrix never nests.  Tests the committed HEAD.
# `test-matrix.sh prepare` (make test runs it first) makes the other
# release's cached chroot layers in the background, so debootstrap and the
# packages download and install while the host suite runs; the matrix
# waits for it (scripts/chroot.sh, chroot_cached).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${MACHPAY_TEST_MATRIX:-1}" = 0 ]; then
  echo "test-matrix: skipped (MACHPAY_TEST_MATRIX=0)"
  exit 0
fi
host=$(. /etc/os-release; echo "${VERSION_CODENAME:-}")
case $host in
  trixie) other=bookworm ;;
  *) other=trixie ;;
esac

if [ "${1:-}" = prepare ]; then
  [ "$(id -u)" -eq 0 ] || exit 0      # the matrix itself says why it cannot run
  . scripts/chroot.sh
  mkdir -p "$MACHPAY_CHROOT_CACHE"
  log="$MACHPAY_CHROOT_CACHE/prepare-$other.log"
  scripts=$(mktemp -d /tmp/machpay-chroot-scripts.XXXXXX)
  git archive HEAD scripts/deps.sh scripts/pg_major.sh | tar -C "$scripts" -xf -
  # Detached from make's terminal and process group; removes its own chroot.
  setsid bash -c '. scripts/chroot.sh; trap "chroot_remove_owned; rm -rf \"$2\"" EXIT
    chroot_cached "$1" "$2/scripts" >/dev/null' prepare "$other" "$scripts" > "$log" 2>&1 < /dev/null &
  echo "test-matrix: preparing the $other chroot in the background (log: $log)"
  exit 0
fi
bash scripts/test-chroot.sh "$other"
bash scripts/test-deb.sh "$other"
