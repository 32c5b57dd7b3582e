-- Exact unsigned 64-bit amounts (SPEC §4): nonce, amount and a gateway's
-- price_per_unit are integers 0..2^64-1 given as JSON numbers or decimal
-- strings; anything else is invalid_amount.  Through the jsonb front end
-- (machpay.ingest()) and the request-text front end (POST /v1/ingest).
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE;
RESET client_min_messages;

CREATE FUNCTION pg_temp.intent(nonce text, amount text) RETURNS text
LANGUAGE sql AS $$
  SELECT '{"source": "payment_intent", '
      || '"gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", '
      || '"agent_id": "QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg", '
      || '"token": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", '
      || '"signature": "3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt", '
      || '"nonce": ' || nonce || ', "amount": ' || amount || '}' $$;

CREATE TEMP TABLE cases (n serial, v text);
INSERT INTO cases (v) VALUES
  ('0'), ('"0"'), ('18446744073709551615'), ('"18446744073709551615"'),
  ('"00018446744073709551615"'), ('"007"'), ('4294967296'),
  ('18446744073709551616'), ('"18446744073709551616"'),
  ('99999999999999999999'), ('100000000000000000000'),
  ('-1'), ('"-1"'), ('-0'), ('1.5'), ('"1.5"'), ('1.0'), ('"1e3"'),
  ('""'), ('" 1"'), ('"1 "'), ('"+1"'), ('"0x10"'), ('true'), ('{}'), ('[1]');

-- nonce through jsonb: the stored text, or the error code
SELECT n, c.v AS nonce, coalesce(p.detail->>'nonce', p.detail->>'code') AS outcome
  FROM cases c, machpay.ingest_preview(pg_temp.intent(c.v, '1')::jsonb) p
  ORDER BY n;

-- amount through request text
SELECT n, c.v AS amount, coalesce(p.detail->>'amount', p.detail->>'code') AS outcome
  FROM cases c, machpay.ingest_preview_text(pg_temp.intent('1', c.v)) p
  ORDER BY n;

-- JSON numbers in other forms: both front ends take the value numeric_in
-- (and so jsonb) stores, an integer when no fractional digit survives the
-- exponent (1e3 is 1000, -0 is 0, 1.0 and 1.50e1 keep a scale): HTTP and
-- machpay.ingest() agree on every one.
SELECT v, (SELECT coalesce(detail->>'nonce', detail->>'code') FROM machpay.ingest_preview_text(pg_temp.intent(v, '1'))) AS text_outcome,
          (SELECT coalesce(detail->>'nonce', detail->>'code') FROM machpay.ingest_preview(pg_temp.intent(v, '1')::jsonb)) AS jsonb_outcome
  FROM unnest(ARRAY['1e3', '1E3', '1e+3', '1.5e1', '1.50e1', '0.5e1', '1e-3', '18446744073709551615e0',
                    '1844674407370955161.5e1', '1844674407370955161.6e1', '1e19', '1e20', '1e400',
                    '-0', '-0.0', '0e5', '-1e0', '1.0', '10e-1', '100e-2']) v;

-- null and absent are missing_field
SELECT detail->>'code' AS code, detail->>'message' AS message
  FROM machpay.ingest_preview(pg_temp.intent('null', '1')::jsonb);
SELECT detail->>'code' AS code, detail->>'message' AS message
  FROM machpay.ingest_preview(replace(pg_temp.intent('1', '1'), ', "amount": 1', '')::jsonb);

-- price_per_unit of a gateway config: the same rule
SELECT n, c.v AS price, coalesce(p.detail->>'price_per_unit', p.detail->>'code') AS outcome
  FROM cases c, machpay.ingest_preview(('{"source": "gateway", "gateway_id": "BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp", "period_end": '
       || extract(epoch FROM now())::bigint || ', "config": {"price_per_unit": ' || c.v || '}}')::jsonb) p
  WHERE n IN (1, 3, 4, 8, 12, 15, 19)
  ORDER BY n;
