-- Per-event validation (SPEC §4): every error code with a bad event beside
-- good ones (the bad one yields no row at all, the good ones theirs), and
-- the request-wide limits.  Through machpay.ingest_preview, nothing stored.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE;
RESET client_min_messages;

-- Now-relative unix seconds: "@end" now, "@start" a minute ago, "@future"
-- an hour ahead, "@soon" within the clock skew, "@old" 15 days ago,
-- "@logold" 4 days ago, "@recent" 2 days ago.
CREATE FUNCTION pg_temp.ev(j text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT replace(replace(replace(replace(replace(replace(replace(j,
    '"@end"', e::text), '"@start"', (e - 60)::text),
    '"@future"', (e + 3600)::text), '"@soon"', (e + 200)::text),
    '"@old"', (e - 15 * 86400)::text), '"@logold"', (e - 4 * 86400)::text),
    '"@recent"', (e - 2 * 86400)::text)
  FROM (SELECT extract(epoch FROM now())::bigint AS e) s $$;

-- One good gateway event (one row) and one good log event (one row), to
-- stand beside each bad event.
CREATE FUNCTION pg_temp.good_gw() RETURNS text LANGUAGE sql AS $$
  SELECT '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "system": {"ok": 1}}' $$;
CREATE FUNCTION pg_temp.good_log() RETURNS text LANGUAGE sql AS $$
  SELECT '{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "info", "message": "ok"}' $$;

-- preview of [good_gw, bad, good_log]: every row, errors included
CREATE FUNCTION pg_temp.check(bad text, bound text DEFAULT NULL)
RETURNS TABLE (event_index int, kind text, name text, detail jsonb)
LANGUAGE sql AS $$
  SELECT event_index, kind, name,
         CASE WHEN kind IN ('error', 'reject') THEN detail ELSE NULL END
    FROM machpay.ingest_preview(pg_temp.ev('[' || pg_temp.good_gw() || ',' || bad
                                           || ',' || pg_temp.good_log() || ']')::jsonb,
                                false, bound) $$;

-- unknown_source, and a source that is missing or no string
SELECT * FROM pg_temp.check('{"source": "printer", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "system": {"x": 1}}');
SELECT * FROM pg_temp.check('{"gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end"}');
SELECT * FROM pg_temp.check('{"source": ["gateway"], "period_end": "@end"}');

-- invalid_entity_id: not base58, 31 bytes, 33 bytes, empty; signature of 32 bytes
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "0OIl", "period_end": "@end", "system": {"x": 1}}');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "1111111111111111111111111111111", "period_end": "@end", "wallet": {"x": 1}}');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "period_end": "@end", "wallet": {"x": 1}}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "", "time": "@end", "level": "info", "message": "m"}');
SELECT * FROM pg_temp.check('{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "signature": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "nonce": 1, "amount": 1}');
-- the 32 zero bytes in base58 are 32 ones: valid
SELECT count(*) FROM machpay.ingest_preview(pg_temp.ev('{"source": "sdk", "agent_id": "11111111111111111111111111111111", "period_end": "@end", "wallet": {"x": 1}}')::jsonb) WHERE kind = 'metric';

-- missing_field: each required field of each source (null counts as missing)
SELECT * FROM pg_temp.check('{"source": "gateway", "period_end": "@end"}');
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "system": {"x": 1}}');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": null, "period_end": "@end"}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "info"}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "level": "info", "message": "m"}');
SELECT * FROM pg_temp.check('{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt", "amount": 1}');
SELECT * FROM pg_temp.check('{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "nonce": 1, "amount": 1}');

-- invalid_type: an event that is no object, ids and times of the wrong
-- type, config/fields not objects, a bad level, a config string field
-- that is a number, a value beyond float8
SELECT * FROM pg_temp.check('42');
SELECT * FROM pg_temp.check('[{"source": "gateway"}]');
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": 7, "period_end": "@end"}');
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "soon"}');
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_start": "x", "period_end": "@end"}');
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "config": "v1"}');
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "config": {"version": 2}}');
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "system": {"x": 1e400}}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "fatal", "message": "m"}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "info", "message": 5}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "info", "message": "m", "fields": [1]}');

-- time_out_of_range: period_end before period_start, beyond the clock
-- skew, older than the metrics retention (14 days); logs older than their
-- retention (3 days) or ahead; within the skew and within retention is fine
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_start": "@end", "period_end": "@start"}');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_end": "@future"}');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_end": "@old"}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@logold", "level": "info", "message": "m"}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@future", "level": "info", "message": "m"}');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_start": "@recent", "period_end": "@soon", "wallet": {"x": 1}}');
SELECT * FROM pg_temp.check('{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@recent", "level": "debug", "message": "m"}');
-- the retention follows machpay.retention_policies
BEGIN;
UPDATE machpay.retention_policies SET retention = '20 days' WHERE table_name = 'metrics';
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_end": "@old", "wallet": {"x": 1}}');
ROLLBACK;

-- invalid_amount (more in mapping_u64)
SELECT * FROM pg_temp.check('{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt", "nonce": -1, "amount": 1}');
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "config": {"price_per_unit": 1.5}}');

-- too_large: a label value over 256 UTF-8 bytes (route, vendor, error)
SELECT * FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "business": {"routes": {"' || repeat('r', 257) || '": {"200": 1}}}}');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_end": "@end", "interactions": {"' || repeat('é', 128) || 'v": {"attempts": 1}}}');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_end": "@end", "interactions": {"v": {"errors": {"' || repeat('e', 257) || '": 1}}}}');
-- 256 bytes are fine, in ASCII or two-byte characters
SELECT name, octet_length(labels->>'route') AS route_bytes, octet_length(labels->>'vendor') AS vendor_bytes
  FROM machpay.ingest_preview(pg_temp.ev('[{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "business": {"routes": {"' || repeat('r', 256) || '": {"200": 1}}}},
  {"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_end": "@end", "interactions": {"' || repeat('é', 128) || '": {"attempts": 1}}}]')::jsonb)
  ORDER BY event_index;

-- too_large: a metric name over 1024 bytes (it is a btree key of the
-- series); 1024 bytes are fine
SELECT event_index, kind, detail->>'code' AS code FROM pg_temp.check('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "s": {"' || repeat('n', 1023) || '": 1}}');
SELECT length(name) FROM machpay.ingest_preview(pg_temp.ev('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "s": {"' || repeat('n', 1022) || '": 1}}')::jsonb);

-- too_large: 10,000 rows from one event are fine, 10,001 are not
SELECT kind, count(*) FROM machpay.ingest_preview(pg_temp.ev(
  '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "s": {'
  || (SELECT string_agg(format('"k%s": %s', i, i), ',') FROM generate_series(1, 10000) i) || '}}')::jsonb)
  GROUP BY kind;
SELECT * FROM pg_temp.check(
  '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "s": {'
  || (SELECT string_agg(format('"k%s": %s', i, i), ',') FROM generate_series(1, 10001) i) || '}}');
-- many more values than rows allowed
SELECT * FROM pg_temp.check(
  '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "s": {'
  || (SELECT string_agg(format('"k%s": true', i), ',') FROM generate_series(1, 30000) i) || '}}');

-- entity_not_allowed: a key bound to another entity (gateway_id, agent_id,
-- entity_id; for payment_intent the gateway_id); "*" allows any
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "period_end": "@end", "wallet": {"x": 1}}',
                            'BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp');
SELECT event_index, kind, name, detail->>'code' AS code FROM machpay.ingest_preview(pg_temp.ev('[' || pg_temp.good_gw() || ',' || pg_temp.good_log() || ']')::jsonb,
                                 false, 'BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp');
SELECT event_index, kind, name, detail->>'code' AS code FROM machpay.ingest_preview('{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt", "nonce": 1, "amount": 1}',
                                 false, 'QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg');
SELECT * FROM pg_temp.check('{"source": "sdk", "agent_id": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "period_end": "@end", "wallet": {"x": 1}}', '*');

-- Dead letters: with include_rejects a rejected event leaves one reject
-- row with its code, message and an excerpt of at most 1 kB.
SELECT event_index, kind, name, detail->>'message' AS message, detail->>'excerpt' AS excerpt
  FROM machpay.ingest_preview('[{"source": "nope"}, 17]', true);
SELECT event_index, kind, name, octet_length(detail->>'excerpt') <= 1024 AS short
  FROM machpay.ingest_preview(('{"source": "nope", "pad": "' || repeat('x', 5000) || '"}')::jsonb, true);

-- Nesting: 64 levels are one event, 65 make the whole request bad (400):
-- nothing of it is kept, in jsonb or in request text.
SELECT kind, length(name) AS name_length, value FROM machpay.ingest_preview(pg_temp.ev(
  '[{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "d": '
  || repeat('{"a": ', 62) || '1' || repeat('}', 62) || '}]')::jsonb);
SELECT * FROM machpay.ingest_preview(pg_temp.ev(
  '[' || pg_temp.good_gw() || ', {"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "d": '
  || repeat('{"a": ', 63) || '1' || repeat('}', 63) || '}]')::jsonb);
SELECT kind, length(name) AS name_length, value FROM machpay.ingest_preview_text(pg_temp.ev(
  '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "d": '
  || repeat('{"a": ', 62) || '[1, "[{"]' || repeat('}', 62) || ', "e": ' || repeat('{"b": ', 62) || '2' || repeat('}', 62) || '}'));
SELECT * FROM machpay.ingest_preview_text(pg_temp.ev(
  pg_temp.good_gw() || E'\n{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "d": '
  || repeat('[', 64) || repeat(']', 64) || '}'), ndjson => true);

-- Bad request text: invalid JSON anywhere (also on a late NDJSON line)
-- stores nothing; a top-level value that is no object is a per-event error.
SELECT * FROM machpay.ingest_preview_text(pg_temp.ev(pg_temp.good_gw() || ' x'));
SELECT * FROM machpay.ingest_preview_text(pg_temp.ev(pg_temp.good_gw() || E'\n' || pg_temp.good_log() || E'\n{"source": '), ndjson => true);
SELECT * FROM machpay.ingest_preview_text(pg_temp.ev('[' || pg_temp.good_gw() || ',]'));
SELECT * FROM machpay.ingest_preview_text('');
SELECT * FROM machpay.ingest_preview_text('{"a": "\u0000"}');
-- escapes are decoded (labels are JSON-escaped again)
SELECT name, labels FROM machpay.ingest_preview_text(pg_temp.ev('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "business": {"routes": {"/\u0041\"\t\/": {"200": 1}}}, "\u0073ys": {"x": 1}}'));
SELECT * FROM machpay.ingest_preview_text(E'\n\n', ndjson => true);
SELECT event_index, kind, name, detail->>'message' AS message
  FROM machpay.ingest_preview_text(pg_temp.ev(E'[1, "s", null, [], ' || pg_temp.good_log() || ']'));
SELECT event_index, kind, name, detail->>'message' AS message
  FROM machpay.ingest_preview_text(pg_temp.ev(E'true\n[' || pg_temp.good_log() || E']\n' || pg_temp.good_log()), ndjson => true);
-- a number with a fractional digit left after its exponent is never an integer amount
SELECT event_index, kind, name, detail->>'message' AS message
  FROM machpay.ingest_preview_text('{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt", "nonce": 1e-3, "amount": 1}');
