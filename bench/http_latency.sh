#!/usr/bin/env bash
# Latency bars of issue 3.
#  1. telemetry: gateway bodies of EVENTS events at HALF events/s, open loop
#     (bench/intent_load.c with BODY_FILE, 32 connections): p50/p99/p99.9/max
#     of the 202s.  Bar: p99 <= 10 ms at half the peak rate.
#     (h2load --rps adds its own delay: on an idle server it reports a p50
#     near 10 ms where this client sees 0.2 ms; H2LOAD_TOO=1 adds that row.)
#  2. payment intents at 1,000 intents/s, one intent per request, each with
#     its own nonce (bench/intent_load.c, open loop, 32 connections): p50/p99
#     of the 200s (answered after commit), and the rows in payment_intents.
#     Bar: p99 <= 25 ms.
#  3. both at once (intents at 1,000/s while telemetry runs at HALF).
# Usage: bench/http_latency.sh HALF_EVENTS_PER_S [SECONDS=30] [EVENTS=10] [INTENT_RATE=1000]
#   env: WORKERS, BUFFER, BATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
half=${1:?usage: http_latency.sh HALF_EVENTS_PER_S [SECONDS] [EVENTS] [INTENT_RATE]}
secs=${2:-30}
n=${3:-10}
proto=h1  # intent_load speaks HTTP/1.1
irate=${4:-1000}
conns=32
. bench/http_lib.sh
cc -O2 -o "$out/intent_load" bench/intent_load.c
http_setup "$n"

pcts() {  # LOG -> "count p50 p99 p99.9 max" of the 200/202 answers, statuses
  awk '$2 == 200 || $2 == 202 { print $3 }' "$1" | sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { printf "0 - - - -"; exit }
    split("0.5 0.99 0.999", q, " "); printf "%d", NR
    for (j = 1; j <= 3; j++) { i = int(NR * q[j]); if (i < 1) i = 1; printf " %.2f", v[i] / 1000 }
    printf " %.2f", v[NR] / 1000 }'
  printf ' %s\n' "$(awk '{ print $2 }' "$1" | sort | uniq -c | awk '{ printf "%sx%s,", $2, $1 }')"
}
row() {  # what rate LOG
  read -r cnt p50 p99 p999 max st <<< "$(pcts "$3")"
  printf '%-22s %9s %8.0f %7s %7s %7s %7s %s\n' "$1" "$2" "$(calc "$cnt / $secs")" "$p50" "$p99" "$p999" "$max" "$st"
}
intents() {
  "$out/intent_load" "$BENCH_HTTP_PORT" "$token" "$irate" "$secs" "$conns" "$1" > "$1.txt"
}
telemetry() {
  BODY_FILE="$out/body_$n.json" "$out/intent_load" "$BENCH_HTTP_PORT" "$token" \
    "$(calc "$half / $n" 3)" "$secs" "$conns" "$1" > "$1.txt"
}

echo "# http_latency: ${secs}s each, $conns connections, telemetry $proto $n events/request at $half events/s, intents at $irate/s, http_workers=$WORKERS buffer_size=$BUFFER batch_size=$BATCH, $(nproc) cores, $(date -u +%FT%TZ)"
printf '%-22s %9s %8s %7s %7s %7s %7s %s\n' run offered ok_req/s p50ms p99ms p99.9ms max_ms statuses
telemetry "$out/lat_tel.log"
row "telemetry (ev/s)" "$half" "$out/lat_tel.log"
if [ "${H2LOAD_TOO:-0}" = 1 ]; then
  h2load_start "$proto" "$n" "$secs" "$conns" "$(calc "$half / $n / $conns" 3)" "$out/lat_h2l.log"
  wait "$h2pid" || true
  row "telemetry, h2load --rps" "$half" "$out/lat_h2l.log"
fi
flush_all
i0=$(bench_psql -tAc "SELECT count(*) FROM machpay.payment_intents")
intents "$out/lat_int.log"
row "intents (intents/s)" "$irate" "$out/lat_int.log"
i1=$(bench_psql -tAc "SELECT count(*) FROM machpay.payment_intents")
telemetry "$out/lat_mix_tel.log" &
intents "$out/lat_mix_int.log"
wait
row "mixed: telemetry" "$half" "$out/lat_mix_tel.log"
row "mixed: intents" "$irate" "$out/lat_mix_int.log"
i2=$(bench_psql -tAc "SELECT count(*) FROM machpay.payment_intents")
n200=$(awk '$2 == 200' "$out/lat_int.log" | wc -l)
n200m=$(awk '$2 == 200' "$out/lat_mix_int.log" | wc -l)
echo "# payment_intents rows: +$((i1 - i0)) for $n200 answers 200 (intents run), +$((i2 - i1)) for $n200m (mixed run)"
cat "$out/lat_int.log.txt" "$out/lat_mix_int.log.txt" | sed 's/^/# intent_load: /'
