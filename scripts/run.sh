#!/usr/bin/env bash
# `make run`: install what is missing, build, install, and start the receiver
# on a throwaway cluster under the repository (.run/), as the postgres OS
# user.  Idempotent: a second run rebuilds and restarts the same cluster.
# `make stop` stops it; `rm -rf .run` throws it away.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bash scripts/deps.sh
. scripts/common.sh
build_and_install

PGPORT=${MACHPAY_PGPORT:-54329}
HTTP_PORT=${MACHPAY_HTTP_PORT:-8080}
SSE_PORT=${MACHPAY_SSE_PORT:-8081}
run_dir=${MACHPAY_RUN_DIR:-$repo/.run}
mkdir -p "$run_dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$run_dir"
# The postgres user must reach the directory; a checkout under /root is not
# reachable, so fall back to a directory of its own.
if ! as_postgres test -w "$run_dir" 2>/dev/null; then
  run_dir=/var/tmp/machpay_receiver-run
  mkdir -p "$run_dir" && { [ "$(id -u)" -ne 0 ] || chown postgres: "$run_dir"; }
fi
data="$run_dir/data"
psql_cmd=("$PG_BINDIR/psql" -h "$run_dir" -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -X -q)

if [ ! -f "$data/PG_VERSION" ]; then
  as_postgres "$PG_BINDIR/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  cat >> "$data/postgresql.conf" <<EOC
# machpay_receiver demo cluster (scripts/run.sh)
port = $PGPORT
listen_addresses = ''
unix_socket_directories = '$run_dir'
shared_preload_libraries = 'machpay_receiver'
machpay.database = 'postgres'
machpay.port = $HTTP_PORT
machpay.sse_port = $SSE_PORT
machpay.archive_directory = '$run_dir/archive'
EOC
fi

if as_postgres "$PG_BINDIR/pg_ctl" -D "$data" status >/dev/null 2>&1; then
  as_postgres "$PG_BINDIR/pg_ctl" -D "$data" -l "$run_dir/postgres.log" -w restart -m fast >/dev/null
else
  as_postgres "$PG_BINDIR/pg_ctl" -D "$data" -l "$run_dir/postgres.log" -w start >/dev/null
fi

# pg_partman in a schema of its own, which only superusers may create in
# (README, "pg_partman's schema"), then the extension.
as_postgres "${psql_cmd[@]}" -c "SET client_min_messages = warning" -c "CREATE SCHEMA IF NOT EXISTS partman" \
  -c "CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman" -c "CREATE EXTENSION IF NOT EXISTS machpay_receiver"

# Demo keys: tokens are shown once by create_ingest_key, so keep them here.
keys="$run_dir/keys.env"
if [ ! -s "$keys" ]; then
  ingest=$(as_postgres "${psql_cmd[@]}" -tAc "SELECT machpay.create_ingest_key('*', 'ingest')")
  console=$(as_postgres "${psql_cmd[@]}" -tAc "SELECT machpay.create_ingest_key('*', 'console')")
  printf 'INGEST_KEY=%s\nCONSOLE_KEY=%s\n' "$ingest" "$console" > "$keys"
fi
. "$keys"

# The workers notice the extension within a few seconds: wait until the
# ingest server says it is ready, so the printed curl works right away.
for _ in $(seq 1 60); do
  curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" && break
  sleep 0.5
done
curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/readyz" ||
  echo "warning: the ingest server on port $HTTP_PORT is not ready yet; see $run_dir/postgres.log" >&2

# The example gateway report with its period set to the last minute.
now=$(date +%s)
sed -e "s/\"period_start\": [0-9]*/\"period_start\": $((now - 60))/" \
    -e "s/\"period_end\": [0-9]*/\"period_end\": $now/" examples/gateway.json > "$run_dir/gateway.json"
chmod a+r "$run_dir/gateway.json"

cat <<EOM

machpay_receiver is running (PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'), data in $data).

  SQL:       ${psql_cmd[*]:0:9}
  Ingest:    curl -s http://127.0.0.1:$HTTP_PORT/v1/ingest \\
               -H "Authorization: Bearer $INGEST_KEY" \\
               -H 'Content-Type: application/json' --data-binary @$run_dir/gateway.json
  Or in SQL: SELECT machpay.ingest(pg_read_file('$run_dir/gateway.json')::jsonb);
  Then:      SELECT metric_name, labels, value FROM machpay.metrics ORDER BY 1;
  Stream:    curl -N 'http://127.0.0.1:$SSE_PORT/v1/stream?access_token=$CONSOLE_KEY'
  Console:   http://127.0.0.1:$SSE_PORT/?access_token=$CONSOLE_KEY
  Counters:  curl -s http://127.0.0.1:$HTTP_PORT/metrics
  Log:       $run_dir/postgres.log
  Stop:      make stop        (throw away: make stop && rm -rf $run_dir)
EOM
