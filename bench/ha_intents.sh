#!/usr/bin/env bash
# Payment intents with synchronous replication: throughput and latency of
# intents on the highly available deployment of `make ha-demo` (primary +
# synchronous standby, pg_auto_failover, HAProxy), beside a single node.
#  single     one server, no standby, intents posted to its ingest port
#  ha-direct  the HA primary's own ingest port: the commit waits for the
#             standby's flush (synchronous_standby_names kept by
#             pg_auto_failover)
#  ha-entry   the same through HAProxy (the entry clients use)
# Each run is open loop (bench/intent_load.c): RATE requests/s for SECONDS
# over CONNS keep-alive HTTP/1.1 connections, one intent per request with
# its own nonce; latency counts from when each request was due, so time
# spent waiting for a free connection counts.  ok/s is the rate of 200s:
# past the knee it is the throughput, and latency grows with the backlog.
# The nodes get the same settings as the single server (bench/lib.sh).
# Needs the extension built and installed (make install, or PG_CONFIG
# pointing at a private copy), and the packages of scripts/deps.sh.
# Usage: bench/ha_intents.sh [SECONDS=20] ["RATES"="250 500 1000 2000"]
#   env: CONNS (64), HA_PORT_BASE (27400), BENCH_OUT (bench/out)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
rates=${2:-"250 500 1000 2000"}
conns=${CONNS:-64}
[ -n "${PG_CONFIG:-}" ] && PG_BINDIR=$("$PG_CONFIG" --bindir)
. bench/lib.sh
. scripts/ha-lib.sh
out=${BENCH_OUT:-bench/out}; mkdir -p "$out"; chmod a+rwx "$out"
ha_dir=/var/tmp/machpay-bench-ha
cc -O2 -o "$out/intent_load" bench/intent_load.c
rm -f "$out"/ha_intents_*   # the row counts below compare with this run's logs

same_conf="machpay.rollup_interval = 0
machpay.maintenance_interval = 0
shared_buffers = 2GB
max_wal_size = 16GB
checkpoint_timeout = 30min"

cleanup() {
  bench_stop_cluster
  MACHPAY_HA_DIR=$ha_dir bash scripts/ha-down.sh
}
trap cleanup EXIT

pcts() {  # LOG -> "ok p50 p99 p99.9 max statuses" (latency from due, ms)
  awk '$2 == 200 { print $3 }' "$1" | sort -n | awk '{ v[NR] = $1 } END {
    if (NR == 0) { printf "0 - - - -"; exit }
    split("0.5 0.99 0.999", q, " "); printf "%d", NR
    for (j = 1; j <= 3; j++) { i = int(NR * q[j]); if (i < 1) i = 1; printf " %.2f", v[i] / 1000 }
    printf " %.2f", v[NR] / 1000 }'
  printf ' %s\n' "$(awk '{ print $2 }' "$1" | sort | uniq -c | awk '{ printf "%sx%s,", $2, $1 }')"
}

run() {  # CONFIG PORT TOKEN
  local rate log cnt p50 p99 p999 max st
  for rate in $rates; do
    log="$out/ha_intents_$1_$rate.log"
    "$out/intent_load" "$2" "$3" "$rate" "$secs" "$conns" "$log" > "$log.txt"
    read -r cnt p50 p99 p999 max st <<< "$(pcts "$log")"
    printf '%-10s %7s %8.0f %8s %8s %8s %8s %s\n' "$1" "$rate" \
      "$(echo "$cnt / $secs" | bc -l)" "$p50" "$p99" "$p999" "$max" "$st"
  done
}

echo "# ha_intents: ${secs}s per run, $conns connections, one intent per request, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
printf '%-10s %7s %8s %8s %8s %8s %8s %s\n' config rate/s ok/s p50ms p99ms p99.9ms max_ms statuses

BENCH_EXTRA_CONF=$same_conf bench_start_cluster
token=$(bench_psql -tAc "SELECT machpay.create_ingest_key('*', 'ingest')")
ha_wait 30 "the single server" ha_ready "$BENCH_HTTP_PORT"
run single "$BENCH_HTTP_PORT" "$token"
single_rows=$(bench_psql -tAc "SELECT count(*) FROM machpay.payment_intents")
bench_stop_cluster

MACHPAY_HA_DIR=$ha_dir MACHPAY_HA_PORT_BASE=${HA_PORT_BASE:-27400} MACHPAY_HA_NO_BUILD=1 \
  MACHPAY_HA_EXTRA_CONF=$same_conf bash scripts/ha-demo.sh > "$out/ha_intents_demo.txt"
ha_load "$ha_dir"
primary=$(ha_primary)
eval "primary_http=\$HA_HTTP_$primary primary_pg=\$HA_PG_$primary"
echo "# ha: primary $primary, synchronous_standby_names = '$(ha_psql "$primary_pg" -d postgres -tAc 'SHOW synchronous_standby_names')', synchronous_commit = $(ha_psql "$primary_pg" -d postgres -tAc 'SHOW synchronous_commit')"
run ha-direct "$primary_http" "$INGEST_KEY"
run ha-entry "$HA_ENTRY_PORT" "$INGEST_KEY"
ha_rows=$(ha_psql "$primary_pg" -d postgres -tAc "SELECT count(*) FROM machpay.payment_intents")
standby=$(for n in $HA_NODES; do [ "$n" != "$primary" ] && echo "$n"; done | head -1)
eval "standby_pg=\$HA_PG_$standby"
standby_rows=$(ha_psql "$standby_pg" -d postgres -tAc "SELECT count(*) FROM machpay.payment_intents")
ok_single=$(cat "$out"/ha_intents_single_*.log | awk '$2 == 200' | wc -l)
ok_ha=$(cat "$out"/ha_intents_ha-*.log | awk '$2 == 200' | wc -l)
echo "# payment_intents rows: single $single_rows for $ok_single answers 200; ha primary $ha_rows, standby $standby_rows for $ok_ha answers 200"
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
