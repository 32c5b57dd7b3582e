-- The two front ends of the mapper (request text as HTTP receives it, and
-- jsonb as machpay.ingest() does) feed one leaf walker: for the same event
-- they give the same rows, the same errors and the same refusals.  Each
-- case is previewed both ways (ingest_preview_text / ingest_preview, dead
-- letters included) and compared as a multiset of rows: jsonb orders an
-- object's keys, so rows of one event may come in another order.  A dead
-- letter's excerpt is left out: the text front end quotes the event as
-- sent, jsonb renders it.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE;
RESET client_min_messages;

-- "@end" becomes now in unix seconds, "@start" a minute before.
CREATE FUNCTION pg_temp.ev(j text) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT replace(replace(j, '"@end"', e::text), '"@start"', (e - 60)::text)
  FROM (SELECT extract(epoch FROM now())::bigint AS e) s $$;

-- One line per row or error of a preview, or the error that refused it.
CREATE FUNCTION pg_temp.outcome(body text, through_jsonb boolean)
RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN
  IF through_jsonb THEN
    RETURN QUERY
      SELECT concat_ws(' | ', p.event_index, p.kind, p.time, p.entity_id, p.name,
                       p.labels, p.value, p.detail - 'excerpt')
        FROM machpay.ingest_preview(body::jsonb, true) p;
  ELSE
    RETURN QUERY
      SELECT concat_ws(' | ', p.event_index, p.kind, p.time, p.entity_id, p.name,
                       p.labels, p.value, p.detail - 'excerpt')
        FROM machpay.ingest_preview_text(body, false, true) p;
  END IF;
EXCEPTION WHEN invalid_parameter_value OR program_limit_exceeded THEN
  RETURN NEXT 'refused ' || SQLSTATE || ': ' || SQLERRM;
END $$;

CREATE TEMP TABLE cases (name text PRIMARY KEY, body text NOT NULL);
INSERT INTO cases VALUES
  ('gateway_sections', '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_start": "@start", "period_end": "@end", "system": {"cpu": 0.5, "up": true, "down": false, "note": "x", "none": null}, "business": {"routes": {"/pay": {"200": 3, "500": 1, "latency": {"p99": 12.5}}}}, "zz": 7, "a": 1}'),
  ('gateway_config', '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "config": {"price_per_unit": 150, "accepted_mint": "So11111111111111111111111111111111111111112", "version": "1.2"}, "system": {"ok": 1}}'),
  ('config_not_object', '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "config": ["price_per_unit"]}'),
  ('sdk_interactions', '{"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_end": "@end", "interactions": {"vendor-a": {"calls": 4, "errors": {"timeout": 1, "http": {"503": 2}}}, "b": {"calls": 1}}}'),
  ('values_in_arrays', '{"source": "sdk", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "period_end": "@end", "list": [1, 2, {"x": 3}], "deep": {"list": [[4]], "y": 5}}'),
  ('id_is_array', '{"source": "gateway", "gateway_id": ["BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp"], "period_end": "@end"}'),
  ('source_is_object', '{"source": {"gateway": 1}, "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end"}'),
  ('duplicate_keys', '{"source": "sdk", "source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "system": {"ok": 1}}'),
  ('escaped_keys', '{"\u0073ource": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "business": {"routes": {"/\u0041\"\t\/": {"200": 1}}}, "s\u00fcs": {"x\n": 1}}'),
  ('float8_overflow', '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "system": {"huge": 1e400}}'),
  ('intent_exponents', '{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt", "nonce": 1.0E+2, "amount": 18446744073709551615}'),
  ('intent_fraction', '{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt", "nonce": 15e-1, "amount": 1}'),
  ('intent_too_big', '{"source": "payment_intent", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt", "nonce": 1, "amount": 18446744073709551616}'),
  ('log_fields', '{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "warn", "message": "m", "fields": {"n": 1.5e3, "list": [1, {"fields": 2}], "s": "t", "o": {"fields": null}}}'),
  ('log_fields_twice', '{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "info", "message": "m", "fields": 1, "fields": {"second": true}}'),
  ('log_fields_scalar', '{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "info", "message": "m", "fields": {"first": 1}, "fields": 1}'),
  ('log_fields_null', '{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "debug", "message": "m", "fields": null}'),
  ('log_fields_array', '{"source": "log", "entity_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", "time": "@end", "level": "debug", "message": "m", "fields": [{"a": 1}]}'),
  ('not_objects', '[1, "s", null, true, [], [[{"source": "gateway"}]], {}, {"source": "log"}]'),
  ('scalar_body', '"just a string"'),
  ('number_body', '-0.5e-3'),
  ('empty_array', '[]'),
  ('empty_object', '{}'),
  ('nesting_64', '{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": "@end", "d": '
                 || repeat('{"a": ', 62) || '1' || repeat('}', 62) || '}'),
  ('nesting_65_in_event', '[{"source": "log"}, {"d": ' || repeat('[', 64) || repeat(']', 64) || '}]'),
  ('nesting_65_not_object', '[{"source": "log"}, ' || repeat('[', 64) || repeat(']', 64) || ']');

-- Every case, what it gives (kinds of its rows, or the refusal) and
-- whether both front ends agree.
SELECT c.name,
       (SELECT string_agg(CASE WHEN o LIKE 'refused%' THEN o ELSE split_part(o, ' | ', 2) END,
                          ',' ORDER BY o)
          FROM pg_temp.outcome(pg_temp.ev(c.body), false) o) AS text_outcome,
       (SELECT array_agg(o ORDER BY o) FROM pg_temp.outcome(pg_temp.ev(c.body), false) o)
       IS NOT DISTINCT FROM
       (SELECT array_agg(o ORDER BY o) FROM pg_temp.outcome(pg_temp.ev(c.body), true) o) AS same
  FROM cases c ORDER BY c.name;

-- Where they differ, the lines of one front end the other lacks (none).
SELECT c.name, d.side, d.line
  FROM cases c,
       LATERAL ((SELECT 'text' AS side, o AS line FROM pg_temp.outcome(pg_temp.ev(c.body), false) o
                 EXCEPT ALL
                 SELECT 'text', o FROM pg_temp.outcome(pg_temp.ev(c.body), true) o)
                UNION ALL
                (SELECT 'jsonb', o FROM pg_temp.outcome(pg_temp.ev(c.body), true) o
                 EXCEPT ALL
                 SELECT 'jsonb', o FROM pg_temp.outcome(pg_temp.ev(c.body), false) o)) d
 ORDER BY 1, 2, 3;
