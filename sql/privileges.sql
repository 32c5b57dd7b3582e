-- Privileges: every object of the extension with its grants (so an object
-- added without a decision shows here), the functions' fixed search_path,
-- and what a role with USAGE on the schema alone cannot do.
SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS machpay_receiver CASCADE; RESET client_min_messages;

-- One line per object and grantee; the owner's own rights are left out,
-- a NULL ACL is shown as what it means (functions: EXECUTE to PUBLIC).
WITH members AS (
    SELECT d.classid, d.objid FROM pg_depend d
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'machpay_receiver')
), objs AS (
    SELECT CASE p.prokind WHEN 'a' THEN 'aggregate' ELSE 'function' END AS kind,
           p.oid::regprocedure::text AS name, p.proowner AS owner,
           coalesce(p.proacl, acldefault('f'::"char", p.proowner)) AS acl
      FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid
    UNION ALL
    SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' ELSE 'table' END,
           c.oid::regclass::text, c.relowner,
           coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char", c.relowner))
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
     WHERE NOT c.relispartition AND c.relkind IN ('r', 'p', 'v', 'S', 'm', 'f')
    UNION ALL
    SELECT 'column', c.oid::regclass::text || '.' || a.attname, c.relowner, a.attacl
      FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
      JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND a.attacl IS NOT NULL
    UNION ALL
    SELECT 'schema', n.nspname::text, n.nspowner, coalesce(n.nspacl, acldefault('n'::"char", n.nspowner))
      FROM members m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
    UNION ALL
    SELECT 'schema', n.nspname::text, n.nspowner, coalesce(n.nspacl, acldefault('n'::"char", n.nspowner))
      FROM pg_namespace n WHERE n.nspname = 'machpay'
)
SELECT o.kind, o.name,
       coalesce(string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END
                           || '=' || a.privilege_type, ', '
                           ORDER BY CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                                    a.privilege_type), '(owner only)') AS grants
  FROM objs o
  LEFT JOIN LATERAL aclexplode(o.acl) a ON a.grantee <> o.owner
 GROUP BY o.kind, o.name
 ORDER BY o.kind, o.name;

-- Every function that runs SQL has a fixed search_path: a function a less
-- privileged role creates in another schema cannot capture its calls.
-- (The aggregate's support functions run no SQL and are called per row.)
SELECT p.oid::regprocedure AS function, p.prosecdef AS security_definer,
       array_to_string(p.proconfig, ', ') AS settings
  FROM pg_proc p
 WHERE p.pronamespace = 'machpay'::regnamespace AND p.prokind = 'f'
 ORDER BY p.oid::regprocedure::text;

-- The roles are groups: nobody logs in as them.
SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls
  FROM pg_roles WHERE rolname LIKE 'machpay\_%' ORDER BY 1;
SELECT r.rolname AS role, m.rolname AS member_of
  FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.member JOIN pg_roles m ON m.oid = am.roleid
 WHERE r.rolname LIKE 'machpay\_%' ORDER BY 1, 2;

-- A role granted USAGE on the schema and nothing else: every writing
-- function and every table is refused.
\set entity 'J1yoaErCNfgQyMDDCUyj5dRWRPRAk5wGVd2bx2DMGEWe'
CREATE ROLE regress_machpay_usage;
GRANT USAGE ON SCHEMA machpay TO regress_machpay_usage;
SET ROLE regress_machpay_usage;
SELECT machpay.buffer_ingest(jsonb_build_object('source', 'log', 'entity_id', :'entity',
       'time', extract(epoch FROM now())::bigint, 'level', 'info', 'message', 'usage only'));
SELECT machpay.ingest('{"source":"log"}');
SELECT machpay.flush();
SELECT machpay.notify_event('{"type":"config","gateway_id":"x"}');
SELECT machpay.create_ingest_key('*');
SELECT machpay.run_maintenance(now(), true);
SELECT count(*) FROM machpay.vendor_profiles;
SELECT count(*) FROM machpay.payment_intents;
SELECT count(*) FROM machpay.ingest_keys;
SELECT count(*) FROM machpay.stat_receiver;
UPDATE machpay.retention_policies SET retention = '1 day';
RESET ROLE;
SELECT count(*) AS stored FROM machpay.debug_logs WHERE message = 'usage only';

-- The predefined roles, each doing what it is for and no more.
CREATE ROLE regress_machpay_r IN ROLE machpay_reader;
CREATE ROLE regress_machpay_w IN ROLE machpay_writer;
CREATE ROLE regress_machpay_a IN ROLE machpay_admin;
SET ROLE regress_machpay_r;
SELECT count(*) >= 0 AS reader_reads FROM machpay.metrics;
SELECT count(*) > 0 AS reader_sees_counters FROM machpay.stat_receiver;
SELECT machpay.ingest('{"source":"log"}');
SELECT count(*) FROM machpay.ingest_keys;
RESET ROLE;
SET ROLE regress_machpay_w;
SELECT machpay.ingest(jsonb_build_object('source', 'log', 'entity_id', :'entity',
       'time', extract(epoch FROM now())::bigint, 'level', 'info', 'message', 'by writer')) ->> 'accepted' AS accepted;
SELECT count(*) FROM machpay.debug_logs;
SELECT machpay.create_ingest_key('*');
SELECT machpay.notify_event('{"type":"config"}');
RESET ROLE;
SET ROLE regress_machpay_a;
SELECT machpay.create_ingest_key('*') ~ '^mpk_' AS admin_creates_keys;
SELECT count(*) > 0 AS admin_sees_keys FROM (SELECT key_id, entity_id, role FROM machpay.ingest_keys) k;
SELECT token_sha256 FROM machpay.ingest_keys LIMIT 1;
SELECT machpay.notify_event('{"type":"config"}') AS notified;
SELECT count(*) >= 0 AS admin_runs_maintenance FROM machpay.run_maintenance(now(), true);
UPDATE machpay.retention_policies SET retention = retention WHERE table_name = 'metrics';
RESET ROLE;
-- The workers' role writes what a flush writes, and nothing else (the
-- workers switch with SET SESSION AUTHORIZATION, as here).
SET SESSION AUTHORIZATION machpay_worker;
SELECT count(*) >= 0 AS worker_reads_keys FROM machpay.ingest_keys;
SELECT machpay.create_ingest_key('*');
SELECT machpay.notify_event('{"type":"config"}');
DELETE FROM machpay.payment_intents;
UPDATE machpay.users SET wallet_address = wallet_address;
DROP TABLE machpay.debug_logs;
SELECT count(*) FROM machpay._maintenance(now(), true, '/tmp');
SELECT count(*) >= 0 AS worker_runs_maintenance FROM machpay._maintenance(now(), true, current_setting('machpay.archive_directory'));
RESET SESSION AUTHORIZATION;
-- pg_partman's session-level search_path does not leak out of the jobs.
SHOW search_path;

DROP ROLE regress_machpay_r, regress_machpay_w, regress_machpay_a;
REVOKE USAGE ON SCHEMA machpay FROM regress_machpay_usage;
DROP ROLE regress_machpay_usage;
