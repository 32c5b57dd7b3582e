# SPEC §7: memory does not grow without bound under load or while the
# database is stuck.  The private memory (RssAnon: the shared buffer is not
# counted) of every worker is sampled while h2load posts telemetry, in two
# rounds of the same size, then while the tables are locked so nothing can
# be flushed and the buffer fills up.  A worker whose memory grew with the
# number of requests would be well past its first round by the end.
use strict;
use warnings;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time);
use Test::More;
use MachpayTest;
use MachpayHttp;

my $h2load = machpay_tool('h2load');
if (!$h2load)
{
	plan skip_all => 'h2load is not installed (scripts/deps.sh installs it)'
	  unless $ENV{MACHPAY_REQUIRE_TOOLS};
	done_testing();
	exit;
}

my $node = machpay_node('memory', conf => <<'EOC');
machpay.auth = off
machpay.http_workers = 2
machpay.buffer_size = 1MB
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'server ready');

my %pids = map { my ($pid, $type) = split /\|/; ("$type $pid" => $pid) } split /\n/,
  $node->safe_psql('postgres', q{
	SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type LIKE 'machpay %' ORDER BY 2, 1});
is(scalar(grep { /^machpay ingest/ } keys %pids), 2, 'two ingest workers');
ok((grep { /^machpay flusher/ } keys %pids), 'a flusher');

# Private resident memory of a process, kB.
sub rss_anon
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	my $kb;
	while (<$fh>) { $kb = $1 if /^RssAnon:\s+(\d+)/; }
	close $fh;
	return $kb;
}

# Runs h2load to the end, sampling every worker; returns the peaks.
sub load_round
{
	my ($name, @args) = @_;
	my $file = PostgreSQL::Test::Utils::tempdir() . '/body.json';
	open(my $fh, '>', $file) or die $!;
	print $fh json_array(gateway_event(), sdk_event(), log_event());
	close $fh;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ $h2load, '-d', $file, '-H', 'content-type: application/json',
			@args, "http://127.0.0.1:$port/v1/ingest" ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(300));
	my %peak;
	while ($h->pumpable)
	{
		for my $k (keys %pids)
		{
			my $kb = rss_anon($pids{$k}) // next;
			$peak{$k} = $kb if !defined $peak{$k} || $kb > $peak{$k};
		}
		$h->pump_nb;
		select(undef, undef, undef, 0.1);
	}
	$h->finish;
	my ($done) = $out =~ /requests: \d+ total, \d+ started, (\d+) done/;
	my ($codes) = $out =~ /status codes: ([^\n]*)/;
	note("$name: $done requests done; status codes: " . ($codes // '?'));
	note("$name peak RssAnon kB: " . join(', ', map { "$_ = $peak{$_}" } sort keys %peak));
	return (\%peak, $done // 0, $out);
}

my ($p1, $n1) = load_round('round 1', '-n', 4000, '-c', 16, '-m', 4);
is($n1, 4000, 'round 1: every request answered');
my ($p2, $n2) = load_round('round 2', '-n', 4000, '-c', 16, '--h1');
is($n2, 4000, 'round 2 (HTTP/1.1): every request answered');

# ---- a stuck database: the flusher cannot write, the buffer fills ----
my $lock = $node->background_psql('postgres');
$lock->query_safe('BEGIN; LOCK TABLE machpay.metric_points, machpay.debug_logs IN ACCESS EXCLUSIVE MODE');
my ($p3, $n3, $out3) = load_round('stuck', '-n', 4000, '-c', 16, '-m', 4);
is($n3, 4000, 'stuck database: every request answered');
like($out3, qr/status codes: \d+ 2xx, \d+ 3xx, [1-9]\d* 4xx/, 'the full buffer answers 429');
$lock->query_safe('COMMIT');
$lock->quit;

for my $k (sort keys %pids)
{
	my @peaks = map { $_->{$k} // 0 } ($p1, $p2, $p3);
	# 16 MB: far above what a worker needs for one round's requests in
	# flight, far below what 8,000 more requests would leave behind if each
	# kept even 2 kB.
	cmp_ok($peaks[1], '<=', $peaks[0] + 16 * 1024, "$k: no growth from round 1 to round 2 (@peaks kB)");
	cmp_ok($peaks[2], '<=', $peaks[0] + 16 * 1024, "$k: no growth while the database is stuck");
	cmp_ok($peaks[2], '<', 128 * 1024, "$k: under 128 MB of private memory");
}
ok($node->poll_query_until('postgres', 'SELECT machpay.flush() >= 0'), 'the buffer drains once the lock is gone');

$node->stop;
done_testing();
