#!/usr/bin/env bash
# SSE relay benchmark (issue 5): CLIENTS SSE clients connected while a
# sender commits RATE notifications a second for SECONDS seconds.  Reports
# the commit-to-client latency (p50/p99/max over every delivered event, the
# payload carries clock_timestamp() of the sending statement, committed
# right after) and the relay's CPU and RSS.
# Usage: bench/sse_bench.sh [CLIENTS] [RATE] [SECONDS]   (default 1000 100 15)
# INGEST_RPS=N also ingests over HTTP during the run: N requests/s of
# INGEST_EVENTS (default 10) gateway events each, with h2load (so the relay
# also carries the receiver's own ingest/payment events and competes for CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DIR=${BENCH_DIR:-/var/tmp/machpay-sse-bench}
export BENCH_PORT=${BENCH_PORT:-54349}
if [ -n "${INGEST_RPS:-}" ]; then
  export BENCH_HTTP_PORT=${BENCH_HTTP_PORT:-18090}
else
  export BENCH_HTTP_PORT=0
fi
export BENCH_SSE_PORT=${BENCH_SSE_PORT:-18091}
export BENCH_EXTRA_CONF="machpay.sse_max_clients = 5000
shared_buffers = 128MB"
. bench/lib.sh
clients=${1:-1000}; rate=${2:-100}; secs=${3:-15}
out=${BENCH_OUT:-bench/out}; mkdir -p "$out"; chmod a+rwx "$out"

gcc -O2 -Wall -o "$out/sse_bench_client" bench/sse_bench_client.c
bench_start_cluster
trap bench_stop_cluster EXIT
bench_psql -c "INSERT INTO machpay.ingest_keys (token_sha256, entity_id, role) VALUES (sha256('bench-token'::bytea), '*', 'console')"
# The relay starts once it sees the extension, then reads keys every 500 ms.
for _ in $(seq 1 100); do
  code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' -H 'Authorization: Bearer bench-token' \
         "http://127.0.0.1:$BENCH_SSE_PORT/v1/stream" || true)
  [ "$code" = 200 ] && break; sleep 0.2
done

relay=$(bench_psql -tAc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay sse relay'")
ticks() { awk '{ print $14 + $15 }' "/proc/$relay/stat"; }
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$relay/status"; }
hwm() { awk '/^VmHWM/ { print $2 }' "/proc/$relay/status"; }
hz=$(getconf CLK_TCK)

"$out/sse_bench_client" "$BENCH_SSE_PORT" bench-token "$clients" $((secs + 8)) > "$out/sse_client.txt" &
client=$!
for _ in $(seq 1 100); do grep -q connected "$out/sse_client.txt" && break; sleep 0.1; done
grep -q connected "$out/sse_client.txt" || { echo "clients did not connect"; cat "$out/sse_client.txt"; exit 1; }
rss_idle=$(rss)

ingest_pid=
if [ -n "${INGEST_RPS:-}" ]; then
  itoken=$(bench_psql -tAc "SELECT machpay.create_ingest_key('*', 'ingest')")
  perl bench/gen_events.pl "$((2 * ${INGEST_EVENTS:-10}))" 200 200 1 | grep '"source":"gateway"' |
    paste -sd, | sed 's/^/[/; s/$/]/' > "$out/sse_ingest_body.json"
  iconns=8
  h2load -D "$((secs + 1))" -c "$iconns" -t 1 --rps "$(( (INGEST_RPS + iconns - 1) / iconns ))" \
    -H "authorization: Bearer $itoken" -H 'content-type: application/json' \
    -d "$out/sse_ingest_body.json" "http://127.0.0.1:$BENCH_HTTP_PORT/v1/ingest" > "$out/sse_ingest_h2load.txt" 2>&1 &
  ingest_pid=$!
  points0=$(bench_psql -tAc "SELECT count(*) FROM machpay.metric_points")
fi

t0=$(ticks); s0=$(date +%s.%N)
# One transaction (so one commit, one notification) per loop turn.
bench_psql -c "DO \$\$
BEGIN
  FOR i IN 1..$((rate * secs)) LOOP
    PERFORM machpay.notify_event(jsonb_build_object('type', 'bench', 'i', i, 't', extract(epoch FROM clock_timestamp())));
    COMMIT;
    PERFORM pg_sleep(1.0 / $rate);
  END LOOP;
END \$\$"
t1=$(ticks); s1=$(date +%s.%N)
rss_end=$(rss); hwm_end=$(hwm)
wait $client
if [ -n "$ingest_pid" ]; then
  wait "$ingest_pid" || true
  bench_psql -tAc "SELECT machpay.flush()" >/dev/null
  points1=$(bench_psql -tAc "SELECT count(*) FROM machpay.metric_points")
  echo "ingest during the run: $(grep -E '^requests:|^status codes:' "$out/sse_ingest_h2load.txt" | tr '\n' ' ')"
  awk -v a="$points0" -v b="$points1" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "ingest landed %d rows, %.0f rows/s\n", b - a, (b - a) / (s1 - s0) }'
fi
cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / (s1 - s0) }')
echo "clients=$clients rate=${rate}/s seconds=$secs expected_events=$((clients * rate * secs))"
cat "$out/sse_client.txt"
echo "relay cpu=${cpu}% of one core, rss idle=${rss_idle} kB, rss end=${rss_end} kB, peak=${hwm_end} kB"
