-- Privileges: nothing is granted to PUBLIC; three predefined roles carry
-- every right on the schema (README, "Privileges").
--
--   machpay_reader  reads the tables and views, previews a payload
--   machpay_writer  ingests: ingest(), buffer_ingest(), flush()
--   machpay_admin   both, plus keys, jobs, notify_event and the
--                   operator's tables (users, vendor_profiles,
--                   retention_policies, ingest_keys without tokens)
--   machpay_worker  what the background workers act as
--                   (machpay.worker_role): the writes of a flush, the
--                   keys, the rollup; partition maintenance only through
--                   _maintenance(), which runs as the owner
--
-- The roles are NOLOGIN groups: a DBA grants them to login roles.  They
-- are cluster-wide and survive DROP EXTENSION; a later CREATE EXTENSION
-- reuses them.  The last piece of the install script, so it sees every
-- object; sql/privileges.sql lists every grant so an object added without
-- a decision shows in its diff.

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
