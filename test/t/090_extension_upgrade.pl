# Upgrade path: for every released version (schema/released/), a database
# created at that version with data in its tables is updated with
# ALTER EXTENSION machpay_receiver UPDATE; afterwards its catalog equals a
# fresh install's (functions, tables, columns, indexes, constraints,
# triggers, views, privileges, comments, pg_partman registration), its data
# is unchanged, and it ingests and maintains like a fresh install.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Basename;
use MachpayTest;

# Versions whose install script is shipped frozen, oldest first.
my @released = sort { version_key($a) cmp version_key($b) }
	map { /--([0-9.]+)\.sql$/ ? $1 : () }
	glob(dirname(__FILE__) . '/../../schema/released/machpay_receiver--*.sql');
ok(scalar @released > 0, 'released install scripts found: ' . join(', ', @released));

# No sockets, no scheduled jobs: the test drives everything through SQL.
my $node = machpay_node('upgrade', create_extension => 0, conf => <<'EOC');
machpay.port = 0
machpay.sse_port = 0
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
EOC
my $current = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'machpay_receiver'});

# Every object of the machpay schemas (partitions aside: their set follows
# the clock, not the version), one line each, with what defines it.
my $catalog_sql = <<'EOQ';
WITH rels AS (
    SELECT c.oid, c.relname, n.nspname, c.relkind
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname IN ('machpay', 'machpay_archive') AND NOT c.relispartition
       AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
)
SELECT line FROM (
    SELECT format('schema %s owner-ext acl=%s comment=%s', n.nspname, n.nspacl,
                  obj_description(n.oid, 'pg_namespace'))
      FROM pg_namespace n WHERE n.nspname IN ('machpay', 'machpay_archive')
    UNION ALL
    SELECT format('rel %s.%s kind=%s acl=%s opts=%s partkey=%s comment=%s', r.nspname, r.relname, r.relkind,
                  c.relacl, c.reloptions,
                  CASE WHEN r.relkind = 'p' THEN pg_get_partkeydef(r.oid) END,
                  obj_description(r.oid, 'pg_class'))
      FROM rels r JOIN pg_class c ON c.oid = r.oid
    UNION ALL
    SELECT format('col %s.%s.%s %s notnull=%s default=%s identity=%s generated=%s acl=%s comment=%s',
                  r.nspname, r.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, a.attacl,
                  col_description(r.oid, a.attnum))
      FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
      LEFT JOIN pg_attrdef d ON d.adrelid = r.oid AND d.adnum = a.attnum
    UNION ALL
    SELECT format('index %s', pg_get_indexdef(i.indexrelid))
      FROM rels r JOIN pg_index i ON i.indrelid = r.oid
    UNION ALL
    SELECT format('constraint %s.%s %s %s', r.nspname, r.relname, co.conname, pg_get_constraintdef(co.oid))
      FROM rels r JOIN pg_constraint co ON co.conrelid = r.oid
    UNION ALL
    SELECT format('trigger %s', pg_get_triggerdef(t.oid))
      FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal
    UNION ALL
    SELECT format('view %s.%s %s', r.nspname, r.relname, pg_get_viewdef(r.oid))
      FROM rels r WHERE r.relkind IN ('v', 'm')
    UNION ALL
    SELECT format('sequence %s.%s %s start=%s inc=%s min=%s max=%s cache=%s cycle=%s', r.nspname, r.relname,
                  s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle)
      FROM rels r JOIN pg_sequence s ON s.seqrelid = r.oid
    UNION ALL
    SELECT format('function %s kind=%s acl=%s comment=%s def=%s',
                  p.oid::regprocedure, p.prokind, p.proacl, obj_description(p.oid, 'pg_proc'),
                  CASE WHEN p.prokind = 'a' THEN
                       (SELECT row(ag.aggtransfn, ag.aggfinalfn, ag.aggtranstype::regtype)::text
                          FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid)
                       ELSE pg_get_functiondef(p.oid) END)
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname IN ('machpay', 'machpay_archive')
    UNION ALL
    SELECT format('type %s kind=%s', t.oid::regtype, t.typtype)
      FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
     WHERE n.nspname IN ('machpay', 'machpay_archive') AND t.typtype NOT IN ('b', 'p')
       AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid AND c.relispartition)
       AND t.typname !~ '^_'
    UNION ALL
    SELECT format('member %s', pg_describe_object(d.classid, d.objid, d.objsubid))
      FROM pg_depend d
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'machpay_receiver')
       AND NOT (d.classid = 'pg_class'::regclass
                AND (SELECT c.relispartition OR (c.relkind = 'i' AND EXISTS (
                        SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
                         WHERE i.indexrelid = c.oid AND t.relispartition))
                       FROM pg_class c WHERE c.oid = d.objid))
       AND NOT (d.classid = 'pg_type'::regclass
                AND EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = d.objid AND c.relispartition))
    UNION ALL
    SELECT format('event trigger %s %s', e.evtname, e.evtevent) FROM pg_event_trigger e
    UNION ALL
    SELECT format('partman %s', to_jsonb(pc) - 'maintenance_last_run')
      FROM part_config pc WHERE pc.parent_table LIKE 'machpay.%'
) s(line)
ORDER BY line;
EOQ

# Count and digest of every table of schema machpay (partitioned tables
# whole, partitions through their parent) and of the metrics view; not of
# stat_receiver, whose counters are shared by the whole server.
sub data_snapshot
{
	my ($db) = @_;
	my @rels = split /\n/, $node->safe_psql($db, q{
		SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
		  JOIN pg_namespace n ON n.oid = c.relnamespace
		 WHERE n.nspname = 'machpay' AND NOT c.relispartition
		   AND (c.relkind IN ('r', 'p') OR c.oid = 'machpay.metrics'::regclass)
		 ORDER BY 1});
	my %snap;
	for my $rel (@rels)
	{
		$snap{$rel} = $node->safe_psql($db, qq{
			SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), ''))
			  FROM $rel x});
	}
	return \%snap;
}

sub catalog
{
	my ($db) = @_;
	return [ split /\n/, $node->safe_psql($db, $catalog_sql) ];
}

sub version_key { join '.', map { sprintf '%05d', $_ } split /\./, $_[0] }

# Times relative to now; ids of this file only.
my $events = <<'EOJ';
[{"source": "gateway", "gateway_id": "Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT",
  "config": {"price_per_unit": 5000, "version": "v1.2"},
  "system": {"cpu_usage_percent": 12.5}, "network": {"bytes_in": 1048576},
  "business": {"routes": {"/chat": {"200": 500, "latency_p99": 150}}}},
 {"source": "sdk", "agent_id": "DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi",
  "wallet": {"sol_balance_lamports": 50000000},
  "interactions": {"Vendor_A": {"attempts": 100, "errors": {"timeout": 1}}}},
 {"source": "payment_intent", "gateway_id": "EUvwXLRWY9B7iABtRE584NE7TH6df3csY1pADxgYydXo",
  "agent_id": "3TXzAvfayhmyXwaobgpumyCp8bVpVyUEaJc4RX95J8WF",
  "token": "AkWxNPcPofjeyBnJqaBBUtYT8asTwFtPvwYBeWHLd3W7",
  "signature": "2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK",
  "nonce": "18446744073709551615", "amount": 1000},
 {"source": "log", "entity_id": "Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT",
  "level": "warn", "message": "disk almost full", "fields": {"free_mb": 12}}]
EOJ
my $load_sql = qq{
	INSERT INTO machpay.users (wallet_address) VALUES ('Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT');
	SELECT machpay.create_ingest_key('*') IS NOT NULL;
	WITH e AS (SELECT \$\$$events\$\$::jsonb AS a, extract(epoch FROM now())::bigint AS t)
	SELECT machpay.ingest(jsonb_build_array(
	           a -> 0 || jsonb_build_object('period_start', t - 90, 'period_end', t - 30),
	           a -> 1 || jsonb_build_object('period_start', t - 90, 'period_end', t - 30),
	           a -> 2,
	           a -> 3 || jsonb_build_object('time', t - 10)))->>'accepted' FROM e;
	SELECT machpay.run_rollup(now() - interval '2 hours', now() + interval '1 hour') >= 0;
};

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'SET client_min_messages = warning; CREATE EXTENSION machpay_receiver CASCADE');
is($node->safe_psql('fresh', q{SELECT extversion FROM pg_extension WHERE extname = 'machpay_receiver'}),
	$current, "a fresh install is at the default version $current");
my $fresh = catalog('fresh');
cmp_ok(scalar @$fresh, '>', 100, 'the catalog description covers the schema (' . scalar(@$fresh) . ' lines)');

for my $old (@released)
{
	next if $old eq $current;
	(my $db = "from_$old") =~ s/\./_/g;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "SET client_min_messages = warning; CREATE EXTENSION machpay_receiver VERSION '$old' CASCADE");
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'machpay_receiver'}),
		$old, "$old: installed from its frozen script");

	my $loaded = $node->safe_psql($db, $load_sql);
	is($loaded, "t\n4\nt", "$old: users, a key, four events and a rollup loaded");
	my $before = data_snapshot($db);
	is($node->safe_psql($db, q{SELECT count(*) FROM machpay.metrics}), '7', "$old: metric rows stored");

	$node->safe_psql($db, 'ALTER EXTENSION machpay_receiver UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'machpay_receiver'}),
		$current, "$old: updated to $current");

	is_deeply(catalog($db), $fresh, "$old -> $current: catalog equals a fresh $current install")
		or diag(catalog_diff(catalog($db), $fresh)
			. "\na schema change in schema/NN_*.sql needs the same change in "
			. "schema/upgrade/machpay_receiver--*--$current.sql (README, Upgrades)");
	is_deeply(data_snapshot($db), $before, "$old -> $current: every table holds the same rows");

	# Works like a fresh install afterwards: the writer, the key registry,
	# the duplicate registry, and partition maintenance.
	is($node->safe_psql($db, q{
		SELECT machpay.ingest(jsonb_build_object('source', 'log',
		           'entity_id', 'Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT', 'time', extract(epoch FROM now())::bigint,
		           'level', 'info', 'message', 'after the update'))->>'accepted'}),
		'1', "$old -> $current: ingests after the update");
	like($node->safe_psql($db, qq{
		SELECT machpay.ingest(\$\$$events\$\$::jsonb -> 2)::text}),
		qr/"duplicate": true/, "$old -> $current: an intent stored before the update is a duplicate after it");
	is($node->safe_psql($db, q{SELECT count(*) FROM machpay.ingest_keys}), '1',
		"$old -> $current: the ingest key is kept");
	cmp_ok($node->safe_psql($db, q{
		SELECT count(*) FROM machpay.run_maintenance(now() + interval '40 days') WHERE action = 'create'}),
		'>', 0, "$old -> $current: maintenance creates partitions");
}

# Lines only in one of the two descriptions, for the failure message.
sub catalog_diff
{
	my ($got, $want) = @_;
	my %g = map { $_ => 1 } @$got;
	my %w = map { $_ => 1 } @$want;
	return join("\n",
		(map { "only after the update: $_" } grep { !$w{$_} } @$got),
		(map { "only in a fresh install: $_" } grep { !$g{$_} } @$want));
}

$node->stop;
done_testing();
