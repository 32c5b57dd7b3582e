-- A query for one entity and metric over a time range is served by indexes.
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

\set gw '7Yg4o8DqnMT3jQm1p9pYyHxhwQ6Lw3yYd4K2qF5m1Zxa'
-- Six hours of one gateway's reports, one a minute, through ingest ...
CREATE TEMP TABLE t AS SELECT extract(epoch FROM date_trunc('minute', now()))::bigint AS t0;
DO $$
DECLARE
    t0 bigint := (SELECT t0 FROM t);
BEGIN
    FOR b IN 0 .. 3 LOOP
        PERFORM machpay.ingest((SELECT jsonb_agg(jsonb_build_object(
                   'source', 'gateway', 'gateway_id', '7Yg4o8DqnMT3jQm1p9pYyHxhwQ6Lw3yYd4K2qF5m1Zxa',
                   'period_start', t0 - i * 60 - 60, 'period_end', t0 - i * 60,
                   'system', jsonb_build_object('cpu_usage_percent', i % 100, 'ram_usage_mb', 256)))
                FROM generate_series(b * 90, b * 90 + 89) i));
    END LOOP;
END
$$;
-- ... among the series of a thousand other entities.
INSERT INTO machpay.metric_series (entity_id, metric_name)
SELECT 'explain-other-' || e, m FROM generate_series(1, 1000) e,
       unnest(ARRAY['system.cpu_usage_percent', 'system.ram_usage_mb', 'network.bytes_in']) m;
-- Their points of the last hours share the partitions.
INSERT INTO machpay.metric_points (time, series_id, value)
SELECT to_timestamp(t.t0 - m * 60), s.series_id, m
  FROM machpay.metric_series s, generate_series(0, 59) m, t
 WHERE s.entity_id LIKE 'explain-other-%' AND s.metric_name = 'system.cpu_usage_percent';
ANALYZE machpay.metric_series;
ANALYZE machpay.metric_points;

-- Partition names carry dates and the range carries times: mask both.
CREATE FUNCTION pg_temp.plan(q text) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    line text;
BEGIN
    FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
        line := regexp_replace(line, '_p\d[\d_]*\d', '_pDATE', 'g');
        line := regexp_replace(line, '''[^'']*''::timestamp with time zone', '''TIME''', 'g');
        RETURN NEXT line;
    END LOOP;
END
$$;
-- One whole hour: always inside one daily partition.  The planner picks
-- these indexes by itself (as a plain or a bitmap index scan, depending on
-- the statistics of the shared test database): fix the scan kind so the
-- output is stable.
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT pg_temp.plan(format(
    'SELECT time, value FROM machpay.metrics WHERE entity_id = %L AND metric_name = %L AND time >= %L AND time < %L',
    :'gw', 'system.cpu_usage_percent',
    date_trunc('hour', now()) - interval '2 hours', date_trunc('hour', now()) - interval '1 hour'));
RESET enable_seqscan;
RESET enable_bitmapscan;
SELECT count(*) AS points FROM machpay.metrics
 WHERE entity_id = :'gw' AND metric_name = 'system.cpu_usage_percent'
   AND time >= date_trunc('hour', now()) - interval '2 hours' AND time < date_trunc('hour', now()) - interval '1 hour';
