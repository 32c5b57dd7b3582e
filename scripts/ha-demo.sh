#!/usr/bin/env bash
# `make ha-demo`: a highly available receiver on one machine, from Debian's
# packages: a pg_auto_failover monitor, two data nodes (a primary and its
# synchronous standby, each running the receiver's workers on its own
# ports) and HAProxy in front of the ingest and SSE ports, sending traffic
# to the node whose /readyz answers 200.  Everything listens on 127.0.0.1;
# data, logs and sockets live under .run/ha/; PostgreSQL and pg_autoctl run
# as the postgres OS user.  `make ha-down` stops it and removes it.
#
# Prints, one per line:
#   node <name>: pg <port> http <port> sse <port> data <dir>
#   entry: http://127.0.0.1:<port>        (HAProxy, ingest)
#   entry-sse: http://127.0.0.1:<port>    (HAProxy, SSE)
#   key: <token>                          (ingest key, valid on every node)
#   console-key: <token>                  (console key, valid on every node)
#
# Environment: MACHPAY_HA_DIR (default .run/ha), MACHPAY_HA_PORT_BASE (25400:
# monitor at base, node i at base+i for PostgreSQL, base+10+i for HTTP,
# base+20+i for SSE, HAProxy at base+30 and base+31), MACHPAY_HA_NODES (2),
# MACHPAY_HA_NO_BUILD=1 (use the installed extension as it is: the tests),
# MACHPAY_HA_EXTRA_CONF (more postgresql.conf lines for every data node).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
if [ -z "${MACHPAY_HA_NO_BUILD:-}" ]; then
  bash scripts/deps.sh
fi
. scripts/common.sh
if [ -z "${MACHPAY_HA_NO_BUILD:-}" ]; then
  build_and_install
fi
. scripts/ha-lib.sh

# Below the kernel's ephemeral ports (32768-60999) and those PostgreSQL's
# TAP tests pick (49152-65535), so no client socket or test server takes one.
base=${MACHPAY_HA_PORT_BASE:-25400}
nnodes=${MACHPAY_HA_NODES:-2}
dir=${MACHPAY_HA_DIR:-$repo/.run/ha}

make_dir() {
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
}
make_dir
if ! as_postgres test -w "$dir" 2>/dev/null; then
  # A checkout under /root is out of the postgres user's reach.
  rmdir "$dir" 2>/dev/null || true
  dir=/var/tmp/machpay_receiver-ha
  make_dir
fi
dir=$(cd "$dir" && pwd)

# A deployment that is up already is only described again; what is left of
# an earlier one is removed.
if [ -f "$dir/ha.env" ] && ha_load "$dir" && [ -f "$dir/haproxy.pid" ] &&
   kill -0 "$(cat "$dir/haproxy.pid")" 2>/dev/null; then
  exec bash scripts/ha-describe.sh "$dir"
fi
if [ -n "$(ls -A "$dir")" ]; then
  MACHPAY_HA_DIR=$dir bash scripts/ha-down.sh
  make_dir
fi
# Unix socket paths are limited to 107 bytes.
sock="$dir/sock"
if [ ${#sock} -gt 80 ]; then
  sock=$(mktemp -d /tmp/machpay-ha.XXXXXX)
  [ "$(id -u)" -eq 0 ] && chown postgres: "$sock"
fi
as_postgres mkdir -p "$sock" "$dir/autoctl/config" "$dir/autoctl/data" "$dir/autoctl/run"
as_postgres chmod 700 "$dir/autoctl/run"

bindir=$("$PG_CONFIG" --bindir)
{
  echo "HA_DIR='$dir'"
  echo "HA_SOCK='$sock'"
  echo "HA_BIN='$bindir'"
  echo "HA_MONITOR_PORT=$base"
  echo "HA_ENTRY_PORT=$((base + 30))"
  echo "HA_ENTRY_SSE_PORT=$((base + 31))"
  names=""
  for i in $(seq 1 "$nnodes"); do
    names="$names node$i"
    echo "HA_PG_node$i=$((base + i))"
    echo "HA_HTTP_node$i=$((base + 10 + i))"
    echo "HA_SSE_node$i=$((base + 20 + i))"
  done
  echo "HA_NODES='${names# }'"
} > "$dir/ha.env.tmp"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir/ha.env.tmp"
mv "$dir/ha.env.tmp" "$dir/ha.env"
ha_load "$dir"
trap 'echo "ha-demo: failed; logs under $dir; make ha-down removes what was started" >&2' ERR
monitor_uri="postgres://autoctl_node@127.0.0.1:$HA_MONITOR_PORT/pg_auto_failover?sslmode=disable"

# ---- the monitor ---------------------------------------------------------
# Failure detection tuned down from pg_auto_failover's defaults (20 s
# before a node is unhealthy, 30 s for a lost primary to demote itself
# before its standby may take writes): a node is declared down about 5 s
# after its last report, and the promoted standby takes writes 5 s later.
# The keepers' network_partition_timeout (3 s, below) stays shorter than
# that, so a primary cut off from the monitor and its standby demotes itself
# first.  Even when it did not, it could not answer an intent: its commits
# wait for a synchronous standby it no longer has.
ha_autoctl create monitor --pgdata "$dir/monitor" --pgport "$HA_MONITOR_PORT" \
  --pgctl "$HA_BIN/pg_ctl" --hostname 127.0.0.1 --listen 127.0.0.1 \
  --auth trust --no-ssl > "$dir/monitor-create.log" 2>&1 ||
  { tail -20 "$dir/monitor-create.log" >&2; exit 1; }
as_postgres tee -a "$dir/monitor/postgresql.conf" > /dev/null <<EOC
# machpay_receiver HA demo: failure detection
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 2
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 5000
pgautofailover.primary_demote_timeout = 5000
pgautofailover.startup_grace_period = 5000
shared_buffers = '32MB'
EOC
ha_start_keeper monitor "$dir/monitor"
ha_wait 60 "the monitor" ha_monitor_sql "SELECT 1"

# ---- the data nodes ----------------------------------------------------------
# pg_autoctl writes its settings to postgresql-auto-failover.conf, included
# at the top of postgresql.conf; a standby is a pg_basebackup copy of the
# primary, postgresql.conf included.  So every node's postgresql.conf ends
# with the same relative include, which each node resolves to the
# machpay-node.conf beside its own data directory: the receiver's ports and
# shared_preload_libraries (pg_auto_failover's pg_stat_statements kept).
node_conf() {  # NAME
  local n=$1 http sse
  eval "http=\$HA_HTTP_$n sse=\$HA_SSE_$n"
  as_postgres mkdir -p "$dir/$n"
  as_postgres tee "$dir/$n/machpay-node.conf" > /dev/null <<EOC
# machpay_receiver on node $n (read through postgresql.conf's last line)
shared_preload_libraries = 'pg_stat_statements,machpay_receiver'
machpay.database = 'postgres'
machpay.listen_addresses = '127.0.0.1'
machpay.port = $http
machpay.sse_port = $sse
machpay.archive_directory = '$dir/$n/archive'
shared_buffers = '128MB'
wal_keep_size = '256MB'
${MACHPAY_HA_EXTRA_CONF:-}
EOC
}

create_node() {  # NAME
  local n=$1 pg
  eval "pg=\$HA_PG_$n"
  node_conf "$n"
  ha_autoctl create postgres --pgdata "$dir/$n/pgdata" --pgport "$pg" --name "$n" \
    --pgctl "$HA_BIN/pg_ctl" --hostname 127.0.0.1 --listen 127.0.0.1 \
    --auth trust --no-ssl --monitor "$monitor_uri" > "$dir/$n-create.log" 2>&1
  ha_autoctl config set --pgdata "$dir/$n/pgdata" timeout.network_partition_timeout 3 > /dev/null
  if ! grep -q "^include '../machpay-node.conf'" "$dir/$n/pgdata/postgresql.conf"; then
    echo "include '../machpay-node.conf'" | as_postgres tee -a "$dir/$n/pgdata/postgresql.conf" > /dev/null
  fi
}

first=${HA_NODES%% *}
create_node "$first" || { tail -20 "$dir/$first-create.log" >&2; exit 1; }
ha_start_keeper "$first" "$dir/$first/pgdata"
eval "first_pg=\$HA_PG_$first first_http=\$HA_HTTP_$first"
ha_wait 60 "node $first to run" ha_psql "$first_pg" -d postgres -c "SELECT 1"
ha_psql "$first_pg" -d postgres -c "SET client_min_messages = warning" -c "CREATE SCHEMA IF NOT EXISTS partman" \
  -c "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman" -c "CREATE EXTENSION IF NOT EXISTS machpay_receiver"
ingest_key=$(ha_psql "$first_pg" -d postgres -tAc "SELECT machpay.create_ingest_key('*', 'ingest')")
console_key=$(ha_psql "$first_pg" -d postgres -tAc "SELECT machpay.create_ingest_key('*', 'console')")
printf "INGEST_KEY='%s'\nCONSOLE_KEY='%s'\n" "$ingest_key" "$console_key" | as_postgres tee -a "$dir/ha.env" > /dev/null
ha_wait 60 "node $first's ingest server" ha_ready "$first_http"

# pg_basebackup waits for a spread checkpoint (a minute on an idle server):
# ask the primary for an immediate one while the standbys are cloned.
for n in ${HA_NODES#* }; do
  create_node "$n" &
  cpid=$!
  while kill -0 "$cpid" 2>/dev/null; do
    ha_psql "$first_pg" -d postgres -c CHECKPOINT > /dev/null 2>&1 || true
    sleep 1
  done
  wait "$cpid" || { tail -20 "$dir/$n-create.log" >&2; exit 1; }
  ha_start_keeper "$n" "$dir/$n/pgdata"
done
ha_wait 120 "the standbys to be in sync" ha_sync_ready

# ---- HAProxy -------------------------------------------------------------
# Health check: GET /readyz on each node's ingest port, 200 = the primary
# (a standby answers 503).  The SSE backend checks the same ingest port, so
# both follow the same node.  "balance first" sends everything to the first
# ready node should two ever answer 200.  Only connection failures are
# retried (HAProxy's default): a request the node received is never sent
# twice by the proxy.  Requests in flight on an ingest server marked down
# are left to finish: they wait for their commit.
{
  cat <<EOC
# machpay_receiver HA demo (scripts/ha-demo.sh)
global
    maxconn 4096
    pidfile $dir/haproxy.pid

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout queue 2s
    option http-keep-alive
    default-server inter 500 fastinter 250 downinter 500 rise 1 fall 2

frontend ingest
    bind 127.0.0.1:$HA_ENTRY_PORT
    default_backend receiver_ingest

frontend sse
    bind 127.0.0.1:$HA_ENTRY_SSE_PORT
    timeout client 1h
    default_backend receiver_sse

backend receiver_ingest
    balance first
    option httpchk GET /readyz
    http-check expect status 200
EOC
  for n in $HA_NODES; do
    eval "echo \"    server $n 127.0.0.1:\$HA_HTTP_$n check\""
  done
  cat <<EOC

backend receiver_sse
    balance first
    timeout server 1h
    # A console must not stay on a node that lost its role (a primary cut
    # off from the others): it reconnects and lands on the new primary.
    default-server inter 500 fastinter 250 downinter 500 rise 1 fall 2 on-marked-down shutdown-sessions
    option httpchk GET /readyz
    http-check expect status 200
EOC
  for n in $HA_NODES; do
    eval "echo \"    server $n 127.0.0.1:\$HA_SSE_$n check port \$HA_HTTP_$n\""
  done
} | as_postgres tee "$dir/haproxy.cfg" > /dev/null
as_postgres haproxy -q -f "$dir/haproxy.cfg" -D < /dev/null >> "$dir/haproxy.log" 2>&1
ha_wait 30 "HAProxy to reach the primary" ha_ready "$HA_ENTRY_PORT"

bash scripts/ha-describe.sh "$dir"
