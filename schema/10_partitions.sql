-- Partitioning through pg_partman.  Debian 12 ships pg_partman 4.x, newer
-- systems 5.x, whose create_parent() takes other arguments: detect the
-- installed major version and call the matching form.

-- The schema of pg_partman, only when it is safe to call into (no role
-- but superusers may create or own objects there: partman_guard.c);
-- otherwise an error.  Every call into pg_partman takes its schema from
-- here, so an unsafe schema fails CREATE EXTENSION and every maintenance
-- run before pg_partman runs.
CREATE FUNCTION machpay._partman_schema() RETURNS text
AS 'MODULE_PATHNAME', 'machpay_partman_schema'
LANGUAGE C STABLE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION machpay._partman_major() RETURNS int
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp AS $$
    SELECT split_part(extversion, '.', 1)::int FROM pg_extension WHERE extname = 'pg_partman'
$$;

-- Register one partitioned table with pg_partman, partitions starting at
-- p_start and p_premake intervals ahead; pg_partman's own background
-- maintenance stays off: the machpay maintenance job drives it.
-- pg_partman names and bounds partitions in the session's time zone: the
-- install script and the maintenance job (which runs in the server's zone)
-- must agree, so both work in UTC.
-- A statement run by _isolated_execute leaves every setting as it found it
-- (pg_partman sets search_path for the session; see isolated_exec.c).
CREATE FUNCTION machpay._isolated_execute(p_sql text, p_args text[]) RETURNS void
AS 'MODULE_PATHNAME', 'machpay_isolated_execute'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE FUNCTION machpay._create_parent(p_parent text, p_control text, p_interval interval,
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

-- Partitions exist for the whole accepted time range (back to the
-- retention limit, ahead past max_clock_skew) so no accepted row ever lands
-- in a default partition.  Hourly logs premake two days: maintenance runs daily.
SELECT machpay._create_parent('machpay.metric_points', 'time', '1 day', 4,
                              date_trunc('day', now() - interval '15 days'));
SELECT machpay._create_parent('machpay.stats_1h', 'bucket', '1 month', 2,
                              date_trunc('month', now() - interval '15 days'));
SELECT machpay._create_parent('machpay.payment_intents', 'created_at', '1 month', 2,
                              date_trunc('month', now()));
SELECT machpay._create_parent('machpay.debug_logs', 'time', '1 hour', 48,
                              date_trunc('hour', now() - interval '73 hours'));
SELECT machpay._create_parent('machpay.ingest_rejects', 'time', '1 day', 4,
                              date_trunc('day', now() - interval '4 days'));
