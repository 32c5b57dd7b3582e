#!/usr/bin/env bash
# Keep-alive connections the server closes under load (issue 9, item 10),
# counted by cause: payment intents at INTENT_RATE/s over CONNS keep-alive
# HTTP/1.1 connections (bench/intent_load.c, open loop; it reconnects when
# the server closes one and logs a request lost that way as status 0),
# beside telemetry over h2load --h1 (TEL_CONNS connections, TEL_RATE
# requests/s in all, EVENTS events each).  Printed: intent_load's
# reconnects and answers, h2load's summary, and the server's
# machpay_http_connections_closed_total by cause over the run.
# intent_load sends each request on the lowest-numbered idle connection,
# so at a low rate the high-numbered ones stay unused for the whole run.
# Usage: bench/keepalive_closes.sh [SECONDS=30] [INTENT_RATE=1000] [CONNS=32]
#        [TEL_RATE=1000] [TEL_CONNS=32] [EVENTS=10]
#   env: BENCH_EXTRA_CONF (e.g. "machpay.http_idle_timeout = 60s").
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
irate=${2:-1000}
conns=${3:-32}
trate=${4:-1000}
tconns=${5:-32}
n=${6:-10}
. bench/http_lib.sh
cc -O2 -o "$out/intent_load" bench/intent_load.c
http_setup "$n"

closes() {
  curl -s "http://127.0.0.1:$BENCH_HTTP_PORT/metrics" |
    awk -F'[{}"= ]+' '/^machpay_http_connections_closed_total/ { print $3, $NF }' | sort
}
closes > "$out/closes.a"
echo "# keepalive_closes: ${secs}s, intents $irate/s over $conns connections, telemetry $trate req/s of $n events over $tconns connections, $(grep -h idle_timeout "$BENCH_DIR/data/postgresql.conf" || echo 'http_idle_timeout default'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
h2load_start h1 "$n" "$secs" "$tconns" "$(calc "$trate / $tconns" 3)" "$out/ka_tel.log"
"$out/intent_load" "$BENCH_HTTP_PORT" "$token" "$irate" "$secs" "$conns" "$out/ka_int.log" > "$out/ka_int.txt"
wait "$h2pid" || true
sleep 1
closes > "$out/closes.b"
sed 's/^/# intent_load: /' "$out/ka_int.txt"
echo "# intent_load statuses: $(awk '{ s[$2]++ } END { for (k in s) printf "%sx%d ", k, s[k] }' "$out/ka_int.log")"
grep -E '^requests:|^status codes:' "$out/ka_tel.log.txt" | sed 's/^/# h2load: /'
echo "# connections closed by the server during the run, by cause (load average $(cut -d' ' -f1-3 /proc/loadavg)):"
join "$out/closes.a" "$out/closes.b" | awk '$3 - $2 > 0 { printf "#   %-16s %d\n", $1, $3 - $2 }'
