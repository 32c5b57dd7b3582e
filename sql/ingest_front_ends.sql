-- The SQL front ends of the ingest path (ingest(), buffer_ingest(), the
-- previews) meet a payload alike: one refusal (SQLSTATE and words) per
-- kind of bad payload, one receipt clock (the start of the statement).
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

CREATE FUNCTION pg_temp.refusal(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text;
  msg text;
  det text;
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RETURN st || ' ' || msg || ' / ' || det;
END $$;

-- Nesting past 64 levels (HTTP 400) and too many rejected events (HTTP
-- 422): the same error from every function, nothing stored.
SELECT f, pg_temp.refusal(format('SELECT * FROM %s(%L)', f,
                                 repeat('{"a":', 70) || '1' || repeat('}', 70))) AS refusal
  FROM unnest(ARRAY['machpay.ingest', 'machpay.buffer_ingest',
                    'machpay.ingest_preview', 'machpay.ingest_preview_text']) f;
SELECT f, pg_temp.refusal(format('SELECT * FROM %s(%L)', f,
                                 (SELECT jsonb_agg(1) FROM generate_series(1, 1001))::text)) AS refusal
  FROM unnest(ARRAY['machpay.ingest', 'machpay.buffer_ingest',
                    'machpay.ingest_preview', 'machpay.ingest_preview_text']) f;
SELECT count(*) AS rejects_stored FROM machpay.ingest_rejects;

-- created_at is the time of receipt: the start of the statement that
-- handed the intent in, in a preview as in ingest(), even late in a
-- transaction.
\set gw 'BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp'
\set agent 'QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg'
\set token '4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1'
\set sig '3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt'
CREATE TEMP TABLE intent AS
SELECT jsonb_build_object('source', 'payment_intent', 'gateway_id', :'gw', 'agent_id', :'agent',
                          'token', :'token', 'signature', :'sig', 'nonce', 7001, 'amount', 1) AS e;
BEGIN;
SELECT pg_sleep(0.01);
SELECT kind, time = statement_timestamp() AS at_statement_start, time > now() AS after_transaction_start
  FROM machpay.ingest_preview((SELECT e FROM intent));
CREATE TEMP TABLE stored AS
SELECT machpay.ingest((SELECT e FROM intent)) AS r, statement_timestamp() AS stmt_start;
SELECT p.created_at = s.stmt_start AS at_statement_start, p.created_at > now() AS after_transaction_start
  FROM stored s JOIN machpay.payment_intents p ON p.id = (s.r->'intents'->0->>'id')::uuid;
COMMIT;
