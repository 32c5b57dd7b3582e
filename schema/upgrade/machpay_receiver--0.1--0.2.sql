-- machpay_receiver 0.1 -> 0.2: ALTER EXTENSION machpay_receiver UPDATE.
--
-- How schema changes are made (see also README, "Upgrades"):
--   * schema/NN_*.sql is the install script of the version being developed
--     (default_version in machpay_receiver.control): a fresh install runs
--     it whole.  Change it there, so a fresh install gets the change.
--   * This file brings a database installed at 0.1 to the same state: add
--     the same change here too, as statements that apply to a 0.1 schema
--     with data in it (ALTER TABLE ... ADD COLUMN, CREATE OR REPLACE
--     FUNCTION, GRANT/REVOKE, new roles guarded by IF NOT EXISTS, ...).
--     Hand-written, in the order the changes were made.
--   * test/t/050_extension_upgrade.pl installs every released version
--     (schema/released/), loads data, updates, and checks that the catalog
--     equals a fresh install's and the data is still there: a change made
--     in one place only fails it.
-- When 0.2 is released: freeze its install script
-- (make machpay_receiver--0.2.sql && cp machpay_receiver--0.2.sql schema/released/),
-- set default_version = '0.3', and start machpay_receiver--0.2--0.3.sql.

\echo Use "ALTER EXTENSION machpay_receiver UPDATE" to load this file. \quit

-- (No changes yet.)
