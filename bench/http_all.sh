#!/usr/bin/env bash
# Every measurement of issue 3's Benchmark section in order, each script's
# table into $BENCH_OUT/results_<name>.txt and on stdout.  The knee found by
# http_overload.sh sets the rates of the latency (half), profile (knee) and
# RSS (80%) runs.
# Usage: bench/http_all.sh [PEAK_SECONDS=60] [STEP_SECONDS=20] [LAT_SECONDS=30] [RSS_SECONDS=600]
#   env: MULTS (of PEAK_GUESS for the sweep), PEAK_GUESS (events/s the overload sweep multiplies; default: the
#   h1 10-event acc_ev/s of http_peak.sh), WORKERS, BUFFER, BATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
peak_secs=${1:-60}
step_secs=${2:-20}
lat_secs=${3:-30}
rss_secs=${4:-600}
out=${BENCH_OUT:-bench/out}; mkdir -p "$out"
run() { local name=$1; shift; echo "== $name: $* ($(date -u +%T))"; bash "$@" | tee "$out/results_$name.txt"; }

run peak bench/http_peak.sh "$peak_secs"
guess=${PEAK_GUESS:-$(awk '$1 == "h1" && $2 == 10 { print $5 }' "$out/results_peak.txt")}
run overload bench/http_overload.sh "$guess" "$step_secs" 10 h1 "${MULTS:-0.5 0.75 1 1.25 1.5 2 3 4}"
knee=$(sed -n 's/^# knee: accepted events\/s peak at \([0-9]*\) .*/\1/p' "$out/results_overload.txt")
run latency bench/http_latency.sh "$((knee / 2))" "$lat_secs" 10
run profile bench/http_profile.sh "$knee" 20 10 h1
run rss bench/http_rss.sh "$((knee * 8 / 10))" "$rss_secs" 10 10
