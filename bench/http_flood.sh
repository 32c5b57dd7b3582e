#!/usr/bin/env bash
# Open-loop flood (issue 8): bench/flood_load.c offers MULT x KNEE events/s
# (default 4x) in bodies of EVENTS events, over HTTP/1.1 and over HTTP/2,
# requests due at fixed intervals whatever the server does (latency from
# the due time).  KNEE is the accepted events/s at the knee, from
# bench/http_overload.sh ("# knee: accepted events/s peak at N"); "auto"
# measures it first with an unlimited 32-connection h2load run, as
# http_overload.sh does.
# Per protocol, three runs on an emptied table:
#   1. calibration at CAL_MULT x KNEE (default 0.5: nothing refused):
#      the ingest workers' CPU per 202;
#   2. the flood: accepted events/s (202s) against the knee (bar >= 90%),
#      the 429 share, rows landed, p50/p99 of the 202s from their due time,
#      cores used by ingest / flusher / the client, and the ingest CPU per
#      refused request (bar < 10 us), twice: raw = all ingest CPU / refused
#      (an upper bound), net = b of ingest CPU = a * n202 + b * refused
#      solved over the two runs (with nothing refused in the calibration:
#      (ingest CPU - n202 x CPU per 202 of the calibration) / refused;
#      n/a when the fit comes out negative: a 202 costs less under load);
#   3. the same flood with an unknown key: every request refused (401), so
#      ingest CPU / requests is the cost of a refusal alone (bar < 10 us).
# CPU = utime + stime from /proc/<pid>/stat before and after the window;
# the client's CPU comes from its own getrusage over its whole run.
# Usage: bench/http_flood.sh [KNEE=auto] [SECONDS=20] [EVENTS=10]
#        [PROTOS="h1 h2"] [MULT=4] [CONNS=64]
#   env: WARMUP (seconds, default 5), CAL_MULT (0.5), H2_CONNS (8: HTTP/2
#        connections, up to 128 streams each), WORKERS, BUFFER, BATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
knee=${1:-auto}
secs=${2:-20}
n=${3:-10}
protos=${4:-"h1 h2"}
mult=${5:-4}
conns=${6:-64}
WARMUP=${WARMUP:-5}
CAL_MULT=${CAL_MULT:-0.5}
H2_CONNS=${H2_CONNS:-8}
. bench/http_lib.sh
client="$out/flood_load"
cc -O2 -Wall -o "$client" bench/flood_load.c -lnghttp2 ||
  { echo "flood_load needs libnghttp2-dev" >&2; exit 1; }
http_setup "$n"

if [ "$knee" = auto ]; then
  flush_all; reset_points >/dev/null
  h2load_start h1 "$n" 15 32 0 "$out/flood_knee.log"
  wait "$h2pid" || true
  read -r n202 _ <<< "$(log_stats "$out/flood_knee.log")"
  knee=$(calc "$n202 * $n / 15")
  echo "# knee measured: $knee accepted events/s (h2load, 32 connections, unlimited, 15 s)"
fi

# run PROTO OFFERED_EVENTS_PER_S LOG: one open-loop run; sets the globals
# t0 t1 (the window, us) w n202 n429 nother p50 p99 ci cf cc land (rows
# landed in the window).
run() {
  local proto=$1 offered=$2 log=$3 key=${4:-$token} c=$conns rate l0 l1 pid summary
  [ "$proto" = h2 ] && c=$H2_CONNS
  rate=$(calc "$offered / $n" 3)
  flush_all; reset_points >/dev/null
  "$client" "$proto" "$BENCH_HTTP_PORT" "$key" "$out/body_$n.json" "$rate" \
    "$((secs + WARMUP + 2))" "$c" "$log" > "$log.txt" &
  pid=$!
  sleep "$WARMUP"
  t0=$(now_us); l0=$(points); cpu_snapshot > "$out/cpu.a"
  sleep "$secs"
  t1=$(now_us); l1=$(points); cpu_snapshot > "$out/cpu.b"
  wait "$pid" || true
  summary=$(cat "$log.txt")
  echo "#   $summary" >&2
  read -r ci cf _ _ <<< "$(cpu_diff "$out/cpu.a" "$out/cpu.b")"
  read -r n202 n429 nother p50 p99 <<< "$(LOG_FROM_US=$t0 LOG_TO_US=$t1 log_stats "$log")"
  w=$(calc "($t1 - $t0) / 1000000" 3)
  land=$(calc "($l1 - $l0) / $w")
  # Client cores: its CPU over its own run (warm-up, window, drain).
  cc=$(echo "$summary" | awk '{ for (i = 1; i <= NF; i++) if ($i == "in") t = $(i + 1); c = $(NF - 1) }
    END { printf "%.2f", (t > 0) ? c / t : 0 }')
}

echo "# http_flood: open loop at ${mult}x the knee ($knee accepted events/s), $n events/request, ${secs}s (+${WARMUP}s warm-up) per run, h1: $conns connections, h2: $H2_CONNS connections, http_workers=$WORKERS buffer_size=$BUFFER batch_size=$BATCH, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
printf '%-5s %9s %9s %7s %6s %6s %11s %7s %7s %7s %7s %7s %7s %9s %9s %7s\n' \
  prot off_ev/s acc_ev/s of_knee 429% other% land_rows/s p50ms p99ms c_ingst c_flsh c_clnt \
  us/202 us/ref_raw us/ref_net verdict
for proto in $protos; do
  # Calibration: CPU per 202 with (next to) nothing refused.
  run "$proto" "$(calc "$CAL_MULT * $knee")" "$out/flood_${proto}_cal.log"
  us202=$(calc "1e6 * $ci / ($n202 > 0 ? $n202 : 1)" 1)
  cal_ci=$ci; cal_202=$n202; cal_ref=$((n429 + nother))
  printf '%-5s %9.0f %9.0f %6.0f%% %6.1f %6.1f %11.0f %7s %7s %7.2f %7.2f %7.2f %7s %9s %9s %7s\n' \
    "$proto" "$(calc "($n202 + $n429 + $nother) * $n / $w")" "$(calc "$n202 * $n / $w")" \
    "$(calc "100 * $n202 * $n / $w / $knee")" "$(calc "100 * $n429 / ($n202 + $n429 + $nother)" 1)" \
    "$(calc "100 * $nother / ($n202 + $n429 + $nother)" 1)" "$land" "$p50" "$p99" \
    "$(calc "$ci / $w" 2)" "$(calc "$cf / $w" 2)" "$cc" "$us202" - - "(cal)"
  # The flood.
  run "$proto" "$(calc "$mult * $knee")" "$out/flood_${proto}.log"
  total=$((n202 + n429 + nother))
  refused=$((n429 + nother))
  acc=$(calc "$n202 * $n / $w")
  raw=$(calc "1e6 * $ci / ($refused > 0 ? $refused : 1)" 1)
  # Two runs, two unknowns: ingest CPU = a * n202 + b * refused in both.
  net=$(awk -v c1="$cal_ci" -v a1="$cal_202" -v r1="$cal_ref" -v c2="$ci" -v a2="$n202" -v r2="$refused" \
    -v u="$us202" 'BEGIN { det = a1 * r2 - a2 * r1
      if (r1 == 0 || det == 0) printf "%.1f", (1e6 * c2 - a2 * u) / (r2 > 0 ? r2 : 1)
      else printf "%.1f", 1e6 * (a1 * c2 - a2 * c1) / det }')
  verdict=$(awk -v a="$acc" -v k="$knee" 'BEGIN { print (a >= 0.9 * k) ? "acc_ok" : "acc_LOW" }')
  case "$net" in -*) net="n/a" ;; esac
  printf '%-5s %9.0f %9.0f %6.0f%% %6.1f %6.1f %11.0f %7s %7s %7.2f %7.2f %7.2f %7s %9s %9s %7s\n' \
    "$proto" "$(calc "$total * $n / $w")" "$acc" "$(calc "100 * $acc / $knee")" \
    "$(calc "100 * $n429 / ($total > 0 ? $total : 1)" 1)" "$(calc "100 * $nother / ($total > 0 ? $total : 1)" 1)" \
    "$land" "$p50" "$p99" "$(calc "$ci / $w" 2)" "$(calc "$cf / $w" 2)" "$cc" "$us202" "$raw" "$net" "$verdict"
  # Everything refused: the same offered rate with a key the server does
  # not know, so the ingest CPU is the cost of refusing alone.
  run "$proto" "$(calc "$mult * $knee")" "$out/flood_${proto}_nokey.log" not-a-key
  total=$((n202 + n429 + nother))
  not401=$(awk -v f="$t0" -v t="$t1" '$1 >= f && $1 <= t && $2 != 401' "$out/flood_${proto}_nokey.log" | wc -l)
  per=$(calc "1e6 * $ci / ($total > 0 ? $total : 1)" 1)
  printf '%-5s %9.0f %9.0f %6.0f%% %6.1f %6.1f %11.0f %7s %7s %7.2f %7.2f %7.2f %7s %9s %9s %7s\n' \
    "$proto" "$(calc "$total * $n / $w")" 0 0 0 "$(calc "100 * $not401 / ($total > 0 ? $total : 1)" 1)" \
    "$land" - - "$(calc "$ci / $w" 2)" "$(calc "$cf / $w" 2)" "$cc" - "$per" "$per" \
    "$(awk -v r="$per" 'BEGIN { print (r < 10) ? "cpu_ok" : "cpu_HIGH" }'),401"
done
echo "# rows per protocol: (cal) = calibration at ${CAL_MULT}x; the flood at ${mult}x; ',401' = the same flood with an unknown key (every request refused: other% = not 401, us/ref = ingest CPU / requests; bar < 10 us)."
echo "# of_knee = accepted events/s (202s) / knee (bar >= 90%); other% = answers neither 202 nor 429 (0 = connection lost, -1 = never sent: the client could not keep up)."
echo "# us/202 = ingest CPU per 202 in the calibration run at ${CAL_MULT}x; us/ref_raw = ingest CPU / refused requests; us/ref_net = b of ingest CPU = a * n202 + b * refused over both runs (bar < 10 us)."
echo "# p50/p99 of the 202s measured from their due time; c_* = cores: ingest workers, flusher, the client (its getrusage / its run time)."
