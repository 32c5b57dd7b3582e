#!/usr/bin/env bash
# Issue 2 benchmark: machpay.ingest() (jsonb in, rows out, one call per
# 100-event array) against psql COPY FROM STDIN (binary) of exactly the same
# rows into the same tables and indexes.  Median of 3 runs each.
# ingest is measured twice: one transaction per call (autocommit, as an
# application calls it: a WAL flush per call) and all calls in one
# transaction (like the single COPY).
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
{ echo "BEGIN;"; cat "$out/ingest.sql"; echo "COMMIT;"; } > "$out/ingest_txn.sql"
chmod a+r "$out"/*

now_s() { date +%s.%N; }
points() { bench_psql -tAc "SELECT count(*) FROM machpay.metric_points"; }
reset_points() { bench_psql -c "TRUNCATE machpay.metric_points; CHECKPOINT"; }

# Warm-up run: creates the series dictionary (steady state has it).
bench_psql -f "$out/ingest.sql"
rows=$(points)
bench_psql -c "COPY (SELECT time, series_id, value FROM machpay.metric_points) TO '$(realpath "$out")/points.bin' WITH (FORMAT binary)"

rate() { awk -v r="$rows" -v a="$1" -v b="$2" 'BEGIN{print r/(b-a)}'; }
time_ingest() {
  reset_points
  t0=$(now_s); bench_psql -f "$1"; t1=$(now_s)
  [ "$(points)" -eq "$rows" ] || { echo "ingest $1 stored $(points) rows, expected $rows" >&2; exit 1; }
  rate "$t0" "$t1"
}
ingest_rates=(); txn_rates=(); copy_rates=()
for run in 1 2 3; do
  ingest_rates+=("$(time_ingest "$out/ingest.sql")")
  txn_rates+=("$(time_ingest "$out/ingest_txn.sql")")
  reset_points
  t0=$(now_s); bench_psql -c "\\copy machpay.metric_points FROM '$(realpath "$out")/points.bin' WITH (FORMAT binary)"; t1=$(now_s)
  [ "$(points)" -eq "$rows" ] || { echo "copy run $run stored $(points) rows" >&2; exit 1; }
  copy_rates+=("$(rate "$t0" "$t1")")
done
mi=$(median3 "${ingest_rates[@]}"); mt=$(median3 "${txn_rates[@]}"); mc=$(median3 "${copy_rates[@]}")
printf 'events=%d rows=%d (100 events per ingest() call)\n' "$events" "$rows"
printf 'machpay.ingest(), a transaction per call: %8.0f rows/s  runs: %s\n' "$mi" "$(printf '%.0f ' "${ingest_rates[@]}")"
printf 'machpay.ingest(), one transaction:        %8.0f rows/s  runs: %s\n' "$mt" "$(printf '%.0f ' "${txn_rates[@]}")"
printf 'COPY (FORMAT binary), one transaction:    %8.0f rows/s  runs: %s\n' "$mc" "$(printf '%.0f ' "${copy_rates[@]}")"
printf 'ratio ingest/COPY: %.2f (per call)  %.2f (one transaction)\n' \
  "$(awk -v a="$mi" -v b="$mc" 'BEGIN{print a/b}')" "$(awk -v a="$mt" -v b="$mc" 'BEGIN{print a/b}')"
