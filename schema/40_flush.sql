-- The shared-memory buffer from SQL (src/buffer/buffer_sql.c, src/ingest/buffer_ingest_sql.c): flush it now, or ingest
-- through it ("asynchronous ingest": committed by the flusher, not by the
-- caller's transaction).

CREATE FUNCTION machpay.flush() RETURNS bigint
AS 'MODULE_PATHNAME', 'machpay_flush'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION machpay.flush() IS
    'Flush the shared-memory buffer now and wait for the commit; returns the rows written';

CREATE FUNCTION machpay.buffer_ingest(payload jsonb) RETURNS jsonb
AS 'MODULE_PATHNAME', 'machpay_buffer_ingest'
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION machpay.buffer_ingest(jsonb) IS
    'Like machpay.ingest(), but through the shared buffer and the flusher; returns after payment intents are committed';

CREATE FUNCTION machpay.buffer_status(OUT bytes_used bigint, OUT capacity bigint,
                                      OUT intents_waiting integer, OUT accepting boolean)
AS 'MODULE_PATHNAME', 'machpay_buffer_status'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION machpay.buffer_status() IS
    'Gauges of the shared-memory buffer: bytes in use, capacity, intents waiting for their commit, whether it accepts rows';
