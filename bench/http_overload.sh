#!/usr/bin/env bash
# Offered-rate sweep: the knee and overload (issue 3).  h2load with
# --rps per connection offers MULT x PEAK events/s for each MULT; after a
# WARMUP (the buffer fills, the flusher settles) the requests started in
# the window are counted: offered and accepted events/s (202 answers), the
# 429 share, rows landed in metric_points during the window, p99 of the 202s,
# CPU per process class.  Knee = the offered rate where accepted events/s
# peak; bar: accepted events/s at 3x stay >= 90% of that peak.
# 429 cost: the ingest workers' CPU is fitted over all steps as
#   cpu_ingest = a * n202 + b * n429  (least squares, no intercept)
# and a, b are printed in microseconds per request.
# PEAK (events/s) is measured first with an unlimited 32-connection run
# (whose accepted events/s is the flusher-bound rate) unless given.
# Usage: bench/http_overload.sh [PEAK=auto] [SECONDS=20] [EVENTS=10] [PROTO=h1]
#        [MULTS="0.5 0.75 1 1.25 1.5 2 3 4"] [CONNECTIONS=64]
#   env: WARMUP (seconds, default 5), WORKERS, BUFFER, BATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
peak=${1:-auto}
secs=${2:-20}
n=${3:-10}
proto=${4:-h1}
mults=${5:-"0.5 0.75 1 1.25 1.5 2 3 4"}
conns=${6:-64}
WARMUP=${WARMUP:-5}
. bench/http_lib.sh
http_setup "$n"

# One step: offered events/s (0 = unlimited, 32 connections); prints the row
# and appends "n202 n429 cpu_ingest" to $out/fit.
step() {
  local offered=$1 c=$conns rps log t0 t1 a b ci cf co cc n202 n429 nother p50 p99 l0 l1 w reqs
  if [ "$offered" = 0 ]; then c=32; rps=0; else rps=$(calc "$offered / $n / $c" 3); fi
  log="$out/overload_$offered.log"
  flush_all; reset_points
  h2load_start "$proto" "$n" "$((secs + WARMUP))" "$c" "$rps" "$log"
  sleep "$WARMUP"
  t0=$(now_us); l0=$(points); cpu_snapshot > "$out/cpu.a"
  wait "$h2pid" || true
  t1=$(now_us); l1=$(points); cpu_snapshot > "$out/cpu.b"
  read -r ci cf co cc <<< "$(cpu_diff "$out/cpu.a" "$out/cpu.b")"
  read -r n202 n429 nother p50 p99 <<< "$(LOG_FROM_US=$t0 LOG_TO_US=$t1 log_stats "$log")"
  w=$(calc "($t1 - $t0) / 1000000" 3)
  reqs=$((n202 + n429 + nother))
  acc=$(calc "$n202 * $n / $w")
  printf '%10s %6s %9.0f %9.0f %6.1f %11.0f %6s %7.2f %7.2f %7.2f %7.2f %8s %8s\n' \
    "$([ "$offered" = 0 ] && echo unlimited || echo "$offered")" "$rps" "$(calc "$reqs * $n / $w")" "$acc" \
    "$(calc "100 * $n429 / ($reqs > 0 ? $reqs : 1)" 1)" "$(calc "($l1 - $l0) / $w")" "$p99" \
    "$(calc "$ci / $w" 2)" "$(calc "$cf / $w" 2)" "$(calc "$co / $w" 2)" "$(calc "$cc / $w" 2)" \
    "$(calc "1e6 * $ci / ($n202 > 0 ? $n202 : 1)")" "$(calc "1e6 * $ci / ($reqs > 0 ? $reqs : 1)")"
  echo "$n202 $n429 $ci $offered $acc" >> "$out/fit"
}

: > "$out/fit"
echo "# http_overload: $proto, $n events/request, ${secs}s (+${WARMUP}s warm-up) per step, $conns connections, http_workers=$WORKERS buffer_size=$BUFFER batch_size=$BATCH, $(nproc) cores, $(date -u +%FT%TZ)"
printf '%10s %6s %9s %9s %6s %11s %6s %7s %7s %7s %7s %8s %8s\n' \
  offered rps/c off_ev/s acc_ev/s 429% land_rows/s p99ms c_ingst c_flsh c_pgoth c_clnt us/202 us/req
if [ "$peak" = auto ]; then
  step 0
  peak=$(tail -1 "$out/fit" | awk '{ print $5 }')
fi
for m in $mults; do
  step "$(calc "$m * $peak")"
done
# The unlimited row is kept out of the knee (its offered rate is unknown).
awk '
  { a += $1 * $1; b += $1 * $2; d += $2 * $2; e += $1 * $3; f += $2 * $3 }
  $4 > 0 && $5 > best { best = $5; knee = $4 }
  $4 > 0 { last = $5; lastoff = $4 }
  END {
    det = a * d - b * b
    if (det != 0) printf "# ingest CPU fit: %.1f us per 202, %.1f us per 429\n", 1e6 * (e * d - b * f) / det, 1e6 * (a * f - b * e) / det
    printf "# knee: accepted events/s peak at %.0f with %.0f offered\n", best, knee
    printf "# highest offered %.0f events/s = %.2fx the peak accepted: accepted %.0f = %.0f%% of the peak (bar >= 90%% at 3x)\n", lastoff, lastoff / best, last, 100 * last / best
  }' "$out/fit"
echo "# c_* = cores used: ingest workers, flusher, other postgres processes, h2load; us/202 = ingest CPU per 202, us/req = per request."
