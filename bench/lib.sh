# Shared by the benchmark scripts: a throwaway cluster tuned like a small
# production box (large WAL, default durability), run as the postgres user.
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
BENCH_DIR=${BENCH_DIR:-/var/tmp/machpay-bench}
BENCH_PORT=${BENCH_PORT:-54339}
BENCH_HTTP_PORT=${BENCH_HTTP_PORT:-18080}
BENCH_SSE_PORT=${BENCH_SSE_PORT:-18081}

bench_psql() {
  as_postgres "$PG_BINDIR/psql" -h "$BENCH_DIR" -p "$BENCH_PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 "$@"
}

bench_start_cluster() {
  as_postgres "$PG_BINDIR/pg_ctl" -D "$BENCH_DIR/data" stop -m fast >/dev/null 2>&1 || true
  # The ingest workers bind with SO_REUSEPORT: another server of the same
  # user on these ports would silently get a share of the load.
  local p
  for p in "$BENCH_HTTP_PORT" "$BENCH_SSE_PORT"; do
    if ss -Hltn "sport = :$p" | grep -q .; then
      echo "bench: port $p is already in use (set BENCH_HTTP_PORT / BENCH_SSE_PORT)" >&2
      exit 1
    fi
  done
  rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"; chown postgres: "$BENCH_DIR"
  as_postgres "$PG_BINDIR/initdb" -D "$BENCH_DIR/data" -U postgres -A trust >/dev/null
  cat >> "$BENCH_DIR/data/postgresql.conf" <<EOC
port = $BENCH_PORT
listen_addresses = ''
unix_socket_directories = '$BENCH_DIR'
shared_preload_libraries = 'machpay_receiver'
machpay.database = 'postgres'
machpay.port = $BENCH_HTTP_PORT
machpay.sse_port = $BENCH_SSE_PORT
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
shared_buffers = 2GB
max_wal_size = 16GB
checkpoint_timeout = 30min
# A fresh cluster creates every WAL segment it writes, zero-filling 16 MB
# under the WAL write lock (wait event WALInitSync), which a server in
# service does not do: it recycles its segments at checkpoints.  Without
# this, the first minutes of a run measure segment creation.
wal_init_zero = off
${BENCH_EXTRA_CONF:-}
EOC
  as_postgres "$PG_BINDIR/pg_ctl" -D "$BENCH_DIR/data" -l "$BENCH_DIR/postgres.log" -w start >/dev/null
  bench_psql -c "SET client_min_messages = warning" -c "CREATE SCHEMA partman" \
    -c "CREATE EXTENSION pg_partman SCHEMA partman" -c "CREATE EXTENSION machpay_receiver"
}

bench_stop_cluster() {
  as_postgres "$PG_BINDIR/pg_ctl" -D "$BENCH_DIR/data" stop -m fast >/dev/null 2>&1 || true
}

median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
