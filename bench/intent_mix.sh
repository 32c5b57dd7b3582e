#!/usr/bin/env bash
# Payment intents beside telemetry (issue 10).  Intents at INTENT_RATE/s,
# one intent per request with its own nonce, open loop, latency counted from
# when each request was due (bench/intent_load.c, 64 keep-alive HTTP/1.1
# connections), in three runs of SECONDS each:
#  1. alone;
#  2. with telemetry at the knee: gateway bodies of EVENTS events, open loop
#     at KNEE requests/s (intent_load.c with BODY_FILE, 64 connections);
#  3. with an open-loop telemetry flood: FLOOD requests/s over 256
#     connections, past what the server can take (most are answered 429).
# Per run: p50/p99/p99.9/max of the intents' 200s and the statuses of every
# intent; telemetry requests/s answered 202 and its statuses; the load
# average.  At the end: every intent answered 200 is in payment_intents
# exactly once, with the id it was answered with (INTENT_IDS=1 has
# intent_load log the id of each answer).
# Bars: intents p99 <= 25 ms, p99.9 <= 50 ms, no 429.
# Usage: bench/intent_mix.sh [SECONDS=30] [KNEE=2000] [FLOOD=8000] [EVENTS=10] [INTENT_RATE=1000]
#   env: WORKERS, BUFFER, BATCH (http_lib.sh), FLUSH_WORKERS (machpay.flush_workers,
#   unset = the default), BENCH_EXTRA_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
knee=${2:-2000}
flood=${3:-8000}
n=${4:-10}
irate=${5:-1000}
if [ -n "${FLUSH_WORKERS:-}" ]; then
  BENCH_EXTRA_CONF="machpay.flush_workers = $FLUSH_WORKERS
${BENCH_EXTRA_CONF:-}"
fi
. bench/http_lib.sh
cc -O2 -o "$out/intent_load" bench/intent_load.c
http_setup "$n"
export INTENT_IDS=1

pcts() {  # LOG -> "count p50 p99 p99.9 max statuses" of the 200/202 answers
  awk '$2 == 200 || $2 == 202 { print $3 }' "$1" | sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { printf "0 - - - -"; exit }
    split("0.5 0.99 0.999", q, " "); printf "%d", NR
    for (j = 1; j <= 3; j++) { i = int(NR * q[j]); if (i < 1) i = 1; printf " %.2f", v[i] / 1000 }
    printf " %.2f", v[NR] / 1000 }'
  printf ' %s\n' "$(awk '{ print $2 }' "$1" | sort | uniq -c | awk '{ printf "%sx%s,", $2, $1 }')"
}
row() {  # what offered LOG
  read -r cnt p50 p99 p999 max st <<< "$(pcts "$3")"
  printf '%-26s %8s %8.0f %7s %7s %7s %8s %-34s %s\n' "$1" "$2" "$(calc "$cnt / $secs")" \
    "$p50" "$p99" "$p999" "$max" "$st" "$(cut -d' ' -f1-3 /proc/loadavg)"
}
nonce=1
intents() {  # LOG
  "$out/intent_load" "$BENCH_HTTP_PORT" "$token" "$irate" "$secs" 64 "$1" "$nonce" > "$1.txt"
  nonce=$((nonce + 10000000))
}
telemetry() {  # RATE CONNS LOG
  BODY_FILE="$out/body_$n.json" INTENT_IDS='' "$out/intent_load" "$BENCH_HTTP_PORT" "$token" \
    "$1" "$secs" "$2" "$3" > "$3.txt"
}

echo "# intent_mix: ${secs}s each, intents at $irate/s (64 connections, open loop from the due time), telemetry $n events/request: knee $knee req/s (64 connections), flood $flood req/s (256 connections); http_workers=$WORKERS flush_workers=${FLUSH_WORKERS:-default} buffer_size=$BUFFER batch_size=$BATCH, $(nproc) cores, $(date -u +%FT%TZ)"
bench_psql -tAc "SELECT name, setting FROM pg_settings WHERE name = 'machpay.flush_workers'" | sed 's/^/# /'
printf '%-26s %8s %8s %7s %7s %7s %8s %-34s %s\n' run offered ok_req/s p50ms p99ms p99.9ms max_ms statuses loadavg
intents "$out/mix_alone.log"
row "intents alone" "$irate" "$out/mix_alone.log"
telemetry "$knee" 64 "$out/mix_knee_tel.log" &
tpid=$!
intents "$out/mix_knee.log"
wait "$tpid"
row "intents, telemetry @knee" "$irate" "$out/mix_knee.log"
row "  telemetry @knee (req/s)" "$knee" "$out/mix_knee_tel.log"
telemetry "$flood" 256 "$out/mix_flood_tel.log" &
tpid=$!
intents "$out/mix_flood.log"
wait "$tpid"
row "intents, telemetry flood" "$irate" "$out/mix_flood.log"
row "  telemetry flood (req/s)" "$flood" "$out/mix_flood_tel.log"
flush_all

# Every intent answered 200: stored once, with the id it was answered with.
cat "$out"/mix_alone.log "$out"/mix_knee.log "$out"/mix_flood.log |
  awk -F'\t' '$2 == 200 { print $4 "\t" $6 }' > "$out/mix_answered.tsv"
chmod a+r "$out/mix_answered.tsv"
bench_psql -tA -c "CREATE TEMP TABLE answered (nonce numeric, id uuid)" \
  -c "\\copy answered FROM '$out/mix_answered.tsv'" \
  -c "SELECT format('# intents answered 200: %s; stored once with that id: %s; missing: %s; stored more than once: %s; other id: %s',
        count(*), count(*) FILTER (WHERE n = 1 AND same), count(*) FILTER (WHERE n = 0),
        count(*) FILTER (WHERE n > 1), count(*) FILTER (WHERE n = 1 AND NOT same))
      FROM (SELECT a.nonce, count(p.id) AS n, bool_and(p.id = a.id) AS same
              FROM answered a LEFT JOIN machpay.payment_intents p
                ON p.nonce = a.nonce
               AND p.gateway_id = 'BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp'
               AND p.agent_id = 'QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg'
             GROUP BY a.nonce) s"
for f in mix_alone mix_knee mix_flood; do sed "s/^/# $f: /" "$out/$f.log.txt"; done
echo "# latency = from when the request was due to the end of its answer (waits for a free connection included)"
