# The ingest port of a standby: alive (/healthz 200) but not ready
# (/readyz 503) and ingest answers 503; after promotion it ingests.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;
use MachpayHttp;

my $primary = machpay_node('http_primary', allows_streaming => 1, conf => "machpay.auth = off\n");
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('http_standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
# Its own ports: SO_REUSEPORT would otherwise let it share the primary's.
my $port = PostgreSQL::Test::Cluster::get_free_port();
my $sse = PostgreSQL::Test::Cluster::get_free_port();
$standby->append_conf('postgresql.conf', "machpay.port = $port\nmachpay.sse_port = $sse\n");
$standby->start;
$primary->wait_for_catchup($standby);

my $r;
for (1 .. 150)
{
	$r = http_req($port, path => '/healthz');
	last if $r->{status} == 200;
	select(undef, undef, undef, 0.2);
}
is($r->{status}, 200, 'standby: healthz 200');
# Give the worker time to see the extension (it checks once a second).
$standby->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'machpay ingest' AND query LIKE 'serving%'});
is(http_req($port, path => '/readyz')->{status}, 503, 'standby: readyz 503');
$r = http_req($port, method => 'POST', body => gateway_event());
is($r->{status}, 503, 'standby: ingest 503');
like($r->{body}, qr/"error":"standby"/, 'standby: says why');
is(http_req($port, http2 => 1, method => 'POST', body => gateway_event())->{status}, 503,
	'standby: ingest 503 over HTTP/2');

$standby->promote;
ok(wait_ready($port), 'promoted: readyz 200');
is(http_req($port, method => 'POST', body => gateway_event())->{status}, 202, 'promoted: ingest 202');

$standby->stop;
$primary->stop;
done_testing();
