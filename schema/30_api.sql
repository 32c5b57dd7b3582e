-- SQL API of SPEC §6 owned by the writer: ingest and ingest keys.
-- The functions run as the extension owner (SECURITY DEFINER, fixed
-- search_path): granting EXECUTE on one of them is the whole permission,
-- without grants on the tables behind it.  PUBLIC gets none of them.

CREATE FUNCTION machpay.ingest(payload jsonb) RETURNS jsonb
AS 'MODULE_PATHNAME', 'machpay_ingest'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION machpay.ingest(jsonb) IS
    'Map, validate and store events (one object or an array) in the caller''s transaction; returns the HTTP response body';

-- The token is 'mpk_' and 64 hex digits; ingest_keys.token_sha256 is
-- sha256 of the token text.
CREATE FUNCTION machpay.create_ingest_key(entity_id text, role text DEFAULT 'ingest') RETURNS text
AS 'MODULE_PATHNAME', 'machpay_create_ingest_key'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION machpay.create_ingest_key(text, text) IS
    'New key for entity_id (''*'' = any) and role ingest|console; returns the token once, stores only its SHA-256';

CREATE FUNCTION machpay.revoke_ingest_key(token_or_id text) RETURNS boolean
AS 'MODULE_PATHNAME', 'machpay_revoke_ingest_key'
LANGUAGE C STRICT VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION machpay.revoke_ingest_key(text) IS
    'Revoke a key by its token or its key_id; true when a live key was revoked';

REVOKE EXECUTE ON FUNCTION machpay.ingest(jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION machpay.create_ingest_key(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION machpay.revoke_ingest_key(text) FROM PUBLIC;
