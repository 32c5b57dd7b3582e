-- Dry runs of the event mapper (src/ingest/preview_sql.c): one row per row an ingest
-- of the payload would produce, plus one row per rejected event (kind
-- 'error', detail {"code", "message"}); no table is written.
-- include_rejects adds the dead-letter rows (kind 'reject'); bound_entity
-- plays the entity of the caller's ingest key.
CREATE FUNCTION machpay.ingest_preview(payload jsonb,
                                       include_rejects boolean DEFAULT false,
                                       bound_entity text DEFAULT NULL)
RETURNS TABLE (event_index int, kind text, "time" timestamptz,
               entity_id text, name text, labels jsonb, value float8,
               detail jsonb)
AS 'MODULE_PATHNAME', 'machpay_ingest_preview'
LANGUAGE C STABLE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION machpay.ingest_preview(jsonb, boolean, text) IS
    'rows and per-event errors that machpay.ingest() would produce for payload, without storing anything';

-- The same for a body as POST /v1/ingest receives it: JSON text, or NDJSON.
CREATE FUNCTION machpay.ingest_preview_text(body text,
                                            ndjson boolean DEFAULT false,
                                            include_rejects boolean DEFAULT false,
                                            bound_entity text DEFAULT NULL)
RETURNS TABLE (event_index int, kind text, "time" timestamptz,
               entity_id text, name text, labels jsonb, value float8,
               detail jsonb)
AS 'MODULE_PATHNAME', 'machpay_ingest_preview_text'
LANGUAGE C STABLE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION machpay.ingest_preview_text(text, boolean, boolean, text) IS
    'rows and per-event errors that POST /v1/ingest would produce for a JSON or NDJSON body, without storing anything';
