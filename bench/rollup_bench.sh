#!/usr/bin/env bash
# Rollup of one hour with 14 days of raw metrics present, timed against a
# bare INSERT ... SELECT ... GROUP BY over the same hour (goal: <= 1.5x).
#
# Data: GATEWAYS gateways x SERIES_PER_GATEWAY series; the rolled-up hour
# has one point per series per minute; the other 14 days have one point
# per series every BACKGROUND_STEP (at one a minute, 14 days of 60,000
# series is 1.2 billion rows: not a few minutes on 2 cores).  Points are
# inserted in time order, as the flusher writes them.
#
# Both sides compute the same aggregates (samples, sum, min, max and
# machpay.last) over the same hour; the rollup is the argument-less
# machpay.run_rollup(): the mark lookup, the job_runs row, the series join,
# the upsert into the partitioned stats_1h with its unique index, the
# watermark and the NOTIFY; its sum is exact (numeric, rounded once) where
# the bare float8 sum depends on row order (compared with a tolerance).  The bare side groups the machpay.metrics view
# into an unindexed table.  Each side runs RUNS times, alternating, after
# one warm-up each; the medians are compared.
#
# Usage: PG_CONFIG=... bash bench/rollup_bench.sh   (builds nothing: run
# `make install` first).  Runs a throwaway cluster on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh

GATEWAYS=${GATEWAYS:-300}
SERIES_PER_GATEWAY=${SERIES_PER_GATEWAY:-200}
BACKGROUND_STEP=${BACKGROUND_STEP:-2 hours}
RUNS=${RUNS:-3}
BINDIR=$($PG_CONFIG --bindir)
PORT=${PORT:-$(( 20000 + RANDOM % 10000 ))}

dir=$(mktemp -d /tmp/machpay-rollup-bench.XXXXXX)
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
cleanup() {
  as_postgres "$BINDIR/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

as_postgres "$BINDIR/initdb" -D "$dir/data" -A trust >/dev/null
cat >>"$dir/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$dir'
shared_preload_libraries = 'machpay_receiver'
machpay.database = 'postgres'
machpay.port = 0
machpay.sse_port = 0
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
shared_buffers = 512MB
work_mem = 64MB
maintenance_work_mem = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
EOF
as_postgres "$BINDIR/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql() { as_postgres "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$PORT" -d postgres "$@"; }

psql -c "SET client_min_messages = warning; CREATE EXTENSION machpay_receiver CASCADE"

echo "rollup_bench: generating $GATEWAYS gateways x $SERIES_PER_GATEWAY series, 14 days every $BACKGROUND_STEP + one hour every minute"
start=$(date +%s)
psql <<EOF
INSERT INTO machpay.metric_series (entity_id, metric_name, labels)
SELECT 'gw' || lpad(g::text, 5, '0'), 'metric.' || (m % 40),
       CASE WHEN m < 40 THEN '{}'::jsonb ELSE jsonb_build_object('route', '/r' || (m / 40)) END
  FROM generate_series(1, $GATEWAYS) g, generate_series(0, $SERIES_PER_GATEWAY - 1) m;
CREATE TABLE bench_target AS SELECT date_trunc('hour', now()) - interval '26 hours' AS h;
DO \$\$
DECLARE
    d0 timestamptz := date_trunc('day', now()) - interval '14 days';
    h  timestamptz := (SELECT h FROM bench_target);
BEGIN
    FOR i IN 0 .. 14 LOOP
        INSERT INTO machpay.metric_points (time, series_id, value)
        SELECT t, s.series_id, (s.series_id % 997) + extract(epoch FROM t) / 1e6
          FROM generate_series(d0 + i * interval '1 day', d0 + (i + 1) * interval '1 day' - interval '1 microsecond',
                               interval '$BACKGROUND_STEP') t,
               machpay.metric_series s
         WHERE t < now() - interval '1 hour' AND NOT (t >= h AND t < h + interval '1 hour')
         ORDER BY t;
        IF d0 + i * interval '1 day' = date_trunc('day', h) THEN
            INSERT INTO machpay.metric_points (time, series_id, value)
            SELECT h + k * interval '1 minute' + (s.series_id % 60) * interval '1 second',
                   s.series_id, (s.series_id * 31 + k) % 1000 / 7.0
              FROM generate_series(0, 59) k, machpay.metric_series s
             ORDER BY 1;
        END IF;
        COMMIT;
    END LOOP;
END
\$\$;
VACUUM ANALYZE machpay.metric_points;
VACUUM ANALYZE machpay.metric_series;
CREATE TABLE bare_1h (bucket timestamptz, entity_id text, metric_name text, labels jsonb,
                      samples bigint, sum float8, min float8, max float8, last float8);
EOF
echo "rollup_bench: generated in $(( $(date +%s) - start )) s"
psql -At -c "SELECT 'rollup_bench: raw points ' || (SELECT count(*) FROM machpay.metric_points) ||
                    ', in the hour ' || (SELECT count(*) FROM machpay.metric_points, bench_target
                                          WHERE time >= h AND time < h + interval '1 hour') ||
                    ', on disk ' || pg_size_pretty((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
                                                    WHERE inhparent = 'machpay.metric_points'::regclass))"

# One timed statement; prints milliseconds.
timed() {
  psql -At <<EOF | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
$1
\\timing on
$2
EOF
}

rollup_prep="DELETE FROM machpay.stats_1h WHERE bucket = (SELECT h FROM bench_target);
INSERT INTO machpay.rollup_invalidations (bucket) SELECT h FROM bench_target ON CONFLICT DO NOTHING;
CHECKPOINT;"
rollup_sql="SELECT machpay.run_rollup();"
bare_prep="TRUNCATE bare_1h; CHECKPOINT;"
# The hour as a literal, so the bare query's plan prunes partitions as the
# rollup's parameterised statement does.
h=$(psql -At -c "SELECT h FROM bench_target")
bare_sql="INSERT INTO bare_1h
SELECT date_trunc('hour', time), entity_id, metric_name, labels,
       count(*), sum(value), min(value), max(value), machpay.last(value, time)
  FROM machpay.metrics
 WHERE time >= '$h' AND time < timestamptz '$h' + interval '1 hour'
 GROUP BY 1, 2, 3, 4;"

# For reference, the cheapest possible form: points only, grouped by
# series_id, no dictionary join (not the same result: no entity/labels).
byid_sql="INSERT INTO bare_1h (bucket, entity_id, samples, sum, min, max, last)
SELECT date_trunc('hour', time), series_id::text,
       count(*), sum(value), min(value), max(value), machpay.last(value, time)
  FROM machpay.metric_points
 WHERE time >= '$h' AND time < timestamptz '$h' + interval '1 hour'
 GROUP BY 1, 2;"

timed "$bare_prep" "$bare_sql" >/dev/null
timed "$rollup_prep" "$rollup_sql" >/dev/null
rollups=(); bares=(); byids=()
for i in $(seq 1 "$RUNS"); do
  byids+=("$(timed "$bare_prep" "$byid_sql")")
  bares+=("$(timed "$bare_prep" "$bare_sql")")
  rollups+=("$(timed "$rollup_prep" "$rollup_sql")")
done
psql -At -c "SELECT 'rollup_bench: stats rows ' || count(*) || ', bare rows ' || (SELECT count(*) FROM bare_1h) ||
                    ', differing ' || (SELECT count(*) FROM bare_1h b FULL JOIN machpay.stats_1h s
                                         USING (bucket, entity_id, metric_name, labels)
                                        WHERE (b.samples, b.min, b.max, b.last)
                                              IS DISTINCT FROM (s.samples, s.min, s.max, s.last)
                                           OR abs(b.sum - s.sum) > 1e-9 * greatest(abs(s.sum), 1))
               FROM machpay.stats_1h"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
r=$(median "${rollups[@]}"); b=$(median "${bares[@]}")
echo "rollup_bench: run_rollup() ms: ${rollups[*]}  (median $r)"
echo "rollup_bench: bare INSERT ... SELECT ... GROUP BY ms: ${bares[*]}  (median $b)"
echo "rollup_bench: reference, points only grouped by series_id ms: ${byids[*]}  (median $(median "${byids[@]}"))"
awk -v r="$r" -v b="$b" 'BEGIN { printf "rollup_bench: ratio %.2fx (goal <= 1.5x)\n", r / b }'
