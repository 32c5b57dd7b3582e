SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;
-- machpay.notify_event: one notification under NOTIFY's 8000-byte limit,
-- parts of 5000 bytes (base64) above it; NULL sends nothing.
SELECT machpay.notify_event('{"type":"job","job":"rollup","status":"succeeded"}');
SELECT machpay.notify_event(jsonb_build_object('type', 'big', 'blob', repeat('x', 7950)));
SELECT machpay.notify_event(jsonb_build_object('type', 'big', 'blob', repeat('x', 8000)));
SELECT machpay.notify_event(jsonb_build_object('type', 'big', 'blob', repeat('é', 20000)));
SELECT machpay.notify_event(NULL);
-- Every part fits under the limit, whatever the payload.
SELECT max(octet_length(json_build_object('type', repeat('t', 200), 'part', 99999, 'parts', 99999,
           'ref', gen_random_uuid()::text,
           'chunk', translate(encode(convert_to(repeat('é', 2500), 'UTF8'), 'base64'), E'\n', ''))::text)) < 8000
       AS parts_fit;
-- The sizes on the wire, reassembled: parts decode back to the payload.
WITH p AS (SELECT jsonb_build_object('type', 'big', 'blob', repeat('é✓', 9000))::text AS txt),
     parts AS (
       SELECT i, translate(encode(substring(convert_to(txt, 'UTF8') FROM (i - 1) * 5000 + 1 FOR 5000), 'base64'), E'\n', '') AS chunk
       FROM p, generate_series(1, ceil(octet_length(convert_to(txt, 'UTF8')) / 5000.0)::int) i)
SELECT convert_from(string_agg(decode(chunk, 'base64'), ''::bytea ORDER BY i), 'UTF8') = (SELECT txt FROM p) AS roundtrip
FROM parts;
