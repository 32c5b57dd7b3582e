-- Network workers (src/common/auth.c): a change to the keys bumps a shared
-- counter when its transaction commits, so every worker reloads its key
-- cache at once and new requests and open streams see the change.
CREATE FUNCTION machpay._auth_keys_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'machpay_auth_keys_changed'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

CREATE TRIGGER ingest_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON machpay.ingest_keys
    FOR EACH STATEMENT EXECUTE FUNCTION machpay._auth_keys_changed();
-- Also under session_replication_role = replica (a restore, a subscriber).
ALTER TABLE machpay.ingest_keys ENABLE ALWAYS TRIGGER ingest_keys_changed;

-- Writers cache series ids (src/flusher/series_cache.c): removing series
-- (maintenance's prune, a DBA's DELETE) makes every cache start over once
-- that transaction commits.
CREATE FUNCTION machpay._series_removed() RETURNS trigger
AS 'MODULE_PATHNAME', 'machpay_series_removed'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

CREATE TRIGGER metric_series_removed
    AFTER DELETE OR TRUNCATE ON machpay.metric_series
    FOR EACH STATEMENT EXECUTE FUNCTION machpay._series_removed();
ALTER TABLE machpay.metric_series ENABLE ALWAYS TRIGGER metric_series_removed;
