#!/usr/bin/env bash
# Issue 2 benchmark: machpay.ingest() (jsonb in, rows out, one call per
# 100-event array) against psql COPY FROM STDIN (binary) of exactly the same
# rows into the same tables and indexes.  Median of 3 runs each.
# Usage: bench/ingest_vs_copy.sh [EVENTS]     (default 40000 events)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
events=${1:-40000}
out=${BENCH_OUT:-bench/out}; mkdir -p "$out"; chmod a+rwx "$out"
bench_start_cluster
trap bench_stop_cluster EXIT

perl bench/gen_events.pl "$events" 200 200 100 > "$out/events.jsonl"
# One SELECT per line of 100 events, the way an application would call it.
awk '{ printf "SELECT machpay.ingest($j$%s$j$::jsonb) \\g /dev/null\n", $0 }' "$out/events.jsonl" > "$out/ingest.sql"
chmod a+r "$out"/*

now_s() { date +%s.%N; }
points() { bench_psql -tAc "SELECT count(*) FROM machpay.metric_points"; }
reset_points() { bench_psql -c "TRUNCATE machpay.metric_points; CHECKPOINT"; }

# Warm-up run: creates the series dictionary (steady state has it).
bench_psql -f "$out/ingest.sql"
rows=$(points)
bench_psql -c "COPY (SELECT time, series_id, value FROM machpay.metric_points) TO '$(realpath "$out")/points.bin' WITH (FORMAT binary)"

ingest_rates=(); copy_rates=()
for run in 1 2 3; do
  reset_points
  t0=$(now_s); bench_psql -f "$out/ingest.sql"; t1=$(now_s)
  [ "$(points)" -eq "$rows" ] || { echo "ingest run $run stored $(points) rows, expected $rows" >&2; exit 1; }
  ingest_rates+=("$(awk -v r="$rows" -v a="$t0" -v b="$t1" 'BEGIN{print r/(b-a)}')")
  reset_points
  t0=$(now_s); bench_psql -c "\\copy machpay.metric_points FROM '$(realpath "$out")/points.bin' WITH (FORMAT binary)"; t1=$(now_s)
  [ "$(points)" -eq "$rows" ] || { echo "copy run $run stored $(points) rows" >&2; exit 1; }
  copy_rates+=("$(awk -v r="$rows" -v a="$t0" -v b="$t1" 'BEGIN{print r/(b-a)}')")
done
mi=$(median3 "${ingest_rates[@]}"); mc=$(median3 "${copy_rates[@]}")
printf 'events=%d rows=%d\n' "$events" "$rows"
printf 'machpay.ingest(): %8.0f rows/s   runs: %s\n' "$mi" "$(printf '%.0f ' "${ingest_rates[@]}")"
printf 'COPY binary:      %8.0f rows/s   runs: %s\n' "$mc" "$(printf '%.0f ' "${copy_rates[@]}")"
printf 'ratio ingest/COPY: %.2f\n' "$(awk -v a="$mi" -v b="$mc" 'BEGIN{print a/b}')"
