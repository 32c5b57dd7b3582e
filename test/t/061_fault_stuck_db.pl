# Fault: the database is stuck for 30 s.  A session locks machpay.debug_logs
# and its backend is then frozen with SIGSTOP, so the flusher cannot write
# telemetry.  Expected: intents still committed (the flusher waits for a
# lock at most machpay.flush_lock_timeout and commits intents on their own),
# telemetry buffered until the buffer is full and then answered 429 with
# Retry-After, the memory of the ingest worker and of the flusher bounded
# (sampled from /proc during the stall), and once the backend runs again
# and releases the lock exactly the accepted rows land: none lost, none of
# a 429'd request, nothing dropped.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

my $STALL_S = 30;

my $node = machpay_node('stuck', conf => <<EOC);
machpay.auth = off
machpay.buffer_size = '1MB'
machpay.flush_retry_window = '300s'
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub pid_of
{
	my $pid = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = '$_[0]'");
	die "no $_[0]" unless $pid =~ /^\d+$/;
	return $pid;
}

sub mem_kb
{
	my ($pid) = @_;
	my %m;
	open(my $fh, '<', "/proc/$pid/status") or die "status of $pid: $!";
	while (my $line = <$fh>) { $m{$1} = $2 if $line =~ /^(VmRSS|RssAnon):\s+(\d+) kB/; }
	return \%m;
}

my %pids = (ingest => pid_of('machpay ingest'), flusher => pid_of('machpay flusher'));

sub body
{
	my ($tag) = @_;
	my $t = int(time) - 1;
	return json_array(map {
		qq({"source":"log","entity_id":"$AGENT_ID","time":$t,"level":"info","message":"st $tag $_ )
		  . ('x' x 600) . '"}'
	} 1 .. 100);
}

# Warm up, so the baseline memory includes a normal request's.
my $warm = 0;
for my $i (1 .. 10)
{
	$warm++ if http_req($port, method => 'POST', body => body("w$i"))->{status} == 202;
}
cmp_ok($warm, '>', 0, 'warm-up requests accepted');
sql('SELECT machpay.flush()');
is(sql("SELECT count(*) FROM machpay.debug_logs WHERE message LIKE 'st w%'"), $warm * 100,
	'warm-up landed');
my %base = map { $_ => mem_kb($pids{$_}) } keys %pids;

# --- the stall: a lock held by a frozen backend
my ($in, $out, $err) = ('', '', '');
my $locker = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-f', '-' ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN; LOCK TABLE machpay.debug_logs IN ACCESS EXCLUSIVE MODE; SELECT 'locked ' || pg_backend_pid();\n";
$locker->pump until $out =~ /locked (\d+)/;
my $locker_pid = $1;
kill 'STOP', $locker_pid or die "SIGSTOP: $!";

my ($accepted, $n429, $retry_after, $tag, %refused) = (0, 0, '', 0);
my (%intent_ok, %intent_other);
my $nonce = 5000;
my %max = map { $_ => { VmRSS => 0, RssAnon => 0 } } keys %pids;
my @samples;
my $t0 = time;
my $next_sample = $t0;
while (time - $t0 < $STALL_S)
{
	$tag++;
	my $r = http_req($port, method => 'POST', body => body($tag));
	if ($r->{status} == 202) { $accepted += 100; }
	elsif ($r->{status} == 429)
	{
		$n429++;
		$retry_after = $r->{headers}{'retry-after'} // '';
		$refused{$tag} = 1;
	}
	else { diag "unexpected $r->{status}: $r->{body}"; }
	# Intents while the buffer has room for them.
	if ($tag % 5 == 0 && $n429 == 0)
	{
		$r = http_req($port, method => 'POST', body => intent_event(++$nonce));
		if ($r->{status} == 200) { $intent_ok{$nonce} = 1; }
		else { $intent_other{$nonce} = $r->{status}; }
	}
	if (time >= $next_sample)
	{
		my @row = sprintf('%4.0fs', time - $t0);
		for my $p (sort keys %pids)
		{
			my $m = mem_kb($pids{$p});
			for my $k (qw(VmRSS RssAnon))
			{
				$max{$p}{$k} = $m->{$k} if $m->{$k} > $max{$p}{$k};
			}
			push @row, "$p $m->{VmRSS}/$m->{RssAnon} kB";
		}
		push @samples, join('  ', @row);
		$next_sample += 1;
	}
	sleep 0.02 if $n429 > 0;
}
diag "RSS/RssAnon during the stall, every 5 s:\n" . join("\n", map { $samples[$_] } grep { $_ % 5 == 0 } 0 .. $#samples);

cmp_ok($n429, '>', 0, 'the buffer filled: telemetry was answered 429');
like($retry_after, qr/^\d+$/, 'with Retry-After');
cmp_ok(scalar(keys %intent_ok), '>', 0, 'intents were committed during the stall');
is(scalar(keys %intent_other), 0, 'no intent posted while the buffer had room was refused')
  or diag explain \%intent_other;
is(sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'machpay flusher'"), 1,
	'the flusher is still running');
for my $p (sort keys %pids)
{
	diag "$p: VmRSS $base{$p}{VmRSS} -> max $max{$p}{VmRSS} kB, RssAnon $base{$p}{RssAnon} -> max $max{$p}{RssAnon} kB";
	cmp_ok($max{$p}{RssAnon} - $base{$p}{RssAnon}, '<', 32 * 1024,
		"$p: private memory grew by less than 32 MB");
	cmp_ok($max{$p}{VmRSS} - $base{$p}{VmRSS}, '<', 64 * 1024,
		"$p: resident memory grew by less than 64 MB (the buffer is 1 MB)");
}

# --- the backend runs again and lets go
my $dropped0 = sql("SELECT value FROM machpay.stat_receiver WHERE name = 'events_dropped'");
kill 'CONT', $locker_pid;
$in .= "COMMIT;\n\\q\n";
$locker->finish;
is(sql("SET statement_timeout = '120s'; SELECT machpay.flush() >= 0"), 't',
	'flush() completes once the lock is gone');
is(sql("SELECT count(*) FROM machpay.debug_logs WHERE message LIKE 'st %' AND message NOT LIKE 'st w%'"),
	$accepted, "exactly the $accepted accepted events landed");
is(sql("SELECT count(*) FROM machpay.debug_logs WHERE message ~ '^st ("
	. join('|', keys %refused) . ") '"), 0, 'nothing of a 429\'d request landed');
is(sql("SELECT value FROM machpay.stat_receiver WHERE name = 'events_dropped'"), $dropped0,
	'nothing was dropped');
my $ok_list = join(',', keys %intent_ok);
is(sql("SELECT count(*) FROM machpay.payment_intents WHERE nonce IN ($ok_list)"),
	scalar(keys %intent_ok), 'every 200\'d intent is stored once');
ok(wait_ready($port, 30), '/readyz is 200 again');

$node->stop;
done_testing();
