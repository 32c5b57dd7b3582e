SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;
-- Rollup exactness, idempotence, late data, last = value at the latest time.
-- All times are relative to h0, on the hour nine days ago (where no other
-- file writes); entities are this file's own.
CREATE TEMP TABLE t AS SELECT date_trunc('hour', now()) - interval '9 days 6 hours' AS h0;
INSERT INTO machpay.metric_series (entity_id, metric_name, labels) VALUES
    ('rollup-e1', 'cpu', '{}'),
    ('rollup-e1', 'route.requests', '{"route":"/a","status":"200"}'),
    ('rollup-e2', 'cpu', '{}');
CREATE TEMP VIEW s AS
    SELECT series_id, entity_id, metric_name, labels FROM machpay.metric_series
     WHERE entity_id LIKE 'rollup-%';
-- e1/cpu, hour 0: 1, 4, 2.5, 7 at minutes 0, 10, 20, 59:59.999999; the last
-- is 7 even though it is inserted first.  Hour 1: 3 alone.
INSERT INTO machpay.metric_points (time, series_id, value)
SELECT h0 + m, series_id, v FROM t, s,
       (VALUES (interval '59 min 59.999999 s', 7.0), ('0 min', 1.0), ('10 min', 4.0), ('20 min', 2.5),
               ('1 hour 30 min', 3.0)) AS d(m, v)
 WHERE entity_id = 'rollup-e1' AND metric_name = 'cpu';
-- e1/route.requests, hour 0: two points at the same latest time (ties: the
-- larger value wins, whatever the order), one earlier.
INSERT INTO machpay.metric_points (time, series_id, value)
SELECT h0 + m, series_id, v FROM t, s,
       (VALUES (interval '30 min', 5.0), ('45 min', 10.0), ('45 min', -2.0), ('5 min', 100.0)) AS d(m, v)
 WHERE metric_name = 'route.requests';
-- e2/cpu: negative values, hour 0.
INSERT INTO machpay.metric_points (time, series_id, value)
SELECT h0 + m, series_id, v FROM t, s,
       (VALUES (interval '1 min', -1.5), ('2 min', -0.5)) AS d(m, v)
 WHERE entity_id = 'rollup-e2';

-- Hours 0 and 1, explicitly: e1/cpu twice, route once, e2 once.
SELECT machpay.run_rollup(h0, h0 + interval '2 hours') FROM t;
SELECT extract(epoch FROM st.bucket - h0)::int / 3600 AS hour, entity_id, metric_name, labels, samples, sum, min, max, last
  FROM machpay.stats_1h st, t
 WHERE entity_id LIKE 'rollup-%' ORDER BY 1, 2, 3;

-- Idempotent: the same range again changes nothing.
SELECT machpay.run_rollup(h0, h0 + interval '2 hours') FROM t;
SELECT count(*) FROM machpay.stats_1h WHERE entity_id LIKE 'rollup-%';

-- An open hour is never rolled up, even when asked for.
INSERT INTO machpay.metric_points (time, series_id, value)
SELECT date_trunc('hour', now()), series_id, 1 FROM s WHERE entity_id = 'rollup-e2';
SELECT machpay.run_rollup(date_trunc('hour', now()), now() + interval '1 hour');
SELECT count(*) FROM machpay.stats_1h st WHERE entity_id LIKE 'rollup-%' AND bucket >= date_trunc('hour', now());

-- Late data for hour 0, marked the way the writer marks it, is re-rolled by
-- an argument-less run; the mark is consumed.  The later point becomes last.
INSERT INTO machpay.metric_points (time, series_id, value)
SELECT h0 + interval '59 min 59.999999 s', series_id, 0.5 FROM t, s
 WHERE entity_id = 'rollup-e2';
INSERT INTO machpay.metric_points (time, series_id, value)
SELECT h0 + interval '3 min', series_id, 1.0 FROM t, s
 WHERE entity_id = 'rollup-e1' AND metric_name = 'cpu';
INSERT INTO machpay.rollup_invalidations (bucket) SELECT h0 FROM t
    ON CONFLICT (bucket) DO UPDATE SET version = machpay.rollup_invalidations.version + 1,
                                       marked_at = now();
SELECT machpay.run_rollup() >= 2 AS rerolled;
SELECT count(*) AS marks_left FROM machpay.rollup_invalidations, t WHERE bucket = h0;
SELECT extract(epoch FROM st.bucket - h0)::int / 3600 AS hour, entity_id, metric_name, samples, sum, min, max, last
  FROM machpay.stats_1h st, t
 WHERE entity_id LIKE 'rollup-%' AND metric_name = 'cpu' ORDER BY 1, 2;
SELECT watermark = date_trunc('hour', now()) AS watermark_at_current_hour FROM machpay.rollup_state;

-- A mark for the open hour stays for a later run.
INSERT INTO machpay.rollup_invalidations (bucket) VALUES (date_trunc('hour', now()))
    ON CONFLICT (bucket) DO NOTHING;
-- Every closed hour is rolled up already: the run finds nothing to do.
SELECT machpay.run_rollup() AS rows_rolled_up;
SELECT count(*) AS open_hour_mark_kept FROM machpay.rollup_invalidations WHERE bucket = date_trunc('hour', now());
DELETE FROM machpay.rollup_invalidations WHERE bucket = date_trunc('hour', now());

-- The stats agree with a plain aggregate over the machpay.metrics view.
SELECT count(*) AS mismatches
  FROM (SELECT date_trunc('hour', time) AS bucket, entity_id, metric_name, labels,
               count(*) AS samples, sum(value) AS sum, min(value) AS min, max(value) AS max
          FROM machpay.metrics, t
         WHERE entity_id LIKE 'rollup-%' AND time < h0 + interval '2 hours'
         GROUP BY 1, 2, 3, 4) m
  FULL JOIN (SELECT * FROM machpay.stats_1h WHERE entity_id LIKE 'rollup-%' AND bucket < date_trunc('hour', now())) st
       USING (bucket, entity_id, metric_name, labels)
 WHERE (m.samples, m.sum, m.min, m.max) IS DISTINCT FROM (st.samples, st.sum, st.min, st.max);

-- Each manual run is recorded (its NOTIFY is checked in test/t/030_maintenance.pl).
SELECT machpay.run_rollup(h0, h0 + interval '1 hour') FROM t;
SELECT job, status, manual, rows FROM machpay.job_runs WHERE job = 'rollup' ORDER BY run_id DESC LIMIT 1;

-- The aggregate on its own: ties go to the larger value, NULLs are ignored.
SELECT machpay.last(v, ts) FROM (VALUES (1.0::float8, '2024-01-01 00:00+00'::timestamptz),
                                         (3.0, '2024-01-01 00:01+00'), (2.0, '2024-01-01 00:01+00'),
                                         (NULL, '2024-01-01 00:02+00')) AS x(v, ts);
SELECT machpay.last(v, ts) FROM (VALUES (1.0::float8, NULL::timestamptz)) AS x(v, ts);

-- A manual run holds the job's advisory lock (the tag of
-- pg_advisory_lock(1835098984, 0); maintenance is 1) until its transaction
-- ends: the worker skips its run meanwhile, another manual run waits.
BEGIN;
SELECT machpay.run_rollup(h0, h0 + interval '1 hour') FROM t;
SELECT classid, objid, objsubid, mode FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
ROLLBACK;
