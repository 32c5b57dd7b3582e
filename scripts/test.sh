#!/usr/bin/env bash
# `make test`: install what is missing, build with -Werror, install, then run
# the regression suite (temporary instance), the TAP tests and the fuzz
# corpus replay as the postgres OS user on a copy of the tree.
# Arguments name other make targets to run instead of check-all
# (check-regress, prove-tap, fuzz-replay, prove-some).  PROVE_TESTS picks TAP
# files for prove-some only: a PROVE_TESTS left in the environment never
# narrows the whole suite.  The run has a deadline (MACHPAY_TEST_TIMEOUT
# seconds, 25 minutes by default) so a stalled test fails instead of hanging;
# each TAP file has its own (test/lib/MachpayTest.pm).
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
prove_tests=()
for t in "${targets[@]}"; do
  [ "$t" = prove-some ] && prove_tests=(PROVE_TESTS="${PROVE_TESTS:?prove-some needs PROVE_TESTS}")
done
if [ -n "${PROVE_TESTS:-}" ] && [ ${#prove_tests[@]} -eq 0 ]; then
  echo "test: PROVE_TESTS is ignored here (every test runs); to run only some: scripts/test.sh prove-some" >&2
fi
deadline=${MACHPAY_TEST_TIMEOUT:-1500}
# Programs the tests use (chromium, nghttp) are required here: deps.sh
# installed them, so a missing one is a failure, not a skip.
as_user=(); [ "$(id -u)" -eq 0 ] && as_user=(runuser -u postgres --)
timeout --kill-after=30 "$deadline" \
  "${as_user[@]}" env -u PROVE_TESTS MACHPAY_REQUIRE_TOOLS=1 \
  MACHPAY_TEST_SMALLFS="$(mountpoint -q "$smallfs" && echo "$smallfs")" \
  make -C "$work" PG_CONFIG="$PG_CONFIG" "${prove_tests[@]}" "${targets[@]}" || status=$?
if [ $status -eq 124 ] || [ $status -eq 137 ]; then
  echo "test: the run passed its deadline of $deadline s (MACHPAY_TEST_TIMEOUT) and was stopped" >&2
fi
if [ $status -ne 0 ]; then
  for f in "$work"/regression.diffs "$work"/tmp_check/log/regress_log_*; do
    [ -f "$f" ] || continue
    echo "=== $f (last 80 lines)"; tail -n 80 "$f"
  done
  mkdir -p test/results && cp -r "$work"/regression.diffs "$work"/tmp_check test/results/ 2>/dev/null || true
fi
# Keep what tests leave for people to look at (console screenshots, and the
# TAP logs with the figures tests note: memory, recovery times).
mkdir -p test/results
find "$work/tmp_check" \( -name '*.png' -o -name 'regress_log_*' \) -exec cp {} test/results/ \; 2>/dev/null || true
exit $status
