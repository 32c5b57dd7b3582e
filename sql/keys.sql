-- Ingest keys: token shape, only a hash stored, revocation, privileges.
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

\set entity 'J1yoaErCNfgQyMDDCUyj5dRWRPRAk5wGVd2bx2DMGEWe'
CREATE TEMP TABLE k AS
SELECT machpay.create_ingest_key(:'entity') AS ingest_token,
       machpay.create_ingest_key('*', 'console') AS console_token;
SELECT ingest_token ~ '^mpk_[0-9a-f]{64}$' AS shape_ok, ingest_token <> console_token AS distinct_tokens FROM k;

-- Only sha256(token) is stored; the token itself appears nowhere in the row.
SELECT i.entity_id = :'entity' AS entity_ok, i.role, i.revoked_at IS NULL AS live,
       position(k.ingest_token IN i::text) = 0 AS token_not_stored
  FROM machpay.ingest_keys i, k WHERE i.token_sha256 = sha256(convert_to(k.ingest_token, 'UTF8'));
SELECT i.entity_id, i.role
  FROM machpay.ingest_keys i, k WHERE i.token_sha256 = sha256(convert_to(k.console_token, 'UTF8'));

-- Bad arguments.
SELECT machpay.create_ingest_key(:'entity', 'admin');
SELECT machpay.create_ingest_key('not-an-id');
SELECT machpay.create_ingest_key('111');

-- Revoke by token, then by key_id; a second revoke finds nothing live.
SELECT machpay.revoke_ingest_key(ingest_token) AS revoked FROM k;
SELECT machpay.revoke_ingest_key(ingest_token) AS revoked_again FROM k;
SELECT i.revoked_at IS NOT NULL AS revoked
  FROM machpay.ingest_keys i, k WHERE i.token_sha256 = sha256(convert_to(k.ingest_token, 'UTF8'));
SELECT machpay.revoke_ingest_key(i.key_id::text) AS revoked_by_id
  FROM machpay.ingest_keys i, k WHERE i.token_sha256 = sha256(convert_to(k.console_token, 'UTF8'));
SELECT machpay.revoke_ingest_key('mpk_0000') AS unknown_token, machpay.revoke_ingest_key('999999999') AS unknown_id;

-- PUBLIC cannot execute the key functions (nor ingest).
CREATE ROLE regress_machpay_nobody;
SELECT f, has_function_privilege('regress_machpay_nobody', f, 'EXECUTE') AS can_execute
  FROM unnest(ARRAY['machpay.create_ingest_key(text,text)', 'machpay.revoke_ingest_key(text)',
                    'machpay.ingest(jsonb)']) f;

-- EXECUTE is the whole permission: a role granted ingest() writes through
-- it without any grant on the tables.
GRANT USAGE ON SCHEMA machpay TO regress_machpay_nobody;
GRANT EXECUTE ON FUNCTION machpay.ingest(jsonb) TO regress_machpay_nobody;
SET ROLE regress_machpay_nobody;
SELECT machpay.ingest(jsonb_build_object('source', 'log', 'entity_id', :'entity',
       'time', extract(epoch FROM now())::bigint, 'level', 'info', 'message', 'granted'));
SELECT count(*) FROM machpay.debug_logs;
SELECT machpay.create_ingest_key('*');
RESET ROLE;
SELECT count(*) AS logs FROM machpay.debug_logs WHERE entity_id = :'entity' AND message = 'granted';
REVOKE ALL ON FUNCTION machpay.ingest(jsonb) FROM regress_machpay_nobody;
REVOKE USAGE ON SCHEMA machpay FROM regress_machpay_nobody;
DROP ROLE regress_machpay_nobody;
