# No ingest on a standby: the flusher does not run there, the buffer
# refuses rows, flush() says why; after promotion the flusher starts and
# ingest works.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;

my $primary = machpay_node('primary', allows_streaming => 1, conf => <<EOC);
machpay.port = 0
machpay.sse_port = 0
EOC
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

my $log = q{{"source":"log","entity_id":"QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg","time":%d,"level":"info","message":"standby %s"}};

is($standby->safe_psql('postgres',
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'machpay flusher'"), 0,
	'no flusher on a standby');
my ($rc, $out, $err) = $standby->psql('postgres',
	"SELECT machpay.buffer_ingest('" . sprintf($log, time, 'a') . "')");
isnt($rc, 0, 'buffer_ingest fails on a standby');
like($err, qr/not accepting rows/, 'the buffer refuses rows (503-equivalent)');
($rc, $out, $err) = $standby->psql('postgres', 'SELECT machpay.flush()');
is($out, '0', 'flush() on a standby writes nothing');
like($err, qr/flusher is not running/, 'and says why');

$standby->promote;
ok($standby->poll_query_until('postgres',
	"SELECT machpay.buffer_ingest('" . sprintf($log, time, 'b') . "') IS NOT NULL"),
	'after promotion the flusher runs and accepts rows');
$standby->safe_psql('postgres', 'SELECT machpay.flush()');
is($standby->safe_psql('postgres',
	"SELECT count(*) FROM machpay.debug_logs WHERE message = 'standby b'"), 1,
	'and the rows land');

$standby->stop;
$primary->stop;
done_testing();
