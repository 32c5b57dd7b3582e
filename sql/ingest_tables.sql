-- machpay.ingest(): events -> rows in the tables (writer end to end).
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

-- Ids of this file only; times relative to now.
\set gw 'Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT'
\set agent 'DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi'
CREATE TEMP TABLE t AS SELECT extract(epoch FROM date_trunc('second', now()))::bigint - 30 AS pe;

-- The seed's gateway example: 20 rows, time = period_end.
SELECT machpay.ingest('{
  "source": "gateway", "gateway_id": "Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT",
  "config": {"accepted_mint": "4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1", "price_per_unit": 5000, "version": "v1.2"},
  "system": {"cpu_usage_percent": 12.5, "ram_usage_mb": 256, "goroutines": 450, "gc_pause_ns": 15000, "uptime_seconds": 86400},
  "network": {"bytes_in": 1048576, "bytes_out": 524288, "active_connections": 120},
  "business": {"total_revenue": 50000,
    "routes": {"/chat": {"200": 500, "402": 100, "500": 2, "latency_p99": 150},
               "/image": {"200": 50, "402": 10, "500": 0, "latency_p99": 500}},
    "solvency_rejects": 15, "replay_attacks_blocked": 5, "signature_failures": 2}
}'::jsonb || jsonb_build_object('period_start', pe - 60, 'period_end', pe)) FROM t;

SELECT count(*) AS rows, bool_and(m.time = to_timestamp(t.pe)) AS time_is_period_end
  FROM machpay.metrics m, t WHERE m.entity_id = :'gw';
SELECT metric_name, labels, value FROM machpay.metrics
 WHERE entity_id = :'gw' ORDER BY metric_name, labels::text;

-- The seed's SDK example: 10 rows.
SELECT machpay.ingest('{
  "source": "sdk", "agent_id": "DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi",
  "wallet": {"sol_balance_lamports": 50000000, "usdc_balance_atomic": 2000000, "low_balance_warnings": 0},
  "interactions": {"Vendor_A": {"attempts": 100, "success": 98, "payment_latency_p99": 200, "vendor_latency_p99": 500,
                                "errors": {"timeout": 1, "402_loop_failed": 1}, "spend_atomic": 50000}}
}'::jsonb || jsonb_build_object('period_start', pe - 60, 'period_end', pe)) FROM t;

SELECT count(*) AS rows, bool_and(m.time = to_timestamp(t.pe)) AS time_is_period_end
  FROM machpay.metrics m, t WHERE m.entity_id = :'agent';
SELECT metric_name, labels, value FROM machpay.metrics
 WHERE entity_id = :'agent' ORDER BY metric_name, labels::text;

-- The same report again: the series are reused, the points added.
SELECT machpay.ingest('{"source": "sdk", "agent_id": "DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi",
  "wallet": {"sol_balance_lamports": 1}}'::jsonb || jsonb_build_object('period_start', pe, 'period_end', pe + 1)) FROM t;
SELECT count(*) AS points, count(DISTINCT series_id) AS series
  FROM machpay.metric_points p JOIN machpay.metric_series s USING (series_id) WHERE s.entity_id = :'agent';

-- The hour of those rows is marked for the rollup.
SELECT count(*) AS marked FROM machpay.rollup_invalidations r, t
 WHERE r.bucket = date_trunc('hour', to_timestamp(t.pe));

-- A log event lands in debug_logs.
SELECT machpay.ingest(jsonb_build_object('source', 'log', 'entity_id', :'agent', 'time', pe + 0.5,
       'level', 'info', 'message', 'hello from ingest_tables', 'fields', jsonb_build_object('k', 1))) FROM t;
SELECT l.level, l.message, l.fields, l.time = to_timestamp(t.pe + 0.5) AS time_ok
  FROM machpay.debug_logs l, t WHERE l.entity_id = :'agent';

-- Every error code beside a good event: the bad one stores nothing but a
-- dead letter, the good one is stored.  (entity_not_allowed needs a key:
-- it cannot happen through SQL.)
\set e1 'AkWxNPcPofjeyBnJqaBBUtYT8asTwFtPvwYBeWHLd3W7'
\set e2 '2NhUzhpkm8ydPhVEa8pqSE53Qqcs79cM2evLCvP5aFwX'
\set e3 '58eU3WTCs97ajcbzzGZK8JRxq1H9qHWLU8cKcQGXRRhF'
\set e4 '6aCQpP288PwatLVmy3wpKdTK2UxWKEi7fu4FydFpMC3Q'
\set e5 '6NGSawDYAy4zN5CQ4QsDmqNgrubTkNa9c9UpKqH16TV8'
\set e6 '3A2Men9va1f4c7UtAAoc5D2f7sFWiYSaBCWr3RHMvjsV'
\set good 'G9RK1ENd5BkJiAkabbwZs58xNeB3wcNzFfSSaGgySBjd'
CREATE TEMP TABLE bad (code text, event jsonb);
INSERT INTO bad SELECT 'unknown_source', jsonb_build_object('source', 'gatway', 'gateway_id', :'e1',
    'period_start', pe - 60, 'period_end', pe, 'system', jsonb_build_object('x', 1)) FROM t;
INSERT INTO bad SELECT 'invalid_entity_id', jsonb_build_object('source', 'gateway', 'gateway_id', 'not0base58',
    'period_start', pe - 60, 'period_end', pe, 'system', jsonb_build_object('x', 1), 'tag', 'bad-invalid_entity_id') FROM t;
INSERT INTO bad SELECT 'missing_field', jsonb_build_object('source', 'gateway', 'gateway_id', :'e2',
    'period_start', pe - 60, 'system', jsonb_build_object('x', 1)) FROM t;
INSERT INTO bad SELECT 'invalid_type', jsonb_build_object('source', 'gateway', 'gateway_id', :'e3',
    'period_start', pe - 60, 'period_end', 'soon', 'system', jsonb_build_object('x', 1)) FROM t;
INSERT INTO bad SELECT 'time_out_of_range', jsonb_build_object('source', 'gateway', 'gateway_id', :'e4',
    'period_start', pe, 'period_end', pe + 3600, 'system', jsonb_build_object('x', 1)) FROM t;
INSERT INTO bad SELECT 'invalid_amount', jsonb_build_object('source', 'payment_intent', 'gateway_id', :'e5',
    'agent_id', :'agent', 'token', :'e1', 'nonce', 7, 'amount', '18446744073709551616',
    'signature', '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK');
INSERT INTO bad SELECT 'too_large', jsonb_build_object('source', 'gateway', 'gateway_id', :'e6',
    'period_start', pe - 60, 'period_end', pe, 'system', jsonb_build_object('x', 1),
    'business', jsonb_build_object('routes', jsonb_build_object(repeat('r', 300), jsonb_build_object('200', 1)))) FROM t;

CREATE TEMP TABLE resp AS
SELECT b.code, machpay.ingest(jsonb_build_array(
         jsonb_build_object('source', 'log', 'entity_id', :'good', 'time', t.pe, 'level', 'info',
                            'message', 'good beside ' || b.code),
         b.event)) AS r
  FROM bad b, t;
SELECT code, r->'accepted' AS accepted, r->'rejected' AS rejected,
       r->'errors'->0->'index' AS err_index, r->'errors'->0->>'code' = code AS code_ok
  FROM resp ORDER BY code;
SELECT count(*) AS good_logs FROM machpay.debug_logs WHERE entity_id = :'good';
SELECT count(*) AS bad_metrics FROM machpay.metrics
 WHERE entity_id IN (:'e1', :'e2', :'e3', :'e4', :'e5', :'e6', 'not0base58');
SELECT count(*) AS bad_intents FROM machpay.payment_intents WHERE gateway_id = :'e5';
SELECT b.code, count(j.*) AS dead_letters
  FROM bad b LEFT JOIN machpay.ingest_rejects j
    ON j.reason = b.code AND j.excerpt LIKE '%' || coalesce(b.event->>'gateway_id', '') || '%'
 GROUP BY b.code ORDER BY b.code;

-- u64 limits are stored exactly.
\set e7 'DLCEHguepmiQb9CAVmxNdJ8D9TTLYU1dHFYtuoQe1SYV'
SELECT machpay.ingest(jsonb_build_array(
  jsonb_build_object('source', 'payment_intent', 'gateway_id', :'e7', 'agent_id', :'agent', 'token', :'e1',
    'nonce', 0, 'amount', 18446744073709551615,
    'signature', '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK'),
  jsonb_build_object('source', 'payment_intent', 'gateway_id', :'e7', 'agent_id', :'agent', 'token', :'e1',
    'nonce', '18446744073709551615', 'amount', '0',
    'signature', '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK')
)) -> 'accepted' AS accepted;
SELECT nonce, amount, status, token = :'e1' AS token_ok
  FROM machpay.payment_intents WHERE gateway_id = :'e7' ORDER BY nonce;

-- Not an event: rejected with invalid_type.  Nesting past 64: an error, nothing stored.
SELECT machpay.ingest('"just a string"');
SELECT machpay.ingest((repeat('{"a":', 70) || '1' || repeat('}', 70))::jsonb);
