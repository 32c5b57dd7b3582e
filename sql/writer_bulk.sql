-- The bulk writer's edges: buffers past 1000 rows, row triggers, a row
-- with no partition, the series cache across rollback and TRUNCATE.
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

\set gw '9vXbm4K7T2Y3yLrHq8wZpA1cJdN5sE6fGuVkBiMoQtRx'
CREATE TEMP TABLE t AS SELECT extract(epoch FROM date_trunc('second', now()))::bigint - 120 AS pe;
-- One gateway event with n numeric fields under "bulk".
CREATE FUNCTION pg_temp.event(gw text, n int, d int DEFAULT 0) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('source', 'gateway', 'gateway_id', gw,
           'period_start', pe + d - 60, 'period_end', pe + d,
           'bulk', (SELECT jsonb_object_agg('f' || i, i) FROM generate_series(1, n) i)) FROM t
$$;

-- 2500 rows of one event: several multi-insert flushes.
SELECT machpay.ingest(pg_temp.event(:'gw', 2500)) -> 'accepted' AS accepted;
SELECT count(*) AS rows, count(DISTINCT metric_name) AS names, sum(value) AS total
  FROM machpay.metrics WHERE entity_id = :'gw';

-- New series in a rolled-back transaction are not remembered: the next
-- call stores them again and the points still join their series.
BEGIN;
SELECT machpay.ingest(pg_temp.event(:'gw', 2600, 1)) -> 'accepted' AS accepted;
ROLLBACK;
SELECT machpay.ingest(pg_temp.event(:'gw', 2600, 2)) -> 'accepted' AS accepted;
SELECT count(*) AS orphan_points FROM machpay.metric_points p
 WHERE NOT EXISTS (SELECT 1 FROM machpay.metric_series s WHERE s.series_id = p.series_id);
SELECT count(*) AS rows FROM machpay.metrics WHERE entity_id = :'gw';

-- The same after a savepoint rolls back.
BEGIN;
SAVEPOINT s;
SELECT machpay.ingest(pg_temp.event(:'gw', 2700, 3)) -> 'accepted' AS accepted;
ROLLBACK TO SAVEPOINT s;
SELECT machpay.ingest(pg_temp.event(:'gw', 2700, 4)) -> 'accepted' AS accepted;
COMMIT;
SELECT count(*) AS orphan_points FROM machpay.metric_points p
 WHERE NOT EXISTS (SELECT 1 FROM machpay.metric_series s WHERE s.series_id = p.series_id);

-- TRUNCATE of the series dictionary: the cache notices (new relfilenode).
BEGIN;
TRUNCATE machpay.metric_series;
SELECT machpay.ingest(pg_temp.event(:'gw', 3, 5)) -> 'accepted' AS accepted;
SELECT count(*) AS rows_after_truncate FROM machpay.metrics WHERE entity_id = :'gw';
ROLLBACK;
SELECT machpay.ingest(pg_temp.event(:'gw', 3, 6)) -> 'accepted' AS accepted;
SELECT count(*) AS orphan_points FROM machpay.metric_points p
 WHERE NOT EXISTS (SELECT 1 FROM machpay.metric_series s WHERE s.series_id = p.series_id);

-- Row triggers: BEFORE ROW forces the one-by-one path, AFTER ROW fires
-- for multi-inserted rows too.
\set agent 'B3hT6nWqL9xKfRz2pYcV8mJdA4sE7gUoN1iQtXbHkMaC'
CREATE TEMP TABLE seen (message text);
CREATE FUNCTION pg_temp.shout() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.message := upper(NEW.message); RETURN NEW; END $$;
CREATE FUNCTION pg_temp.note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO seen VALUES (NEW.message); RETURN NULL; END $$;
BEGIN;
CREATE TRIGGER shout BEFORE INSERT ON machpay.debug_logs FOR EACH ROW EXECUTE FUNCTION pg_temp.shout();
SELECT machpay.ingest(jsonb_build_object('source', 'log', 'entity_id', :'agent', 'time', pe,
                                         'level', 'info', 'message', 'quiet')) -> 'accepted' AS accepted FROM t;
SELECT message FROM machpay.debug_logs WHERE entity_id = :'agent';
ROLLBACK;
BEGIN;
CREATE TRIGGER note AFTER INSERT ON machpay.debug_logs FOR EACH ROW EXECUTE FUNCTION pg_temp.note();
SELECT machpay.ingest((SELECT jsonb_agg(jsonb_build_object('source', 'log', 'entity_id', :'agent', 'time', pe,
                                         'level', 'info', 'message', 'm' || i))
                         FROM t, generate_series(1, 3) i)) -> 'accepted' AS accepted;
SELECT message FROM seen ORDER BY 1;
ROLLBACK;

-- A row that fits no partition is a clear error, and nothing is stored.
BEGIN;
DO $$
DECLARE
    r regclass;
BEGIN
    FOR r IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'machpay.debug_logs'::regclass LOOP
        EXECUTE format('ALTER TABLE machpay.debug_logs DETACH PARTITION %s', r);
    END LOOP;
END
$$;
DO $$
DECLARE
    msg text;
    ctx text;
BEGIN
    PERFORM machpay.ingest(jsonb_build_object('source', 'log', 'entity_id', 'B3hT6nWqL9xKfRz2pYcV8mJdA4sE7gUoN1iQtXbHkMaC',
                                              'time', pe, 'level', 'info', 'message', 'lost')) FROM t;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, ctx = PG_EXCEPTION_CONTEXT;
    RAISE NOTICE '% (%): %', msg, SQLSTATE, split_part(ctx, E'\n', 1);
END
$$;
ROLLBACK;
SELECT count(*) AS logs FROM machpay.debug_logs WHERE entity_id = :'agent';

-- A read-only transaction writes nothing.
BEGIN READ ONLY;
SELECT machpay.ingest(jsonb_build_object('source', 'log', 'entity_id', :'agent', 'time', pe,
                                         'level', 'info', 'message', 'read only')) FROM t;
ROLLBACK;
