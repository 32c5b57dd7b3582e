SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;
-- Partition maintenance with explicit p_now.  Every scenario runs in a
-- transaction that is rolled back, so the partitions other files rely on
-- stay as installed; each starts by emptying the partitioned tables (rolled
-- back too) so rows other files left do not change its outcome.  Outputs
-- are counts and booleans, never dates.
-- Partitions are bounded in UTC days, hours and months.
SET TimeZone = 'UTC';
CREATE FUNCTION pg_temp.empty() RETURNS void LANGUAGE sql AS $$
    TRUNCATE machpay.metric_points, machpay.metric_series, machpay.rollup_invalidations, machpay.payment_intents,
             machpay.debug_logs, machpay.ingest_rejects
$$;
CREATE TEMP TABLE d AS SELECT date_trunc('day', now()) AS d0, date_trunc('month', now()) AS m0;
-- pg_partman is in schema public here (CREATE EXTENSION ... CASCADE).
-- Whether the partition of parent holding ts exists (and is attached).
CREATE FUNCTION pg_temp.has_part(parent text, ts timestamptz) RETURNS boolean
LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM show_partitions(parent) sp,
                                 show_partition_name(parent, ts::text) n
                    WHERE sp.partition_tablename = n.partition_table)
$$;

-- 1. Twenty days ahead: partitions are made ahead (premake) and back to the
-- retention limit, expired ones dropped; a second run has nothing to do.
BEGIN;
SELECT pg_temp.empty();
SELECT action, parent_table, count(*) > 0 AS some
  FROM machpay.run_maintenance(now() + interval '20 days') GROUP BY 1, 2 ORDER BY 1, 2;
SELECT c.parent_table,
       pg_temp.has_part(c.parent_table, now() + interval '20 days') AS at_now,
       pg_temp.has_part(c.parent_table, now() + interval '20 days' + c.premake * c.partition_interval::interval
                                       - interval '1 second') AS ahead
  FROM part_config c WHERE c.parent_table LIKE 'machpay.%' ORDER BY 1;
SELECT pg_temp.has_part('machpay.metric_points', now() + interval '20 days' - interval '13 days') AS metrics_13_days_back,
       pg_temp.has_part('machpay.metric_points', now() + interval '20 days' - interval '15 days') AS metrics_15_days_back,
       pg_temp.has_part('machpay.debug_logs', now() + interval '20 days' - interval '71 hours') AS logs_71_hours_back,
       pg_temp.has_part('machpay.debug_logs', now() + interval '20 days' - interval '73 hours') AS logs_73_hours_back;
SELECT count(*) AS second_run_actions FROM machpay.run_maintenance(now() + interval '20 days');
SELECT job, status, manual, rows > 0 AS some_rows FROM machpay.job_runs
 WHERE job = 'maintenance' ORDER BY run_id DESC LIMIT 2;
ROLLBACK;

-- 2. The right age, none too early: at d0 + 14 days the partition of day
-- d0 - 1 (ending d0) is exactly 14 days old and goes; one microsecond
-- earlier it stays, and day d0 stays in both.
BEGIN;
SELECT pg_temp.empty();
SELECT count(*) FILTER (WHERE action = 'drop' AND parent_table = 'machpay.metric_points'
                          AND partition = (SELECT 'machpay.' || partition_table FROM show_partition_name('machpay.metric_points', (d0 - interval '1 day')::text)))
       AS drops_day_before
  FROM machpay.run_maintenance((SELECT d0 FROM d) + interval '14 days' - interval '1 microsecond'), d;
SELECT pg_temp.has_part('machpay.metric_points', d0 - interval '1 day') AS day_before_kept FROM d;
SELECT count(*) FILTER (WHERE action = 'drop' AND parent_table = 'machpay.metric_points') AS drops
  FROM machpay.run_maintenance((SELECT d0 FROM d) + interval '14 days');
SELECT pg_temp.has_part('machpay.metric_points', d0 - interval '1 day') AS day_before_kept,
       pg_temp.has_part('machpay.metric_points', d0) AS day_kept FROM d;
ROLLBACK;

-- 3. Raw metrics that are not rolled up are never dropped.
BEGIN;
SELECT pg_temp.empty();
INSERT INTO machpay.metric_series (entity_id, metric_name) VALUES ('maint-e1', 'cpu');
INSERT INTO machpay.metric_points (time, series_id, value)
SELECT d0 - interval '1 day' + interval '5 hours', series_id, 42 FROM d, machpay.metric_series
 WHERE entity_id = 'maint-e1';
INSERT INTO machpay.rollup_invalidations (bucket) SELECT d0 - interval '1 day' + interval '5 hours' FROM d
    ON CONFLICT (bucket) DO UPDATE SET version = machpay.rollup_invalidations.version + 1;
-- a pending mark
SELECT action, detail FROM machpay.run_maintenance((SELECT d0 FROM d) + interval '14 days')
 WHERE partition = (SELECT 'machpay.' || partition_table
                      FROM d, show_partition_name('machpay.metric_points', (d0 - interval '1 day')::text));
-- no mark, but the rows lie after the rollup watermark
DELETE FROM machpay.rollup_invalidations WHERE bucket = (SELECT d0 - interval '1 day' + interval '5 hours' FROM d);
UPDATE machpay.rollup_state SET watermark = (SELECT d0 - interval '1 day' FROM d);
SELECT action, detail LIKE 'not dropped: rows after the rollup watermark%' AS after_watermark
  FROM machpay.run_maintenance((SELECT d0 FROM d) + interval '14 days')
 WHERE partition = (SELECT 'machpay.' || partition_table
                      FROM d, show_partition_name('machpay.metric_points', (d0 - interval '1 day')::text));
-- rolled up: now it goes, and its stats stay
INSERT INTO machpay.rollup_invalidations (bucket) SELECT d0 - interval '1 day' + interval '5 hours' FROM d;
SELECT machpay.run_rollup() > 0 AS rolled_up;
SELECT action FROM machpay.run_maintenance((SELECT d0 FROM d) + interval '14 days')
 WHERE partition = (SELECT 'machpay.' || partition_table
                      FROM d, show_partition_name('machpay.metric_points', (d0 - interval '1 day')::text));
SELECT samples, sum, last FROM machpay.stats_1h WHERE entity_id = 'maint-e1';
ROLLBACK;

-- 4. A DBA's UPDATE of retention_policies applies at the next run.
BEGIN;
SELECT pg_temp.empty();
-- A first run settles the partitions for that time (how many actions that
-- takes depends on the time of day); the default retention keeps the day
-- three days back.
DO $$ BEGIN PERFORM machpay.run_maintenance((SELECT d0 FROM d) + interval '12 hours'); END $$;
SELECT pg_temp.has_part('machpay.ingest_rejects', d0 - interval '3 days') AS day_3_back_kept FROM d;
SELECT count(*) AS more_drops FROM machpay.run_maintenance((SELECT d0 FROM d) + interval '12 hours')
 WHERE action = 'drop';
UPDATE machpay.retention_policies SET retention = '2 days' WHERE table_name = 'ingest_rejects';
SELECT action, partition = (SELECT 'machpay.' || partition_table
                              FROM show_partition_name('machpay.ingest_rejects', (d0 - interval '3 days')::text))
       AS the_day_3_days_back
  FROM machpay.run_maintenance((SELECT d0 FROM d) + interval '12 hours'), d;
ROLLBACK;

-- 5. Expired payment intents move to schema machpay_archive when no
-- archive directory is set.
BEGIN;
SELECT pg_temp.empty();
INSERT INTO machpay.payment_intents (id, gateway_id, agent_id, nonce, amount, token, signature, created_at)
VALUES ('00000000-0000-0000-0000-000000000001', 'maint-gw', 'maint-agent', 1, 100, 'tok', 'sig', now()),
       ('00000000-0000-0000-0000-000000000002', 'maint-gw', 'maint-agent', 2, 18446744073709551615, 'tok', 'sig, "quoted"', now());
CREATE TEMP TABLE cur AS
    SELECT partition_table FROM show_partition_name('machpay.payment_intents', now()::text);
SELECT action, detail FROM machpay.run_maintenance((SELECT m0 FROM d) + interval '13 months')
 WHERE parent_table = 'machpay.payment_intents' AND partition = (SELECT 'machpay.' || partition_table FROM cur);
SELECT c.relispartition, (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM machpay_archive.%I', partition_table), false, true, '')))[1]::text AS rows
  FROM cur JOIN pg_class c ON c.relname = partition_table
  JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'machpay_archive';
SELECT pg_temp.has_part('machpay.payment_intents', (SELECT m0 FROM d) + interval '1 month') AS next_month_attached;
SELECT location = 'machpay_archive.' || partition_table AS registered, range_start = m0 AS range_ok
  FROM machpay.archived_partitions, cur, d WHERE partition = 'machpay.' || partition_table;
-- five years after its end (retention) the archived copy goes too
SELECT action, partition = 'machpay_archive.' || partition_table AS archived_copy
  FROM machpay.run_maintenance((SELECT m0 FROM d) + interval '1 month' + interval '5 years'), cur
 WHERE parent_table = 'machpay.payment_intents' AND partition LIKE 'machpay\_archive.%';
SELECT to_regclass('machpay_archive.' || partition_table) IS NULL AS gone FROM cur;
ROLLBACK;

-- 6. With a directory they are exported as <partition>.csv.gz plus a
-- sha256sum line, verified, and dropped.  (machpay.archive_directory is a
-- server setting; the internal function takes it as an argument here.)
BEGIN;
SELECT pg_temp.empty();
INSERT INTO machpay.payment_intents (id, gateway_id, agent_id, nonce, amount, token, signature, created_at)
VALUES ('00000000-0000-0000-0000-000000000003', 'maint-gw', 'maint-agent', 3, 7, 'tok', 'sig', now());
CREATE TEMP TABLE arch AS
    SELECT current_setting('data_directory') || '/machpay_archive_regress' AS dir,
           partition_table
      FROM show_partition_name('machpay.payment_intents', now()::text);
CREATE TEMP TABLE res AS
    SELECT m.* FROM arch, machpay._maintenance((SELECT m0 FROM d) + interval '13 months', false, arch.dir) m
     WHERE m.parent_table = 'machpay.payment_intents';
SELECT action, detail LIKE format('1 rows to %s/%s.csv.gz, sha256 %% verified, dropped', dir, partition_table) AS detail_ok
  FROM res, arch WHERE partition = 'machpay.' || partition_table;
SELECT encode(sha256(pg_read_binary_file(format('%s/%s.csv.gz', dir, partition_table))), 'hex')
         || '  ' || partition_table || E'.csv.gz\n'
       = pg_read_file(format('%s/%s.csv.gz.sha256', dir, partition_table)) AS checksum_verified,
       pg_temp.has_part('machpay.payment_intents', now()) AS still_attached,
       to_regclass('machpay.' || partition_table) IS NULL AS dropped
  FROM arch;
SELECT rows, location = format('%s/%s.csv.gz', dir, partition_table) AS registered
  FROM machpay.archived_partitions, arch WHERE partition = 'machpay.' || partition_table;
ROLLBACK;

-- A dry run changes nothing and is not recorded.
CREATE TEMP TABLE runs AS SELECT count(*) AS n FROM machpay.job_runs;
SELECT count(*) > 0 AS would_act FROM machpay.run_maintenance(now() + interval '30 days', true);
SELECT pg_temp.has_part('machpay.metric_points', now() + interval '30 days') AS created,
       (SELECT count(*) FROM machpay.job_runs) - n AS new_runs FROM runs;
