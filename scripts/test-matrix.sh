#!/usr/bin/env bash
# The release half of `make test`: after the suite has passed on this
# machine's Debian release, the same whole suite runs in a throwaway chroot
# of the other supported release (Debian 13 from Debian 12, and the other
# way round), and that release's package is built, installed with apt into
# a fresh chroot and serves an event (scripts/test-chroot.sh,
# scripts/test-deb.sh; bases cached under /var/tmp/machpay-chroot).
# MACHPAY_TEST_MATRIX=0 skips it; the suite inside a chroot sets that, so
# the matrix never nests.  Tests the committed HEAD.
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
bash scripts/test-chroot.sh "$other"
bash scripts/test-deb.sh "$other"
