#!/usr/bin/env bash
# Ingest server benchmark with h2load: gateway bodies of 1, 10 and 100
# events, 32 connections, HTTP/1.1 and HTTP/2 (prior knowledge), default
# durability.  Landed rows/s are counted in the database (metric_points
# before and after, machpay.flush() at the end of each run); p50/p99
# latency come from h2load's per-request log.
# Usage: bench/http_bench.sh [SECONDS=60] [CONNECTIONS=32] [SIZES="1 10 100"]
#   PG_BINDIR must point at the PostgreSQL where machpay_receiver is
#   installed; BENCH_EXTRA_CONF adds settings (e.g. shared_buffers = 256MB).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
secs=${1:-60}
conns=${2:-32}
sizes=${3:-"1 10 100"}
out=${BENCH_OUT:-bench/out}; mkdir -p "$out"; chmod a+rwx "$out"
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }

bench_start_cluster
trap bench_stop_cluster EXIT
token=$(bench_psql -tAc "SELECT machpay.create_ingest_key('*', 'ingest')")
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$BENCH_HTTP_PORT/readyz" && break
  sleep 0.1
done

# Gateway events only (20 rows each with the seed's shape plus 2 routes more).
perl bench/gen_events.pl 4000 200 200 1 | grep '"source":"gateway"' > "$out/gateway.ndjson"
for n in $sizes; do
  head -n "$n" "$out/gateway.ndjson" | paste -sd, | sed 's/^/[/; s/$/]/' > "$out/body_$n.json"
done
chmod a+r "$out"/*

points() { bench_psql -tAc "SELECT count(*) FROM machpay.metric_points"; }

printf '%-5s %6s %10s %16s %14s %9s %9s %s\n' proto events req/s accepted_events/s landed_rows/s p50_ms p99_ms statuses
for proto in h1 h2; do
  for n in $sizes; do
    flags=()
    [ "$proto" = h1 ] && flags=(--h1)
    before=$(points)
    log="$out/h2load_${proto}_$n.log"
    h2load "${flags[@]}" -D "$secs" -c "$conns" -m 1 -t 1 \
      -H "authorization: Bearer $token" -H 'content-type: application/json' \
      -d "$out/body_$n.json" --log-file="$log" \
      "http://127.0.0.1:$BENCH_HTTP_PORT/v1/ingest" > "$out/h2load_${proto}_$n.txt" 2>&1 || true
    bench_psql -tAc "SELECT machpay.flush()" >/dev/null
    after=$(points)
    # log columns: start (us), status, latency (us)
    reqs=$(wc -l < "$log")
    pct() { awk '{ print $3 }' "$log" | sort -n |
      awk -v q="$1" -v n="$reqs" 'NR == (int(n * q) > 0 ? int(n * q) : 1) { printf "%.2f", $1 / 1000 }'; }
    p50=$(pct 0.5); p99=$(pct 0.99)
    statuses=$(awk '{ print $2 }' "$log" | sort | uniq -c | awk '{ printf "%sx%s ", $2, $1 }')
    ok=$(awk '$2 == 202 { n++ } END { print n + 0 }' "$log")
    printf '%-5s %6d %10.0f %16.0f %14.0f %9s %9s %s\n' "$proto" "$n" \
      "$(echo "$reqs / $secs" | bc -l)" "$(echo "$ok * $n / $secs" | bc -l)" \
      "$(echo "($after - $before) / $secs" | bc -l)" "$p50" "$p99" "$statuses"
  done
done
