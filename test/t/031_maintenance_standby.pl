# A standby runs no maintenance worker (it starts when recovery finishes);
# after promotion the worker starts and runs its jobs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;

my $primary = machpay_node('maint_primary', allows_streaming => 1, conf => <<'EOC');
machpay.rollup_interval = 1s
machpay.maintenance_interval = 2s
EOC
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('maint_standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
# Its own ports: SO_REUSEPORT would otherwise let it share the primary's.
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $sse = PostgreSQL::Test::Cluster::get_free_port();
$standby->append_conf('postgresql.conf', "machpay.port = $port\nmachpay.sse_port = $sse\n");
$standby->start;
ok( $primary->poll_query_until('postgres', q{
	SELECT count(*) > 0 FROM machpay.job_runs WHERE job = 'maintenance' AND status = 'succeeded'}),
	'primary runs maintenance');
$primary->wait_for_catchup($standby);

is( $standby->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'machpay maintenance'}),
	'0', 'standby: no maintenance worker');

my $before = $primary->safe_psql('postgres', q{SELECT max(run_id) FROM machpay.job_runs});
$primary->stop;
$standby->promote;
ok( $standby->poll_query_until('postgres', qq{
	SELECT count(DISTINCT job) = 2 FROM machpay.job_runs
	 WHERE run_id > $before AND status = 'succeeded' AND NOT manual}),
	'promoted: the worker runs both jobs');

$standby->stop;
done_testing();
