# Start-up: the library preloads, the extension installs with its
# partitions, and survives a restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;

my $node = machpay_node('startup');

is($node->safe_psql('postgres', "SHOW machpay.port"), $node->{machpay_http_port},
	'machpay.port is set from the configuration');

my $parts = $node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_inherits WHERE inhparent = 'machpay.metric_points'::regclass});
cmp_ok($parts, '>=', 19, 'metric partitions cover retention (14 days) and premake');

ok( $node->safe_psql('postgres', q{
	SELECT count(*) FROM machpay.retention_policies}) == 5,
	'retention policies are seeded');

$node->restart;
is($node->safe_psql('postgres', q{
	SELECT string_agg(name, ',' ORDER BY name) FROM machpay.stat_receiver
	 WHERE name IN ('flushes', 'events_accepted', 'http_requests_202', 'sse_notifications_forged')}),
	'events_accepted,flushes,http_requests_202,sse_notifications_forged',
	'counters readable after restart');

$node->stop;
done_testing();
