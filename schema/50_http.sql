-- Ingest workers (src/common/auth.c): any change to the keys bumps a shared counter
-- so every worker reloads its key cache within a second.
CREATE FUNCTION machpay._auth_keys_changed() RETURNS trigger
AS 'MODULE_PATHNAME', 'machpay_auth_keys_changed'
LANGUAGE C;

CREATE TRIGGER ingest_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON machpay.ingest_keys
    FOR EACH STATEMENT EXECUTE FUNCTION machpay._auth_keys_changed();
