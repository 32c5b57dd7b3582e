# Twenty concurrent clients (half HTTP/1.1 keep-alive, half HTTP/2) post
# telemetry: the events the answers say were accepted are exactly the rows
# stored after a flush; then with two ingest workers sharing the port.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use File::Temp qw(tempdir);
use POSIX ();
use Time::HiRes qw(sleep);
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('http_conc', conf => <<'EOC');
machpay.auth = off
machpay.http_workers = 2
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'server ready');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'machpay ingest'}),
	2, 'two ingest workers share the port');

my $clients = 20;
my $requests = 10;
my $per_request = 10;
my $dir = tempdir(CLEANUP => 1);

# One body per client: $per_request gateway events, three rows each.
my @pids;
for my $c (1 .. $clients)
{
	my $pid = fork();
	die "fork: $!" if !defined $pid;
	if ($pid == 0)
	{
		my ($accepted, $answers) = (0, '');
		for my $i (1 .. $requests)
		{
			my $body = json_array(map { gateway_event($GATEWAY_ID, int(time) - $_) } 1 .. $per_request);
			my $r = http_req($port, http2 => $c % 2, method => 'POST', body => $body);
			$answers .= "$r->{status}\n";
			$accepted += $1 if $r->{status} == 202 && $r->{body} =~ /"accepted":(\d+)/;
		}
		open(my $fh, '>', "$dir/$c") or die;
		print $fh "$accepted\n$answers";
		close $fh;
		POSIX::_exit(0);    # no END blocks: they would stop the node
	}
	push @pids, $pid;
}
waitpid($_, 0) for @pids;

my ($accepted, %statuses) = (0);
for my $c (1 .. $clients)
{
	open(my $fh, '<', "$dir/$c") or die "client $c left no result";
	my @lines = <$fh>;
	chomp @lines;
	$accepted += shift @lines;
	$statuses{$_}++ for @lines;
}
note('answers: ' . join(', ', map { "$_ x $statuses{$_}" } sort keys %statuses));
is($statuses{202}, $clients * $requests, 'every request answered 202');
is($accepted, $clients * $requests * $per_request, 'every event accepted');

$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.metrics WHERE entity_id = '$GATEWAY_ID'"),
	$accepted * 3, 'accepted events equal stored rows (3 rows per event)');

# A terminated worker drains, exits and is started again by the postmaster.
my $old = $node->safe_psql('postgres',
	q{SELECT min(pid) FROM pg_stat_activity WHERE backend_type = 'machpay ingest'});
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old)");
my $back = 0;
for (1 .. 300)
{
	my $pids = $node->safe_psql('postgres',
		q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'machpay ingest'});
	my @p = split /,/, $pids;
	if (@p == 2 && !grep { $_ == $old } @p) { $back = 1; last; }
	sleep 0.1;
}
ok($back, 'a terminated ingest worker is restarted');
ok(wait_ready($port), 'and the port serves again');
is(http_req($port, method => 'POST', body => gateway_event())->{status}, 202, 'ingest works after the restart');

$node->stop;
done_testing();
