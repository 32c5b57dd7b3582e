-- Payment intents: stored once per (gateway_id, agent_id, nonce), ever.
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

\set gw 'EUvwXLRWY9B7iABtRE584NE7TH6df3csY1pADxgYydXo'
\set agent '3TXzAvfayhmyXwaobgpumyCp8bVpVyUEaJc4RX95J8WF'
\set token 'AkWxNPcPofjeyBnJqaBBUtYT8asTwFtPvwYBeWHLd3W7'
\set sig '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK'
CREATE TEMP TABLE before AS SELECT name, value FROM machpay.stat_receiver;
CREATE TEMP TABLE ev AS
SELECT n, jsonb_build_object('source', 'payment_intent', 'gateway_id', :'gw', 'agent_id', :'agent',
                             'token', :'token', 'signature', :'sig', 'nonce', n, 'amount', 1000 + n) AS e
  FROM generate_series(1, 3) n;

-- One call: nonce 1, 2, 1 again, and a bad event in between.
CREATE TEMP TABLE r1 AS
SELECT machpay.ingest(jsonb_build_array(
         (SELECT e FROM ev WHERE n = 1), (SELECT e FROM ev WHERE n = 2),
         '{"source": "payment_intent"}'::jsonb, (SELECT e FROM ev WHERE n = 1))) AS r;
SELECT r->'accepted' AS accepted, r->'rejected' AS rejected, jsonb_array_length(r->'intents') AS nintents FROM r1;
SELECT i->'index' AS index, i->'duplicate' AS duplicate
  FROM r1, jsonb_array_elements(r->'intents') i;
-- The duplicate in the call got the first one's id.
SELECT (r->'intents'->0->>'id') = (r->'intents'->2->>'id') AS same_id,
       (r->'intents'->0->>'id') <> (r->'intents'->1->>'id') AS distinct_ids,
       (r->'intents'->0->>'id') ~ '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$' AS uuid_v4
  FROM r1;
SELECT count(*) AS stored FROM machpay.payment_intents WHERE gateway_id = :'gw';
SELECT count(*) AS keys FROM machpay.payment_intent_keys WHERE gateway_id = :'gw';
-- The returned ids are the stored ones.
SELECT p.nonce, p.amount, p.status, p.id::text = (SELECT r->'intents'->0->>'id' FROM r1) AS first_id
  FROM machpay.payment_intents p WHERE gateway_id = :'gw' ORDER BY nonce;

-- Across calls: a retry of nonce 2 and a new nonce 3.
CREATE TEMP TABLE r2 AS
SELECT machpay.ingest(jsonb_build_array((SELECT e FROM ev WHERE n = 3), (SELECT e FROM ev WHERE n = 2))) AS r;
SELECT i->'index' AS index, i->'duplicate' AS duplicate FROM r2, jsonb_array_elements(r->'intents') i;
SELECT (r2.r->'intents'->1->>'id') = (r1.r->'intents'->1->>'id') AS retry_same_id FROM r1, r2;
-- A retry with another amount is still the same intent: the first one stays.
SELECT machpay.ingest((SELECT e FROM ev WHERE n = 2) || '{"amount": 1}') -> 'intents' -> 0 -> 'duplicate' AS duplicate;
SELECT nonce, amount FROM machpay.payment_intents WHERE gateway_id = :'gw' ORDER BY nonce;

-- The same nonce for another agent is another intent.
SELECT machpay.ingest((SELECT e FROM ev WHERE n = 1) || jsonb_build_object('agent_id', :'token'))
       -> 'intents' -> 0 -> 'duplicate' AS duplicate;

-- Rolled back: the key is free again.
BEGIN;
SELECT machpay.ingest((SELECT e FROM ev WHERE n = 1) || '{"nonce": 99}') -> 'intents' -> 0 -> 'duplicate' AS duplicate;
ROLLBACK;
SELECT machpay.ingest((SELECT e FROM ev WHERE n = 1) || '{"nonce": 99}') -> 'intents' -> 0 -> 'duplicate' AS duplicate;
SELECT count(*) AS stored FROM machpay.payment_intents WHERE gateway_id = :'gw';

-- Telemetry-only calls carry no "intents".
SELECT machpay.ingest('{"source": "log"}') ? 'intents' AS has_intents;

-- Counters count committed work only (the rolled-back intent is not in).
SELECT s.name, s.value - b.value AS delta
  FROM machpay.stat_receiver s JOIN before b USING (name)
 WHERE s.name IN ('rows_payment_intents', 'intents_duplicate') ORDER BY 1;
