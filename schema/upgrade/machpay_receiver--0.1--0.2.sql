-- machpay_receiver 0.1 -> 0.2: ALTER EXTENSION machpay_receiver UPDATE.
--
-- How schema changes are made (see also README, "Upgrades"):
--   * schema/NN_*.sql is the install script of the version being developed
--     (default_version in machpay_receiver.control): a fresh install runs
--     it whole.  Change it there, so a fresh install gets the change.
--   * This file brings a database installed at 0.1 to the same state: add
--     the same change here too, as statements that apply to a 0.1 schema
--     with data in it (ALTER TABLE ... ADD COLUMN, CREATE OR REPLACE
--     FUNCTION, GRANT/REVOKE, new roles guarded by IF NOT EXISTS, ...).
--     Hand-written, in the order the changes were made.
--   * test/t/090_extension_upgrade.pl installs every released version
--     (schema/released/), loads data, updates, and checks that the catalog
--     equals a fresh install's and the data is still there: a change made
--     in one place only fails it.
-- When 0.2 is released: freeze its install script
-- (make machpay_receiver--0.2.sql && cp machpay_receiver--0.2.sql schema/released/),
-- set default_version = '0.3', and start machpay_receiver--0.2--0.3.sql.

\echo Use "ALTER EXTENSION machpay_receiver UPDATE" to load this file. \quit

-- notify_event: from plpgsql to the signing publisher in C
-- (src/common/notify.c); publishing is no longer granted to PUBLIC.
CREATE OR REPLACE FUNCTION machpay.notify_event(payload jsonb) RETURNS integer
LANGUAGE C VOLATILE
AS 'MODULE_PATHNAME', 'machpay_notify_event';
COMMENT ON FUNCTION machpay.notify_event(jsonb) IS
    'Publish an event on machpay_events for the SSE relay; signed; payloads too large for one notification are sent in parts the relay reassembles.';
REVOKE ALL ON FUNCTION machpay.notify_event(jsonb) FROM PUBLIC;

-- Hardening (privileges and the workers' role, search_path, key
-- revocation at commit, series pruning and limit).

-- Every function that runs SQL gets a fixed search_path.
ALTER FUNCTION machpay._partman_schema() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay._partman_major() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay._stat_counters() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.ingest(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.create_ingest_key(text, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.revoke_ingest_key(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.ingest_preview(jsonb, boolean, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.ingest_preview_text(text, boolean, boolean, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.flush() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.buffer_ingest(jsonb) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.buffer_status() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay._rollup_range(timestamptz, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay._rollup(timestamptz, timestamptz, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay._release_member(text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay._archive_partition(regclass, text) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.run_rollup(timestamptz, timestamptz) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.run_maintenance(timestamptz, boolean) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay._auth_keys_changed() SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION machpay.notify_event(jsonb) SET search_path = pg_catalog, pg_temp;

-- Manual jobs run as the extension owner, for machpay_admin.
ALTER FUNCTION machpay.run_rollup(timestamptz, timestamptz) SECURITY DEFINER;
ALTER FUNCTION machpay.run_maintenance(timestamptz, boolean) SECURITY DEFINER;

-- pg_partman's session-level search_path kept inside (isolated_exec.c).
CREATE FUNCTION machpay._isolated_execute(p_sql text, p_args text[]) RETURNS void
AS 'MODULE_PATHNAME', 'machpay_isolated_execute'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE OR REPLACE FUNCTION machpay._create_parent(p_parent text, p_control text, p_interval interval,
                                       p_premake int, p_start timestamptz) RETURNS void
LANGUAGE plpgsql SET TimeZone = 'UTC'
SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s text := machpay._partman_schema();
    v_args text[] := ARRAY[p_parent, p_control, p_interval::text, p_premake::text, p_start::text];
BEGIN
    IF machpay._partman_major() >= 5 THEN
        PERFORM machpay._isolated_execute(format('SELECT %I.create_parent(p_parent_table := $1, p_control := $2, p_interval := $3,
                            p_type := ''range'', p_premake := $4::int, p_start_partition := $5,
                            p_automatic_maintenance := ''off'')', s), v_args);
    ELSE
        PERFORM machpay._isolated_execute(format('SELECT %I.create_parent(p_parent_table := $1, p_control := $2, p_type := ''native'',
                            p_interval := $3, p_premake := $4::int, p_start_partition := $5,
                            p_automatic_maintenance := ''off'', p_jobmon := false)', s), v_args);
    END IF;
END
$$;


-- Maintenance: as the owner, partman calls isolated, series pruned after the drops.
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

CREATE OR REPLACE FUNCTION machpay._maintenance(p_now timestamptz, p_dry_run boolean, p_archive_directory text)
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


-- Key changes reach the workers at commit, also under
-- session_replication_role = replica.
ALTER TABLE machpay.ingest_keys ENABLE ALWAYS TRIGGER ingest_keys_changed;

-- Removing series makes the writers' caches start over.
CREATE FUNCTION machpay._series_removed() RETURNS trigger
AS 'MODULE_PATHNAME', 'machpay_series_removed'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;
CREATE TRIGGER metric_series_removed
    AFTER DELETE OR TRUNCATE ON machpay.metric_series
    FOR EACH STATEMENT EXECUTE FUNCTION machpay._series_removed();
ALTER TABLE machpay.metric_series ENABLE ALWAYS TRIGGER metric_series_removed;

-- Privileges (schema/90_privileges.sql).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['machpay_reader', 'machpay_writer', 'machpay_admin', 'machpay_worker'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;

-- Functions are executable by PUBLIC when created: take that back from
-- every one, aggregates included.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA machpay FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA machpay FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA machpay FROM PUBLIC;
REVOKE ALL ON SCHEMA machpay FROM PUBLIC;
REVOKE ALL ON SCHEMA machpay_archive FROM PUBLIC;

GRANT USAGE ON SCHEMA machpay TO machpay_reader, machpay_writer, machpay_admin;

-- Reader: the data and the gauges.  Not ingest_keys.
GRANT SELECT ON machpay.metrics, machpay.metric_series, machpay.metric_points,
                machpay.stats_1h, machpay.payment_intents, machpay.payment_intent_keys,
                machpay.debug_logs, machpay.users, machpay.vendor_profiles,
                machpay.retention_policies, machpay.ingest_rejects, machpay.job_runs,
                machpay.job_errors, machpay.stat_receiver, machpay.archived_partitions,
                machpay.rollup_state, machpay.rollup_invalidations
   TO machpay_reader;
GRANT EXECUTE ON FUNCTION machpay._stat_counters(),
                          machpay.buffer_status(),
                          machpay.ingest_preview(jsonb, boolean, text),
                          machpay.ingest_preview_text(text, boolean, boolean, text),
                          machpay.last(float8, timestamptz)
   TO machpay_reader;

-- Writer: the ingest paths.  buffer_ingest() and the previews run as the
-- caller and read retention_policies (the mapper's time limits).
GRANT EXECUTE ON FUNCTION machpay.ingest(jsonb),
                          machpay.buffer_ingest(jsonb),
                          machpay.flush(),
                          machpay.ingest_preview(jsonb, boolean, text),
                          machpay.ingest_preview_text(text, boolean, boolean, text)
   TO machpay_writer;
GRANT SELECT ON machpay.retention_policies TO machpay_writer;

-- Admin: both, plus what changes who may send what and where money goes.
GRANT machpay_reader, machpay_writer TO machpay_admin;
GRANT EXECUTE ON FUNCTION machpay.create_ingest_key(text, text),
                          machpay.revoke_ingest_key(text),
                          machpay.run_rollup(timestamptz, timestamptz),
                          machpay.run_maintenance(timestamptz, boolean),
                          machpay.notify_event(jsonb)
   TO machpay_admin;
GRANT SELECT (key_id, entity_id, role, created_at, revoked_at) ON machpay.ingest_keys TO machpay_admin;
GRANT UPDATE (revoked_at) ON machpay.ingest_keys TO machpay_admin;
GRANT INSERT, UPDATE, DELETE ON machpay.users, machpay.vendor_profiles TO machpay_admin;
GRANT UPDATE (retention, archive_after) ON machpay.retention_policies TO machpay_admin;

-- Worker: a flush (series, points, logs, dead letters, intents and their
-- keys, vendor config, rollup marks), the key caches, the mapper's
-- retentions, the jobs' bookkeeping and the rollup.  It owns nothing and
-- drops nothing: maintenance goes through _maintenance (SECURITY DEFINER).
GRANT USAGE ON SCHEMA machpay TO machpay_worker;
GRANT SELECT ON machpay.ingest_keys, machpay.retention_policies, machpay.users,
                machpay.metric_series, machpay.metric_points, machpay.rollup_state
   TO machpay_worker;
GRANT SELECT, INSERT ON machpay.metric_series, machpay.metric_points, machpay.debug_logs,
                        machpay.ingest_rejects, machpay.payment_intents,
                        machpay.payment_intent_keys
   TO machpay_worker;
GRANT SELECT, INSERT, UPDATE ON machpay.vendor_profiles, machpay.stats_1h TO machpay_worker;
GRANT UPDATE ON machpay.rollup_state TO machpay_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON machpay.rollup_invalidations, machpay.job_runs TO machpay_worker;
GRANT EXECUTE ON FUNCTION machpay._rollup(timestamptz, timestamptz, timestamptz),
                          machpay._rollup_range(timestamptz, timestamptz),
                          machpay.last(float8, timestamptz),
                          machpay._maintenance(timestamptz, boolean, text)
   TO machpay_worker;

-- pg_partman is called only when its schema is safe (partman_guard.c):
-- its schema comes from a guard in C.  An installed database whose
-- pg_partman schema is not safe still updates, with a warning; every
-- maintenance run is refused until it is made safe.
CREATE OR REPLACE FUNCTION machpay._partman_schema() RETURNS text
AS 'MODULE_PATHNAME', 'machpay_partman_schema'
LANGUAGE C STABLE
SET search_path = pg_catalog, pg_temp;
DO $$
DECLARE
    v_msg text;
    v_detail text;
    v_hint text;
BEGIN
    PERFORM machpay._partman_schema();
EXCEPTION WHEN insufficient_privilege THEN
    GET STACKED DIAGNOSTICS v_msg = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
    RAISE WARNING '%', v_msg USING DETAIL = v_detail, HINT = v_hint;
END
$$;
