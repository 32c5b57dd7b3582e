-- Gateway config reports -> machpay.vendor_profiles (SPEC §4).
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

\set gw 'HbWc1M8oZGqXsWfQ1uoy2i5oW2o3ctVUxLBwhXUkZnyD'
\set unknown 'CRgRw8sKCWzaEqvZTLbXbajAUBEEeGXw3ub3B7UTmbAn'
\set mint '4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1'
INSERT INTO machpay.users (wallet_address) VALUES (:'gw');
CREATE TEMP TABLE t AS SELECT extract(epoch FROM date_trunc('second', now()))::bigint - 600 AS t0;
-- A gateway event with a config object and period_end t0 + d.
CREATE FUNCTION pg_temp.report(gw text, d int, config jsonb) RETURNS jsonb LANGUAGE sql AS $$
  SELECT machpay.ingest(jsonb_build_object('source', 'gateway', 'gateway_id', gw,
           'period_start', t0 + d - 60, 'period_end', t0 + d, 'config', config,
           'system', jsonb_build_object('cpu_usage_percent', 1))) FROM t
$$;
CREATE FUNCTION pg_temp.stat(n text) RETURNS bigint LANGUAGE sql AS $$
  SELECT value FROM machpay.stat_receiver WHERE name = n
$$;
CREATE TEMP VIEW profile AS
SELECT p.base_price_atomic, p.accepted_mint = :'mint' AS mint_ok, p.withdrawal_address, p.config_version,
       extract(epoch FROM p.config_period_end)::bigint - t.t0 AS period_end_offset
  FROM machpay.vendor_profiles p JOIN machpay.users u ON u.id = p.user_id, t
 WHERE u.wallet_address = :'gw';
CREATE TEMP TABLE before AS SELECT pg_temp.stat('config_updates') AS updates,
       pg_temp.stat('config_stale') AS stale, pg_temp.stat('config_unknown_gateway') AS unknown;

-- First report creates the profile.
SELECT pg_temp.report(:'gw', 0, jsonb_build_object('price_per_unit', 5000, 'accepted_mint', :'mint', 'version', 'v1'))->'accepted';
SELECT * FROM profile;
CREATE TEMP TABLE u1 AS SELECT updated_at FROM machpay.vendor_profiles p JOIN machpay.users u ON u.id = p.user_id WHERE u.wallet_address = :'gw';

-- The same values in a newer report: no value and not updated_at changes,
-- only the time of the newest report (period_end_offset 60).
SELECT pg_temp.report(:'gw', 60, jsonb_build_object('price_per_unit', '5000', 'accepted_mint', :'mint', 'version', 'v1'))->'accepted';
SELECT * FROM profile;
SELECT p.updated_at = u1.updated_at AS updated_at_kept
  FROM machpay.vendor_profiles p JOIN machpay.users u ON u.id = p.user_id, u1 WHERE u.wallet_address = :'gw';

-- A report dated between the first and that unchanged newer one is older
-- than a report applied: it must not bring back other values.
SELECT pg_temp.report(:'gw', 30, '{"version": "v0-between", "price_per_unit": 7}')->'accepted';
SELECT * FROM profile;

-- A newer report with only a version: the absent fields keep their values.
SELECT pg_temp.report(:'gw', 120, '{"version": "v2"}')->'accepted';
SELECT * FROM profile;
SELECT p.updated_at > u1.updated_at AS updated_at_moved
  FROM machpay.vendor_profiles p JOIN machpay.users u ON u.id = p.user_id, u1 WHERE u.wallet_address = :'gw';

-- An older report never overwrites a newer one.
SELECT pg_temp.report(:'gw', 30, '{"version": "v0", "price_per_unit": 1}')->'accepted';
SELECT * FROM profile;

-- Several reports of one gateway in one call: the newest period_end wins,
-- wherever it stands in the call.
SELECT machpay.ingest(jsonb_build_array(
         jsonb_build_object('source', 'gateway', 'gateway_id', :'gw', 'period_start', t0 + 140, 'period_end', t0 + 200,
                            'config', jsonb_build_object('version', 'v4', 'withdrawal_address', :'mint')),
         jsonb_build_object('source', 'gateway', 'gateway_id', :'gw', 'period_start', t0 + 120, 'period_end', t0 + 180,
                            'config', jsonb_build_object('version', 'v3'))))->'accepted' FROM t;
SELECT * FROM profile;

-- A gateway without a users row changes nothing and is counted.
SELECT pg_temp.report(:'unknown', 0, '{"version": "v9"}')->'accepted';
SELECT count(*) AS profiles FROM machpay.vendor_profiles p JOIN machpay.users u ON u.id = p.user_id
 WHERE u.wallet_address = :'unknown';

SELECT pg_temp.stat('config_updates') - updates AS updates,
       pg_temp.stat('config_stale') - stale AS stale,
       pg_temp.stat('config_unknown_gateway') - unknown AS unknown
  FROM before;
