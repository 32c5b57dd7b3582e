#!/usr/bin/env bash
# `make test`: install what is missing, build with -Werror, install, then run
# the regression suite (temporary instance), the TAP tests and the fuzz
# corpus replay as the postgres OS user on a copy of the tree.
# Arguments name other make targets to run instead of check-all
# (check-regress, prove-tap, fuzz-replay); PROVE_TESTS picks TAP files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
. scripts/common.sh
build_and_install

work=$(mktemp -d /tmp/machpay-test.XXXXXX)
smallfs="$work/smallfs"
trap 'umount "$smallfs" 2>/dev/null; rm -rf "$work"' EXIT
# A copy the postgres user can write to: the checkout may sit in /root.
tar --exclude=./.git --exclude=./.run -cf - . | tar -C "$work" -xf -
# The disk-full test (test/t/060_fault_disk_full.pl) puts tables on a small
# file system it can fill; mounting needs root, so it is prepared here.
mkdir -p "$smallfs"
if [ "$(id -u)" -eq 0 ]; then
  mount -t tmpfs -o size=48m,mode=0700 machpay-test-smallfs "$smallfs"
fi
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$work"
chmod 755 "$work"

status=0
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(check-all)
as_postgres env ${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"} \
  MACHPAY_TEST_SMALLFS="$(mountpoint -q "$smallfs" && echo "$smallfs")" \
  make -C "$work" PG_CONFIG="$PG_CONFIG" "${targets[@]}" || status=$?
if [ $status -ne 0 ]; then
  for f in "$work"/regression.diffs "$work"/tmp_check/log/regress_log_*; do
    [ -f "$f" ] || continue
    echo "=== $f (last 80 lines)"; tail -n 80 "$f"
  done
  mkdir -p test/results && cp -r "$work"/regression.diffs "$work"/tmp_check test/results/ 2>/dev/null || true
fi
# Keep what tests leave for people to look at (console screenshots).
mkdir -p test/results
find "$work/tmp_check" -name '*.png' -exec cp {} test/results/ \; 2>/dev/null || true
exit $status
