-- What is accepted must be storable, and one request's cost is capped.
-- (1) Numbers in a log's "fields" that jsonb (numeric) cannot hold are a
-- per-event invalid_type, at the exact edges of numeric's range; those
-- accepted do become jsonb (the preview builds it).  (2) The caps per
-- request (machpay.max_events_per_request, max_rows_per_request,
-- max_rejects_per_request) refuse the whole request and stop reading it.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE;
RESET client_min_messages;

CREATE FUNCTION pg_temp.log_with(fields text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT format('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": %s, "level": "info", "message": "m", "fields": %s}',
                extract(epoch FROM now())::bigint, fields) $$;

-- (1) each number alone in fields: accepted (a log row) or its error
SELECT n, p.kind, p.name,
       CASE WHEN p.kind = 'log' THEN length(p.detail->'fields'->>'v')
            ELSE NULL END AS stored_text_length
FROM unnest(ARRAY['1e131071', '9.9e131071', '1e131072', '1e999999', '-1e999999',
                  '1000e131069', '0.001e131074', '0.001e131075',
                  '1e-16383', '1e-16384', '1.5e-16382', '1.5e-16383',
                  '0e999999', '0e-16384', '0.0e1073741824', '1e-1073741824',
                  '123456789012345678901234567890', '-0.5E+3']) WITH ORDINALITY AS u(n, o),
     LATERAL machpay.ingest_preview_text(pg_temp.log_with('{"v": ' || n || '}')) p
ORDER BY o;

-- the message names the number; nested and in arrays too; the last of
-- duplicate "fields" keys is the one judged (it is the one jsonb keeps)
SELECT kind, detail->>'message' AS message
FROM machpay.ingest_preview_text(pg_temp.log_with('{"a": {"b": [1, 2, 1e200000]}}'));
SELECT kind FROM machpay.ingest_preview_text(
  replace(pg_temp.log_with('{"v": 1e999999}'), '"fields"', '"fields": {"v": 1}, "fields"'));
SELECT kind FROM machpay.ingest_preview_text(
  replace(pg_temp.log_with('{"v": 1}'), '"fields"', '"fields": {"v": 1e999999}, "fields"'));

-- beside good events in one request: only the poisoned one is rejected
SELECT event_index, kind, name FROM machpay.ingest_preview_text('[' || pg_temp.log_with('{"v": 2}')
  || ',' || pg_temp.log_with('{"v": 1e999999}') || ',' || pg_temp.log_with('{"v": 3}') || ']');

-- metric values out of float8's range stay invalid_type
SELECT kind, detail->>'message' AS message FROM machpay.ingest_preview_text(format(
  '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": %s, "system": {"cpu": 1e309}}',
  extract(epoch FROM now())::bigint));

-- (2) the caps, at their defaults: 1000 rejects are answered per event,
-- the 1001st refuses the request (422) and the rest is not read
SELECT count(*) FILTER (WHERE kind = 'error') AS errors
FROM machpay.ingest_preview_text((SELECT string_agg('1', E'\n') FROM generate_series(1, 1000)), true);
SELECT count(*) FROM machpay.ingest_preview_text(
  (SELECT string_agg('1', E'\n') FROM generate_series(1, 4000000)), true);
-- 10,000 events are one request; 10,001 are too large (413)
SELECT count(*) FROM machpay.ingest_preview_text(
  (SELECT string_agg(pg_temp.log_with('{}'), E'\n') FROM generate_series(1, 10000)), true);
SELECT count(*) FROM machpay.ingest_preview_text(
  (SELECT '[' || string_agg(pg_temp.log_with('{}'), ',') || ']' FROM generate_series(1, 10001)));
-- through machpay.ingest(), nothing of a refused request is stored
SELECT machpay.ingest((SELECT jsonb_agg(1) FROM generate_series(1, 1001)));
SELECT count(*) FROM machpay.ingest_rejects;

-- the caps are settings (0 = no limit), applied on reload
ALTER SYSTEM SET machpay.max_rows_per_request = 3;
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SELECT count(*) FROM machpay.ingest_preview_text(
  (SELECT string_agg(pg_temp.log_with('{}'), E'\n') FROM generate_series(1, 4)), true);
ALTER SYSTEM SET machpay.max_rows_per_request = 0;
ALTER SYSTEM SET machpay.max_rejects_per_request = 0;
SELECT pg_reload_conf();
SELECT pg_sleep(0.2);
SELECT count(*) FROM machpay.ingest_preview_text(
  (SELECT string_agg(pg_temp.log_with('{}'), E'\n') FROM generate_series(1, 4)), true);
SELECT count(*) FROM machpay.ingest_preview_text((SELECT string_agg('1', E'\n') FROM generate_series(1, 5000)), true);
ALTER SYSTEM RESET machpay.max_rows_per_request;
ALTER SYSTEM RESET machpay.max_rejects_per_request;
SELECT pg_reload_conf();
