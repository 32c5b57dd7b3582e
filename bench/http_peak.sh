#!/usr/bin/env bash
# Peak ingest throughput against psql COPY of the same rows (issue 3).
# h2load, 32 connections, HTTP/1.1 and HTTP/2 (prior knowledge), gateway
# bodies of 1, 10 and 100 events (28 rows each), default durability.  Per
# run: metric_points starts empty; accepted events/s from the 202 answers;
# landed rows/s = rows committed in metric_points during the run (count(*)
# when h2load stops) / seconds; events/s landed = that / rows per event;
# p50/p99 of the 202 answers; 429 share; CPU per process class in cores
# (CPU seconds / wall seconds, from /proc/<pid>/stat).  Then machpay.flush()
# and a check that every accepted row landed.
# COPY side by side: the rows that landed (at most COPY_MAX) are exported
# with COPY TO (FORMAT binary), the table is truncated and checkpointed, and
# `psql -c "COPY machpay.metric_points FROM STDIN (FORMAT binary)" < file`
# is timed; ratio = landed rows/s / COPY rows/s (bar >= 1.0).
# Usage: bench/http_peak.sh [SECONDS=60] [CONNECTIONS=32] [SIZES="1 10 100"] [PROTOS="h1 h2"]
#   env: WORKERS, BUFFER, BATCH (see http_lib.sh), COPY_MAX (default 5000000),
#   RPS (per-connection rate limit, default 0 = unlimited).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
conns=${2:-32}
sizes=${3:-"1 10 100"}
protos=${4:-"h1 h2"}
COPY_MAX=${COPY_MAX:-5000000}
RPS=${RPS:-0}
. bench/http_lib.sh
# shellcheck disable=SC2086
http_setup $sizes
copyfile="$BENCH_DIR/points.bin"

echo "# http_peak: ${secs}s, $conns connections, rps/conn=$RPS, http_workers=$WORKERS buffer_size=$BUFFER batch_size=$BATCH, $(nproc) cores, $(date -u +%FT%TZ)"
printf '%-3s %4s %8s %6s %9s %9s %11s %8s %6s %7s %7s %6s %6s %6s %6s %9s %6s\n' \
  prot ev/r req/s 429% acc_ev/s land_ev/s land_rows/s rows/ev p50ms p99ms \
  c_ingst c_flsh c_pgoth c_clnt ok copy_rows/s ratio
for proto in $protos; do
  for n in $sizes; do
    reset_points
    log="$out/peak_${proto}_$n.log"
    cpu_snapshot > "$out/cpu.a"
    t0=$(date +%s.%N)
    h2load_start "$proto" "$n" "$secs" "$conns" "$RPS" "$log"
    wait "$h2pid" || true
    t1=$(date +%s.%N)
    cpu_snapshot > "$out/cpu.b"
    landed=$(points)
    read -r ci cf co cc <<< "$(cpu_diff "$out/cpu.a" "$out/cpu.b")"
    flush_all
    total=$(points)
    read -r n202 n429 nother p50 p99 <<< "$(log_stats "$log")"
    wall=$(calc "$t1 - $t0" 3)
    reqs=$((n202 + n429 + nother))
    rpe=$(calc "$total / ($n202 * $n)" 2)
    # h2load does not log the requests in flight when it stops (at most one
    # per connection), but the server may have accepted them.
    if [ "$total" -ge $((n202 * n * rows_per_event)) ] && [ "$total" -le $(((n202 + conns) * n * rows_per_event)) ]; then ok=yes; else ok=NO; fi
    # COPY the same rows back.
    k=$(( landed < COPY_MAX ? landed : COPY_MAX ))
    bench_psql -c "COPY (SELECT * FROM machpay.metric_points LIMIT $k) TO '$copyfile' (FORMAT binary)"
    reset_points
    c0=$(date +%s.%N)
    as_postgres "$PG_BINDIR/psql" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d postgres -X -q \
      -v ON_ERROR_STOP=1 -c "COPY machpay.metric_points FROM STDIN (FORMAT binary)" < "$copyfile"
    c1=$(date +%s.%N)
    copied=$(points)
    [ "$copied" = "$k" ] || echo "COPY stored $copied rows, expected $k" >&2
    copy_rate=$(calc "$k / ($c1 - $c0)")
    land_rate=$(calc "$landed / $secs")
    printf '%-3s %4d %8.0f %6.1f %9.0f %9.0f %11.0f %8s %6s %7s %7s %6s %6s %6s %6s %9s %6s\n' \
      "$proto" "$n" "$(calc "$reqs / $secs")" "$(calc "100 * $n429 / ($reqs > 0 ? $reqs : 1)" 1)" \
      "$(calc "$n202 * $n / $secs")" "$(calc "$land_rate / $rows_per_event")" "$land_rate" "$rpe" "$p50" "$p99" \
      "$(calc "$ci / $wall" 2)" "$(calc "$cf / $wall" 2)" "$(calc "$co / $wall" 2)" "$(calc "$cc / $wall" 2)" \
      "$ok" "$copy_rate" "$(calc "$land_rate / $copy_rate" 2)"
    rm -f "$copyfile"
  done
done
echo "# c_* = cores used (CPU s / wall s) by: ingest workers, flusher, other postgres processes, h2load."
echo "# ok = every accepted event's $rows_per_event rows landed after machpay.flush() (up to one unlogged request per connection more); COPY of min(landed, $COPY_MAX) rows."
