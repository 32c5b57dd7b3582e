-- Metric series: a per-entity limit on new series, series removed with the
-- last partition that held their points, and writers' caches that start
-- over when series are removed.
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

\set gw 'HG3a8ztWhHHPeUFjf1XhkB4f5HwhUqYoyqyfkVD1w1RF'
\set other 'J1yoaErCNfgQyMDDCUyj5dRWRPRAk5wGVd2bx2DMGEWe'
CREATE TEMP TABLE t AS SELECT extract(epoch FROM date_trunc('second', now()))::bigint - 30 AS pe;
-- A gateway report with n numeric fields under "custom": n series.
CREATE FUNCTION pg_temp.report(entity text, n int, first int DEFAULT 1) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('source', 'gateway', 'gateway_id', entity,
                              'period_start', pe - 60, 'period_end', pe,
                              'custom', (SELECT jsonb_object_agg('m' || lpad(i::text, 3, '0'), i)
                                           FROM generate_series(first, first + n - 1) i))
      FROM t
$$;
CREATE TEMP TABLE c0 AS SELECT value FROM machpay.stat_receiver WHERE name = 'rows_dropped_series_limit';
CREATE TEMP TABLE c1 AS SELECT value FROM machpay.stat_receiver WHERE name = 'events_rejected_series_limit';

-- 1. The limit (a server setting): 5 series per entity, decided when an
-- event is admitted (the shared series registry), before it is answered:
-- an event whose new series would take its entity past the limit is
-- rejected whole (too_large), nothing of it stored; nothing is dropped at
-- flush time any more.
ALTER SYSTEM SET machpay.max_series_per_entity = 5;
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SHOW machpay.max_series_per_entity;

-- 8 new series: the event is rejected, no series, no point.
SELECT machpay.ingest(pg_temp.report(:'gw', 8)) AS answer;
SELECT count(*) AS series FROM machpay.metric_series WHERE entity_id = :'gw';
-- 5 fit.
SELECT machpay.ingest(pg_temp.report(:'gw', 5)) AS answer;
SELECT string_agg(metric_name, ',' ORDER BY metric_name) AS stored FROM machpay.metrics WHERE entity_id = :'gw';
-- One request: a report of the known series, one with a 6th series, another
-- entity's: only the second event is rejected, the others are stored.
SELECT machpay.ingest(jsonb_build_array(pg_temp.report(:'gw', 5), pg_temp.report(:'gw', 1, 6),
                                        pg_temp.report(:'other', 4))) AS answer;
SELECT count(*) AS points, count(DISTINCT series_id) AS series
  FROM machpay.metric_points WHERE series_id IN (SELECT series_id FROM machpay.metric_series WHERE entity_id = :'gw');
SELECT count(*) AS other_series FROM machpay.metric_series WHERE entity_id = :'other';
-- The same admission through the buffer (buffer_ingest, as over HTTP).
SELECT machpay.buffer_ingest(pg_temp.report(:'gw', 2, 6)) AS answer;
SELECT machpay.flush() >= 0 AS flushed;
SELECT count(*) AS series FROM machpay.metric_series WHERE entity_id = :'gw';
-- Rejected events leave dead letters; no row was dropped after an answer.
SELECT reason, message, excerpt FROM machpay.ingest_rejects WHERE excerpt = :'gw' ORDER BY message;
SELECT s.value - c0.value AS rows_dropped FROM machpay.stat_receiver s, c0 WHERE s.name = 'rows_dropped_series_limit';
SELECT s.value - c1.value AS events_rejected FROM machpay.stat_receiver s, c1 WHERE s.name = 'events_rejected_series_limit';

-- 0 lifts the limit; the refused series are created on the next report.
ALTER SYSTEM SET machpay.max_series_per_entity = 0;
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SELECT machpay.ingest(pg_temp.report(:'gw', 8)) -> 'accepted' AS accepted;
SELECT count(*) AS series FROM machpay.metric_series WHERE entity_id = :'gw';
ALTER SYSTEM RESET machpay.max_series_per_entity;
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SHOW machpay.max_series_per_entity;

-- 2. Series removed while this session's cache holds their ids (a DBA's
-- DELETE here; maintenance's prune is the same statement): the next batch
-- must not reuse a removed id, or its points would join no series.
DELETE FROM machpay.metric_points WHERE series_id IN
    (SELECT series_id FROM machpay.metric_series WHERE entity_id = :'gw' AND metric_name = 'custom.m001');
DELETE FROM machpay.metric_series WHERE entity_id = :'gw' AND metric_name = 'custom.m001';
SELECT machpay.ingest(pg_temp.report(:'gw', 1)) -> 'accepted' AS accepted;
SELECT count(*) AS m001_points_visible FROM machpay.metrics WHERE entity_id = :'gw' AND metric_name = 'custom.m001';
SELECT count(*) AS orphan_points FROM machpay.metric_points p
 WHERE NOT EXISTS (SELECT 1 FROM machpay.metric_series s WHERE s.series_id = p.series_id);

-- Removed series give their room back at once: the registry is reloaded
-- after the removal commits (maintenance's prune fires the same trigger).
ALTER SYSTEM SET machpay.max_series_per_entity = 8;
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SELECT count(*) AS series FROM machpay.metric_series WHERE entity_id = :'gw';
SELECT machpay.ingest(pg_temp.report(:'gw', 1, 9)) -> 'rejected' AS rejected;
DELETE FROM machpay.metric_points WHERE series_id IN
    (SELECT series_id FROM machpay.metric_series WHERE entity_id = :'gw' AND metric_name = 'custom.m008');
DELETE FROM machpay.metric_series WHERE entity_id = :'gw' AND metric_name = 'custom.m008';
SELECT machpay.ingest(pg_temp.report(:'gw', 1, 9)) -> 'accepted' AS accepted;
SELECT string_agg(metric_name, ',' ORDER BY metric_name) AS series FROM machpay.metric_series WHERE entity_id = :'gw';
ALTER SYSTEM RESET machpay.max_series_per_entity;
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);

-- 3. Maintenance removes the series whose last points went with the
-- dropped partitions (rolled back: later files need today's partitions).
BEGIN;
SET LOCAL client_min_messages = warning;
-- Rolled up first: maintenance keeps raw points the rollup has not seen.
SELECT machpay._rollup(NULL, NULL, now() + interval '20 days') >= 0 AS rolled_up;
SELECT action, parent_table, detail ~ '^\d+ series without points removed$' AS detail_ok
  FROM machpay.run_maintenance(now() + interval '20 days') WHERE action = 'prune';
SELECT count(*) AS series_left FROM machpay.metric_series WHERE entity_id IN (:'gw', :'other');
SELECT count(*) AS series_locked FROM pg_locks
 WHERE relation = 'machpay.metric_series'::regclass AND pid = pg_backend_pid() AND mode = 'ShareRowExclusiveLock';
ROLLBACK;
-- 4. A run in which no partition of metric_points leaves and no series lost
-- its points never locks metric_series (flushes that create series would wait
-- behind it: every maintenance_interval under load).
BEGIN;
SET LOCAL client_min_messages = warning;
UPDATE machpay.retention_policies SET retention = '30 days', archive_after = NULL WHERE table_name = 'metrics';
DELETE FROM machpay.metric_series s
 WHERE NOT EXISTS (SELECT 1 FROM machpay.metric_points p WHERE p.series_id = s.series_id);
SELECT count(*) FILTER (WHERE parent_table = 'machpay.metric_points' AND action <> 'create') AS points_left
  FROM machpay.run_maintenance(now());
SELECT count(*) AS series_locked FROM pg_locks
 WHERE relation = 'machpay.metric_series'::regclass AND pid = pg_backend_pid() AND mode = 'ShareRowExclusiveLock';
ROLLBACK;
-- A dry run removes nothing.
SELECT count(*) AS prune_rows FROM machpay.run_maintenance(now() + interval '20 days', true) WHERE action = 'prune';
SELECT count(*) > 0 AS series_kept FROM machpay.metric_series WHERE entity_id = :'gw';
