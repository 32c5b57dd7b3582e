# SSE relay: a client that reads nothing is cut off while a fast client on
# the same relay keeps receiving every event, and memory stays bounded.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use MachpayTest;
use SseTest;

my $node = sse_node('sse_slow');
my $port = $node->{machpay_sse_port};

my $fast = sse_open($port, '/v1/stream?access_token=console-token&types=flood');
is($fast->response(5), 200, 'fast client connected');
my $slow = sse_open($port, '/v1/stream?access_token=console-token', rcvbuf => 4096);
is($slow->response(5), 200, 'slow client connected (and never reads again)');

# 4,000 events of ~6 kB (24 MB), in 40 transactions 50 ms apart, from a
# background psql.
my $sql = '';
for my $k (0 .. 39)
{
	my ($from, $to) = ($k * 100 + 1, $k * 100 + 100);
	$sql .= "SELECT count(machpay.notify_event(jsonb_build_object('type','flood','i',g,'pad',repeat('x',6000)))) FROM generate_series($from, $to) g;\nSELECT pg_sleep(0.05);\n";
}
my $file = PostgreSQL::Test::Utils::tempdir() . '/flood.sql';
PostgreSQL::Test::Utils::append_to_file($file, $sql);
my ($out, $err) = ('', '');
# A file, not stdin: IPC::Run feeds stdin only while we pump the harness.
my $psql = IPC::Run::start(
	[ 'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr('postgres'), '-f', $file ],
	'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(180));

ok($fast->read_until(qr/"i": 4000,/, 120), 'fast client received the last event');
$psql->finish;
my @got = grep { ($_->{event} // '') eq 'flood' } $fast->events;
is(scalar(@got), 4000, 'fast client received all 4,000 events');
my @order = map { $_->{data} =~ /"i": (\d+)/ ? $1 : -1 } @got;
is_deeply(\@order, [ 1 .. 4000 ], 'in order, none missing');

# The slow client's connection was shut down: it reads what the kernel
# buffered, then EOF, well short of 24 MB.
ok($slow->read_to_eof(60), 'slow client was disconnected');
my @slow = grep { ($_->{event} // '') eq 'flood' } $slow->events;
cmp_ok(scalar(@slow), '<', 4000, 'slow client did not get everything (' . scalar(@slow) . ' events)');
ok($node->log_contains('sse relay cut off a client'), 'the cut is logged');

# The relay's memory is bounded by its window, not by the slow client.
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay sse relay'");
my $rss = 0;
if (open(my $fh, '<', "/proc/$pid/status"))
{
	while (<$fh>) { $rss = $1 if /^VmRSS:\s+(\d+)/; }
	close $fh;
}
note("relay RSS after the flood: $rss kB");
cmp_ok($rss, '<', 200 * 1024, 'relay RSS stays bounded');

$fast->disconnect;
$slow->disconnect;
$node->stop;
done_testing();
