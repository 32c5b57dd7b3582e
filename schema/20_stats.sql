-- Receiver counters (stats.c): the numbers behind /metrics.
CREATE FUNCTION machpay._stat_counters(OUT name text, OUT value bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'machpay_stat_counters'
LANGUAGE C STRICT VOLATILE
SET search_path = pg_catalog, pg_temp;

CREATE VIEW machpay.stat_receiver AS
    SELECT name, value FROM machpay._stat_counters();
