# MachpayTest: helpers shared by the TAP tests of machpay_receiver.
#
# machpay_node() gives a started cluster that preloads the library, with
# free ports for the ingest and SSE servers, and the extension created in
# the workers' database (postgres).
package MachpayTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Exporter 'import';

our @EXPORT = qw(machpay_node);

# machpay_node($name, conf => "extra lines", create_extension => 1)
sub machpay_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opts{allows_streaming} // 0);
	my $http_port = PostgreSQL::Test::Cluster::get_free_port();
	my $sse_port = PostgreSQL::Test::Cluster::get_free_port();
	$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'machpay_receiver'
machpay.database = 'postgres'
machpay.port = $http_port
machpay.sse_port = $sse_port
log_min_messages = info
# One telemetry writer whatever the machine's cores (tests that count or
# block "the flusher" rely on it); a test that wants more says so.
machpay.flush_workers = 1
EOC
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	$node->start;
	if ($opts{create_extension} // 1)
	{
		$node->safe_psql('postgres',
			'SET client_min_messages = warning; CREATE EXTENSION machpay_receiver CASCADE');
	}
	$node->{machpay_http_port} = $http_port;
	$node->{machpay_sse_port} = $sse_port;
	return $node;
}

1;
