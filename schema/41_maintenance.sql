-- Jobs of the maintenance worker (SPEC §1, §6): the hourly rollup of raw
-- metrics into stats_1h and partition maintenance by retention_policies.
--
-- The set-based work lives here (rollup and partition decisions are SQL);
-- scheduling, retries, job_runs bookkeeping, the advisory lock and the
-- NOTIFY are in C (src/jobs/jobs.c, src/jobs/maintenance.c).  A *job* is rollup or
-- maintenance, a *run* one execution of it.

CREATE SCHEMA machpay_archive;
COMMENT ON SCHEMA machpay_archive IS
    'Expired payment_intents partitions, detached, when machpay.archive_directory is empty';

-- Every partition archived by maintenance: where it went and what range it
-- held.  Copies kept in schema machpay_archive are dropped once the range
-- passes the table's retention.
CREATE TABLE machpay.archived_partitions (
    partition    text PRIMARY KEY,           -- schema-qualified name it had
    parent_table text NOT NULL,
    range_start  timestamptz NOT NULL,
    range_end    timestamptz NOT NULL,
    rows         bigint,
    location     text NOT NULL,              -- file path, or machpay_archive.<name>
    sha256       text,                       -- of the .csv.gz file
    archived_at  timestamptz NOT NULL DEFAULT now(),
    dropped_at   timestamptz                 -- the machpay_archive copy, past retention
);
-- Rows written at run time: pg_dump must carry them.
SELECT pg_catalog.pg_extension_config_dump('machpay.archived_partitions', '');

-- Everything before the watermark was rolled up by an argument-less run,
-- except the hours that still have a mark in rollup_invalidations.  NULL:
-- nothing rolled up yet.  Maintenance never drops raw metrics past it.
CREATE TABLE machpay.rollup_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    watermark  timestamptz,
    updated_at timestamptz
);
INSERT INTO machpay.rollup_state (singleton) VALUES (true);

-- A rollup reads one hour of one daily partition; points arrive in time
-- order, so a BRIN index lets it read that hour's pages, not the whole day,
-- for a negligible insert cost.
CREATE INDEX metric_points_time_brin ON machpay.metric_points USING brin (time)
    WITH (pages_per_range = 32);

-- last(value, time): the value at the latest time; at equal times the
-- larger value wins, so the result does not depend on scan order.
CREATE FUNCTION machpay._last_transfn(internal, float8, timestamptz) RETURNS internal
AS 'MODULE_PATHNAME', 'machpay_last_transfn' LANGUAGE C IMMUTABLE;
CREATE FUNCTION machpay._last_finalfn(internal) RETURNS float8
AS 'MODULE_PATHNAME', 'machpay_last_finalfn' LANGUAGE C IMMUTABLE;
CREATE AGGREGATE machpay.last(float8, timestamptz) (
    SFUNC = machpay._last_transfn,
    STYPE = internal,
    FINALFUNC = machpay._last_finalfn
);
COMMENT ON AGGREGATE machpay.last(float8, timestamptz) IS
    'Value at the latest time; ties go to the larger value';

-- Upsert the hourly stats of [p_from, p_to) in one statement.  The sum is
-- taken in numeric and rounded once: a float8 sum depends on the order rows
-- are read in, and a re-roll of the same rows must give the same stats.  Aggregating
-- by series_id first and joining the dictionary after keeps the join to one
-- row per series.  Unchanged rows are not rewritten, so a re-run is cheap
-- and returns 0.
CREATE FUNCTION machpay._rollup_range(p_from timestamptz, p_to timestamptz) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
BEGIN
    INSERT INTO machpay.stats_1h AS t
           (bucket, entity_id, metric_name, labels, samples, sum, min, max, last)
    SELECT a.bucket, s.entity_id, s.metric_name, s.labels, a.samples, a.sum, a.min, a.max, a.last
      FROM (SELECT date_trunc('hour', p.time) AS bucket, p.series_id,
                   count(*) AS samples, sum(p.value::numeric)::float8 AS sum, min(p.value) AS min,
                   max(p.value) AS max, machpay.last(p.value, p.time) AS last
              FROM machpay.metric_points p
             WHERE p.time >= p_from AND p.time < p_to
             GROUP BY 1, 2) a
      JOIN machpay.metric_series s USING (series_id)
    ON CONFLICT ON CONSTRAINT stats_1h_key DO UPDATE
       SET samples = EXCLUDED.samples, sum = EXCLUDED.sum, min = EXCLUDED.min,
           max = EXCLUDED.max, last = EXCLUDED.last
     WHERE (t.samples, t.sum, t.min, t.max, t.last)
           IS DISTINCT FROM (EXCLUDED.samples, EXCLUDED.sum, EXCLUDED.min, EXCLUDED.max, EXCLUDED.last);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- The rollup job.  With a range: recompute the closed hours whose start is
-- in [date_trunc('hour', p_from), p_to).  Without: the closed hours marked
-- in rollup_invalidations, so the cost follows the new data.
--
-- The marks are locked and deleted before the points are read: a writer
-- adding rows to a marked hour upserts the mark in its own transaction, so
-- it either committed before our lock (its rows are visible to the next
-- statement's snapshot: READ COMMITTED) or it waits for our commit and
-- re-inserts the mark for the next run.  Either way no row is missed.
-- Marks are locked in bucket order; a writer that upserts several marks in
-- one transaction should do so in bucket order too, so the two never
-- deadlock.  Returns the number of stats_1h rows inserted or changed.
CREATE FUNCTION machpay._rollup(p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL,
                                p_now timestamptz DEFAULT now()) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_closed timestamptz := date_trunc('hour', p_now);   -- hours before this are closed
    v_from   timestamptz;
    v_to     timestamptz;
    v_bucket timestamptz;
    v_marks  timestamptz[];
    n        bigint := 0;
BEGIN
    IF p_from IS NOT NULL OR p_to IS NOT NULL THEN
        v_from := date_trunc('hour', coalesce(p_from, '-infinity'));
        v_to := least(coalesce(p_to, v_closed), v_closed);
        IF v_to > v_from THEN
            v_marks := ARRAY(SELECT bucket FROM machpay.rollup_invalidations
                              WHERE bucket >= v_from AND bucket < v_to ORDER BY bucket FOR UPDATE);
            DELETE FROM machpay.rollup_invalidations WHERE bucket = ANY (v_marks);
            n := machpay._rollup_range(v_from, v_to);
        END IF;
        RETURN n;
    END IF;

    v_marks := ARRAY(SELECT bucket FROM machpay.rollup_invalidations
                      WHERE bucket < v_closed ORDER BY bucket FOR UPDATE);
    DELETE FROM machpay.rollup_invalidations WHERE bucket = ANY (v_marks);
    FOREACH v_bucket IN ARRAY v_marks LOOP
        n := n + machpay._rollup_range(v_bucket, v_bucket + interval '1 hour');
    END LOOP;
    UPDATE machpay.rollup_state
       SET watermark = greatest(coalesce(watermark, '-infinity'), v_closed), updated_at = p_now;
    RETURN n;
END
$$;

-- Series no point refers to: every one (the prune's candidates, read
-- without the lock) and, under the lock, those of the candidates that are
-- removed.  One probe of the points' (series_id, time) index per series,
-- whatever the planner's statistics: nobody analyzes the partitioned
-- parent, and without its statistics the planner hashes all of
-- metric_points for the anti join, every run, in memory and temporary
-- files that grow with the table (a maintenance worker's resident memory
-- stays at its largest hash).  No JIT: the estimate of thousands of
-- probes passes jit_above_cost, and compiling every run costs more time
-- and memory than the probes.  Functions of their own, so that these
-- settings hold for these two statements only; in PL/pgSQL, whose plans
-- are made again when partitions come and go (a SQL function keeps its
-- plans for the whole transaction, and two runs may share one).
CREATE FUNCTION machpay._series_without_points() RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off
SET enable_bitmapscan = off SET jit = off AS $$
BEGIN
    RETURN ARRAY(SELECT s.series_id FROM machpay.metric_series s
                  WHERE NOT EXISTS (SELECT 1 FROM machpay.metric_points p WHERE p.series_id = s.series_id));
END
$$;

CREATE FUNCTION machpay._prune_series(p_candidates bigint[]) RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off
SET enable_bitmapscan = off SET jit = off AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM machpay.metric_series s
     WHERE s.series_id = ANY (p_candidates)
       AND NOT EXISTS (SELECT 1 FROM machpay.metric_points p WHERE p.series_id = s.series_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
REVOKE ALL ON FUNCTION machpay._series_without_points() FROM PUBLIC;
REVOKE ALL ON FUNCTION machpay._prune_series(bigint[]) FROM PUBLIC;

-- Partition maintenance as if the time were p_now; one row per action.
-- Creation goes through pg_partman (create_partition_time, 4.x and 5.x
-- forms); expired children are dropped directly, because each one needs a
-- decision of its own (rollup state, archive) that drop_partition_time
-- cannot make.  p_archive_directory: '' or NULL moves expired intents to
-- schema machpay_archive.
-- In UTC, like the install script (_create_parent): partition names and
-- bounds follow the session's time zone.  As the owner: it drops, detaches
-- and archives partitions, which the maintenance worker (machpay_worker)
-- may not do by itself.
CREATE FUNCTION machpay._maintenance(p_now timestamptz, p_dry_run boolean, p_archive_directory text)
RETURNS TABLE(action text, parent_table text, partition text, detail text)
LANGUAGE plpgsql SECURITY DEFINER SET TimeZone = 'UTC'
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ps       text := machpay._partman_schema();
    v_major    int := machpay._partman_major();
    v_dry      text := CASE WHEN p_dry_run THEN ' (dry run)' ELSE '' END;
    v_metrics_retention interval;
    v_watermark timestamptz;
    pol        record;
    ch         record;
    v_parent   text;
    v_premake  int;
    v_interval interval;
    v_back     timestamptz;
    v_ahead    timestamptz;
    v_t        timestamptz;
    v_name     record;
    v_times    timestamptz[];
    v_names    text[];
    v_start    timestamptz;
    v_end      timestamptz;
    v_marks    bigint;
    v_arch     record;
    v_has_rows boolean;
    v_lock_timeout text;
    v_pruned   bigint;
    v_mpol     record;
    v_leaving  boolean := false;
    v_gone     bigint[] := '{}';
    i          int;
BEGIN
    -- Series are pruned at the end (below), under SHARE ROW EXCLUSIVE: no
    -- batch may use a series id while it is removed.  Taken first, before
    -- any partition lock, in the order writers take them (series_cache.c):
    -- metric_series, then the points.  A writer holding it for long (an
    -- open transaction that called ingest()) fails the run after 1 s, and
    -- the run is retried, rather than stalling every flush behind it.
    -- Only a run with series to prune takes it: every flush that creates
    -- a series waits while it is held, and most runs only create
    -- partitions ahead.  Series to prune are those whose points are gone
    -- already (a DBA's DELETE; found here without the lock, checked again
    -- under it) and those of the partitions of metric_points that leave in
    -- this run (drop, archive, move).
    -- Files are written as the owner: only where the server's setting says,
    -- unless a superuser calls this directly (tests, a DBA's export).
    IF coalesce(p_archive_directory, '') <> coalesce(current_setting('machpay.archive_directory', true), '')
       AND NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user) THEN
        RAISE EXCEPTION 'archive directory "%" is not machpay.archive_directory', p_archive_directory
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT p_dry_run THEN
        SELECT retention, archive_after INTO v_mpol FROM machpay.retention_policies WHERE table_name = 'metrics';
        EXECUTE format('SELECT partition_interval::interval FROM %I.part_config WHERE parent_table = $1', v_ps)
           INTO v_interval USING 'machpay.metric_points';
        IF v_interval IS NOT NULL AND v_mpol.retention IS NOT NULL THEN
            -- The oldest partition decides: ASC order, first row only.
            FOR ch IN EXECUTE format('SELECT partition_schemaname AS s, partition_tablename AS t FROM %I.show_partitions($1, ''ASC'') LIMIT 1', v_ps)
                      USING 'machpay.metric_points' LOOP
                EXECUTE format('SELECT child_end_time FROM %I.show_partition_info($1, $2, $3)', v_ps)
                   INTO v_end USING ch.s || '.' || ch.t, v_interval::text, 'machpay.metric_points';
                v_leaving := v_end <= p_now - least(v_mpol.archive_after, v_mpol.retention);
            END LOOP;
        END IF;
    END IF;
    IF NOT p_dry_run THEN
        v_gone := machpay._series_without_points();
    END IF;
    IF NOT p_dry_run AND (v_leaving OR cardinality(v_gone) > 0) THEN
        v_lock_timeout := current_setting('lock_timeout');
        PERFORM set_config('lock_timeout', '1s', true);
        LOCK TABLE machpay.metric_series IN SHARE ROW EXCLUSIVE MODE;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
    END IF;
    SELECT retention INTO v_metrics_retention FROM machpay.retention_policies WHERE table_name = 'metrics';
    SELECT watermark INTO v_watermark FROM machpay.rollup_state;

    FOR pol IN SELECT * FROM machpay.retention_policies ORDER BY table_name LOOP
        v_parent := CASE pol.table_name WHEN 'metrics' THEN 'machpay.metric_points'
                                        ELSE 'machpay.' || pol.table_name END;
        EXECUTE format('SELECT premake, partition_interval::interval FROM %I.part_config WHERE parent_table = $1', v_ps)
           INTO v_premake, v_interval USING v_parent;
        IF v_interval IS NULL THEN
            action := 'skip'; parent_table := v_parent; partition := NULL;
            detail := 'not managed by pg_partman';
            RETURN NEXT;
            CONTINUE;
        END IF;

        -- Create: ahead by premake, and back as far as rows may still be
        -- accepted.  Intents are stamped on receipt (nothing older arrives);
        -- stats_1h only receives hours whose raw metrics still exist.
        v_ahead := p_now + v_premake * v_interval;
        v_back := CASE pol.table_name
                    WHEN 'payment_intents' THEN p_now
                    WHEN 'stats_1h' THEN p_now - least(pol.retention, coalesce(v_metrics_retention, pol.retention))
                    ELSE p_now - pol.retention END;
        v_times := '{}'; v_names := '{}';
        v_t := v_back;
        WHILE v_t <= v_ahead LOOP
            EXECUTE format('SELECT * FROM %I.show_partition_name($1, $2)', v_ps)
               INTO v_name USING v_parent, v_t::text;
            -- Skip a partition that would be expired as soon as created.
            IF NOT v_name.table_exists AND v_name.suffix_timestamp + v_interval > p_now - pol.retention THEN
                v_times := v_times || v_name.suffix_timestamp;
                v_names := v_names || (v_name.partition_schema || '.' || v_name.partition_table);
            END IF;
            v_t := v_name.suffix_timestamp + v_interval;
        END LOOP;
        IF cardinality(v_times) > 0 AND NOT p_dry_run THEN
            -- Through _isolated_execute: pg_partman sets search_path for
            -- the session, which must not outlive this call.
            IF v_major >= 5 THEN
                PERFORM machpay._isolated_execute(
                    format('SELECT %I.create_partition_time(p_parent_table := $1, p_partition_times := $2::timestamptz[])', v_ps),
                    ARRAY[v_parent, v_times::text]);
            ELSE
                PERFORM machpay._isolated_execute(
                    format('SELECT %I.create_partition_time(p_parent_table := $1, p_partition_times := $2::timestamptz[], p_analyze := false)', v_ps),
                    ARRAY[v_parent, v_times::text]);
            END IF;
        END IF;
        FOR i IN 1 .. cardinality(v_times) LOOP
            action := 'create'; parent_table := v_parent; partition := v_names[i];
            detail := format('from %s', v_times[i]) || v_dry;
            RETURN NEXT;
        END LOOP;

        -- Expire.
        FOR ch IN EXECUTE format('SELECT partition_schemaname AS s, partition_tablename AS t FROM %I.show_partitions($1, ''ASC'')', v_ps)
                  USING v_parent LOOP
            EXECUTE format('SELECT child_start_time, child_end_time FROM %I.show_partition_info($1, $2, $3)', v_ps)
               INTO v_start, v_end USING ch.s || '.' || ch.t, v_interval::text, v_parent;
            parent_table := v_parent;
            partition := ch.s || '.' || ch.t;

            IF pol.archive_after IS NOT NULL AND v_end <= p_now - pol.archive_after THEN
                IF NOT p_dry_run THEN
                    IF v_parent = 'machpay.metric_points' THEN
                        EXECUTE format('SELECT $1 || coalesce(array_agg(DISTINCT series_id), ''{}'') FROM %I.%I', ch.s, ch.t)
                           INTO v_gone USING v_gone;
                    END IF;
                    PERFORM machpay._release_member(partition);
                END IF;
                IF coalesce(p_archive_directory, '') <> '' THEN
                    action := 'archive';
                    IF p_dry_run THEN
                        detail := format('to %s/%s.csv.gz', p_archive_directory, ch.t) || v_dry;
                    ELSE
                        SELECT * INTO v_arch FROM machpay._archive_partition(partition::regclass, p_archive_directory);
                        EXECUTE format('DROP TABLE %I.%I', ch.s, ch.t);
                        INSERT INTO machpay.archived_partitions AS a
                               (partition, parent_table, range_start, range_end, rows, location, sha256)
                        VALUES (partition, v_parent, v_start, v_end, v_arch.rows, v_arch.path, v_arch.sha256)
                        ON CONFLICT ON CONSTRAINT archived_partitions_pkey DO UPDATE
                           SET rows = EXCLUDED.rows, location = EXCLUDED.location, sha256 = EXCLUDED.sha256,
                               archived_at = now(), dropped_at = NULL;
                        detail := format('%s rows to %s, sha256 %s verified, dropped',
                                         v_arch.rows, v_arch.path, v_arch.sha256);
                    END IF;
                ELSE
                    action := 'move';
                    IF NOT p_dry_run THEN
                        EXECUTE format('ALTER TABLE %s DETACH PARTITION %I.%I', v_parent, ch.s, ch.t);
                        EXECUTE format('ALTER TABLE %I.%I SET SCHEMA machpay_archive', ch.s, ch.t);
                        INSERT INTO machpay.archived_partitions AS a
                               (partition, parent_table, range_start, range_end, location)
                        VALUES (partition, v_parent, v_start, v_end, format('machpay_archive.%I', ch.t))
                        ON CONFLICT ON CONSTRAINT archived_partitions_pkey DO UPDATE
                           SET location = EXCLUDED.location, archived_at = now(), dropped_at = NULL;
                    END IF;
                    detail := 'detached to schema machpay_archive' || v_dry;
                END IF;
                RETURN NEXT;
            ELSIF v_end <= p_now - pol.retention THEN
                IF pol.table_name = 'metrics' THEN
                    SELECT count(*) INTO v_marks FROM machpay.rollup_invalidations
                     WHERE bucket >= v_start AND bucket < v_end;
                    IF v_marks > 0 THEN
                        action := 'skip';
                        detail := format('not dropped: %s hours not rolled up yet (pending rollup marks)', v_marks);
                        RETURN NEXT;
                        CONTINUE;
                    END IF;
                    IF v_end > coalesce(v_watermark, '-infinity') THEN
                        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I)', ch.s, ch.t) INTO v_has_rows;
                        IF v_has_rows THEN
                            action := 'skip';
                            detail := format('not dropped: rows after the rollup watermark (%s)',
                                             coalesce(v_watermark::text, 'no rollup yet'));
                            RETURN NEXT;
                            CONTINUE;
                        END IF;
                    END IF;
                END IF;
                action := 'drop';
                IF NOT p_dry_run THEN
                    IF v_parent = 'machpay.metric_points' THEN
                        EXECUTE format('SELECT $1 || coalesce(array_agg(DISTINCT series_id), ''{}'') FROM %I.%I', ch.s, ch.t)
                           INTO v_gone USING v_gone;
                    END IF;
                    PERFORM machpay._release_member(partition);
                    EXECUTE format('DROP TABLE %I.%I', ch.s, ch.t);
                END IF;
                detail := format('ended %s, retention %s', v_end, pol.retention) || v_dry;
                RETURN NEXT;
            END IF;
        END LOOP;

        -- Copies in machpay_archive go when their range passes retention.
        FOR v_arch IN SELECT a.partition AS p, a.location AS l, a.range_end AS e
                        FROM machpay.archived_partitions a
                       WHERE a.parent_table = v_parent AND a.dropped_at IS NULL
                         AND a.location LIKE 'machpay\_archive.%' AND a.range_end <= p_now - pol.retention
                       ORDER BY a.range_end LOOP
            action := 'drop'; parent_table := v_parent; partition := v_arch.l;
            IF NOT p_dry_run THEN
                IF to_regclass(v_arch.l) IS NOT NULL THEN
                    EXECUTE format('DROP TABLE %s', v_arch.l);
                END IF;
                UPDATE machpay.archived_partitions SET dropped_at = now() WHERE archived_partitions.partition = v_arch.p;
            END IF;
            detail := format('archived copy ended %s, retention %s', v_arch.e, pol.retention) || v_dry;
            RETURN NEXT;
        END LOOP;
    END LOOP;

    -- Series that no point refers to any more go too: those found above
    -- and those of the partitions that left, one index probe each, so the
    -- lock is held for what is pruned, not for the size of metric_series.
    -- The statement trigger on metric_series tells the writers' caches at
    -- commit.
    IF NOT p_dry_run AND cardinality(v_gone) > 0 THEN
        v_pruned := machpay._prune_series(v_gone);
        IF v_pruned > 0 THEN
            action := 'prune'; parent_table := 'machpay.metric_series'; partition := NULL;
            detail := format('%s series without points removed', v_pruned);
            RETURN NEXT;
        END IF;
    END IF;
END
$$;

-- Partitions created by the install script are members of the extension;
-- they must leave it before they can be dropped or moved.
CREATE FUNCTION machpay._release_member(p_table text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_depend
                WHERE classid = 'pg_class'::regclass AND objid = p_table::regclass
                  AND refclassid = 'pg_extension'::regclass AND deptype = 'e') THEN
        EXECUTE format('ALTER EXTENSION machpay_receiver DROP TABLE %s', p_table);
    END IF;
END
$$;

-- Writes <dir>/<partition>.csv.gz and its .sha256, re-reads and verifies
-- both (archive.c).
CREATE FUNCTION machpay._archive_partition(p_partition regclass, p_directory text,
                                           OUT rows bigint, OUT sha256 text, OUT path text)
AS 'MODULE_PATHNAME', 'machpay_archive_partition' LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp;

-- SQL entry points of the jobs (jobs.c): advisory lock, job_runs, NOTIFY.
CREATE FUNCTION machpay.run_rollup(p_from timestamptz DEFAULT NULL, p_to timestamptz DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'machpay_run_rollup' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION machpay.run_rollup(timestamptz, timestamptz) IS
    'Roll raw metrics of closed hours up into stats_1h: a range, or the hours marked since the last run; returns rows written';

CREATE FUNCTION machpay.run_maintenance(p_now timestamptz DEFAULT now(), p_dry_run boolean DEFAULT false)
RETURNS TABLE(action text, parent_table text, partition text, detail text)
AS 'MODULE_PATHNAME', 'machpay_run_maintenance' LANGUAGE C VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION machpay.run_maintenance(timestamptz, boolean) IS
    'Create partitions ahead and drop/archive expired ones by retention_policies, as if the time were p_now';

-- The jobs drop tables and write server files.  run_rollup and
-- run_maintenance run as the extension owner so that machpay_admin may
-- call them (schema/90_privileges.sql); the helpers behind them are the
-- owner's only.  _archive_partition also checks pg_write_server_files
-- itself, since it takes a directory argument.
REVOKE ALL ON FUNCTION machpay._archive_partition(regclass, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION machpay._maintenance(timestamptz, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION machpay._rollup(timestamptz, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION machpay._release_member(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION machpay.run_rollup(timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION machpay.run_maintenance(timestamptz, boolean) FROM PUBLIC;

-- Failed runs with their errors, newest first.
CREATE VIEW machpay.job_errors AS
    SELECT run_id, job, started_at, finished_at, manual, sqlstate, error
      FROM machpay.job_runs WHERE status = 'failed' ORDER BY run_id DESC;
