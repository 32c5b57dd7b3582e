# High availability (README, "Running it highly available"): the deployment
# of `make ha-demo` (pg_auto_failover monitor, two data nodes, HAProxy on
# /readyz), with a client posting payment intents at 200/s through the
# entry.
#  1. The standby machine dies (every process of the node SIGKILLed): the
#     primary stops waiting for it and intents keep being answered 200.
#  2. The standby comes back and catches up; synchronous again.
#  3. The primary machine dies: the standby is promoted, the entry answers
#     200 again, every intent ever answered 200 is in payment_intents on the
#     new primary exactly once (with the id it was answered with), and a
#     console reconnecting through the SSE entry with its Last-Event-ID gets
#     "event: reset" and then live events.
# "Dies" is SIGSTOP of the node's whole process tree (pg_autoctl keeper,
# postmaster, every backend and worker) and then SIGKILL of all of it: no
# process of the node acts after any other one is gone, as when a machine
# loses power.
use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use IPC::Run ();
use Math::BigInt;
use Time::HiRes qw(time sleep);
use PostgreSQL::Test::Utils;
use Test::More;
use HaLoad;
use SseTest;

my $RATE = 200;
my $parent = $$;
my $dir = PostgreSQL::Test::Utils::tempdir('ha');
my ($load, %env);

$ENV{MACHPAY_HA_DIR} = $dir;
$ENV{MACHPAY_HA_NO_BUILD} = 1;
$ENV{PG_CONFIG} //= 'pg_config';

# A test killed by a signal cleans up too (END blocks run on exit only).
$SIG{INT} = $SIG{TERM} = $SIG{HUP} = sub { exit 1 };

END
{
	if ($$ == $parent)
	{
		$load->stop if $load;
		# Everything the deployment started, even after a failure.
		system('timeout', '90', 'bash', 'scripts/ha-down.sh');
	}
}

# ---- helpers -------------------------------------------------------------

sub base58_of_random_32
{
	my @alphabet = split //, '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
	my $hex = join '', map { sprintf '%02x', 1 + int(rand(255)) } 1 .. 32;
	my $n = Math::BigInt->from_hex($hex);
	my $s = '';
	while ($n > 0)
	{
		my ($q, $r) = $n->copy->bdiv(58);
		$s = $alphabet[$r] . $s;
		$n = $q;
	}
	return $s;
}

# A base port with base .. base+31 free on 127.0.0.1, below the kernel's
# ephemeral ports and the ports other TAP tests pick (from 49152).
sub free_port_base
{
	for (1 .. 200)
	{
		my $base = 20000 + 100 * int(rand(120));
		my $free = 1;
		for my $p ($base .. $base + 31)
		{
			my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p,
				Proto => 'tcp', Listen => 1, ReuseAddr => 0);
			if (!$s) { $free = 0; last; }
			close $s;
		}
		return $base if $free;
	}
	die 'no free port range';
}

# Runs a bash snippet with the deployment's helpers loaded, with a deadline.
sub ha_bash
{
	my ($script, $timeout, $quiet) = @_;
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run(['bash', '-c',
			". scripts/common.sh; . scripts/ha-lib.sh; ha_load '$dir'; $script"],
			'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout($timeout // 60));
	};
	diag("ha_bash: $script: " . ($@ || $err)) if !$ok && !$quiet;
	chomp $out;
	return $ok ? $out : undef;
}

sub psql_node
{
	my ($node, $sql) = @_;
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run(["$env{HA_BIN}/psql", '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1',
			'-h', $env{HA_SOCK}, '-p', $env{"HA_PG_$node"}, '-U', 'postgres',
			'-d', 'postgres', '-c', $sql], '<', \undef, '>', \$out, '2>', \$err,
			IPC::Run::timeout(30));
	};
	die "psql on $node: $sql: $err $@" unless $ok;
	chomp $out;
	return $out;
}

sub ready
{
	my ($port) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp', Timeout => 2) or return 0;
	print $s "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	my $sel = IO::Select->new($s);
	my $got = '';
	my $end = time + 2;
	while (time < $end && $sel->can_read($end - time))
	{
		my $n = sysread($s, my $buf, 4096);
		last if !$n;
		$got .= $buf;
	}
	close $s;
	return $got =~ m{^HTTP/1\.\d 200} ? 1 : 0;
}

sub wait_for
{
	my ($secs, $cond) = @_;
	my $end = time + $secs;
	while (time < $end)
	{
		return 1 if $cond->();
		sleep 0.2;
	}
	return 0;
}

sub primary_node
{
	my @p = grep { ready($env{"HA_HTTP_$_"}) } split / /, $env{HA_NODES};
	return @p == 1 ? $p[0] : undef;
}

# Every process of a node, found from its keeper and its postmaster.
sub node_processes
{
	my ($node) = @_;
	my %children;
	opendir(my $dh, '/proc') or die "/proc: $!";
	for my $pid (grep { /^\d+$/ } readdir $dh)
	{
		open(my $fh, '<', "/proc/$pid/stat") or next;
		my $stat = <$fh> // '';
		close $fh;
		my ($ppid) = $stat =~ /\)\s+\S+\s+(\d+)/ or next;
		push @{ $children{$ppid} }, $pid;
	}
	closedir $dh;
	my @roots;
	for my $f ("$dir/$node.pid", "$dir/$node/pgdata/postmaster.pid")
	{
		open(my $fh, '<', $f) or next;
		my $pid = <$fh>;
		close $fh;
		chomp $pid;
		push @roots, $pid if $pid =~ /^\d+$/ && kill 0, $pid;
	}
	my %seen;
	my @todo = @roots;
	while (@todo)
	{
		my $p = shift @todo;
		next if $seen{$p}++;
		push @todo, @{ $children{$p} // [] };
	}
	return keys %seen;
}

# The machine of $node dies: freeze the whole tree, then SIGKILL it.
sub kill_node
{
	my ($node) = @_;
	my %stopped;
	for (1 .. 5)
	{
		my @new = grep { !$stopped{$_} } node_processes($node);
		last unless @new;
		kill 'STOP', @new;
		$stopped{$_} = 1 for @new;
	}
	my $t = time;
	kill 'KILL', keys %stopped;
	note(sprintf 'killed %d processes of %s', scalar(keys %stopped), $node);
	return $t;
}

sub count_statuses
{
	my ($since, @r) = @_;
	my %n;
	$n{ $_->{status} }++ for grep { $_->{sent} >= $since } @r;
	return join(', ', map { "$_: $n{$_}" } sort { $a <=> $b } keys %n) || 'none';
}

sub first_200_after
{
	my ($t, @r) = @_;
	my ($first) = sort { $a->{done} <=> $b->{done} }
	  grep { $_->{status} == 200 && $_->{sent} >= $t } @r;
	return $first;
}

# Every intent answered 200 is in payment_intents on $node once, with the
# id it was answered with.
sub check_answered_intents
{
	my ($node, $gateway, $what, @r) = @_;
	my @ok = grep { $_->{status} == 200 } @r;
	my %rows;
	for my $line (split /\n/, psql_node($node, qq{
		SELECT nonce, count(*), min(id::text) FROM machpay.payment_intents
		WHERE gateway_id = '$gateway' GROUP BY nonce}))
	{
		my ($nonce, $count, $id) = split /\|/, $line;
		$rows{$nonce} = [ $count, $id ];
	}
	my @missing = grep { !$rows{ $_->{nonce} } } @ok;
	my @twice = grep { $rows{ $_->{nonce} } && $rows{ $_->{nonce} }[0] != 1 } @ok;
	my @other_id = grep { $rows{ $_->{nonce} } && $rows{ $_->{nonce} }[1] ne ($_->{id} // '') } @ok;
	cmp_ok(scalar(@ok), '>', 0, "$what: some intents answered 200");
	is(scalar(@missing), 0, "$what: every intent answered 200 (" . scalar(@ok) . ") is in payment_intents on $node")
	  or diag('missing nonces: ' . join(' ', map { $_->{nonce} } @missing[0 .. ($#missing < 9 ? $#missing : 9)]));
	is(scalar(@twice), 0, "$what: each of them once");
	is(scalar(@other_id), 0, "$what: each with the id it was answered with");
	my $dup = psql_node($node, qq{SELECT count(*) FROM (SELECT 1 FROM machpay.payment_intents
		WHERE gateway_id = '$gateway' GROUP BY nonce HAVING count(*) > 1) d});
	is($dup, '0', "$what: no intent stored twice");
}

# ---- the deployment ---------------------------------------------------------

$ENV{MACHPAY_HA_PORT_BASE} = free_port_base();
my ($out, $err) = ('', '');
my $up = eval {
	IPC::Run::run(['bash', 'scripts/ha-demo.sh'], '<', \undef, '>', \$out,
		'2>', \$err, IPC::Run::timeout(180));
};
ok($up, 'make ha-demo brings the deployment up') or BAIL_OUT("ha-demo: $@ $err");
note($out);

my %line;
for (split /\n/, $out)
{
	$line{node}{$1} = [ $2, $3, $4, $5 ] if /^node (\S+): pg (\d+) http (\d+) sse (\d+) data (\S+)$/;
	$line{entry} = $1 if m{^entry: http://127\.0\.0\.1:(\d+)$};
	$line{entry_sse} = $1 if m{^entry-sse: http://127\.0\.0\.1:(\d+)$};
	$line{key} = $1 if /^key: (\S+)$/;
	$line{console} = $1 if /^console-key: (\S+)$/;
}
is(scalar(keys %{ $line{node} // {} }), 2, 'two "node" lines');
ok($line{entry} && $line{entry_sse} && $line{key} && $line{console}, 'entry, entry-sse, key and console-key lines');

# The recorded settings, for the helpers.
for (split /\n/, ha_bash('set | grep -E "^(HA_|INGEST_KEY|CONSOLE_KEY)"'))
{
	$env{$1} = $2 if /^(\w+)=(.*)$/;
}
s/^'(.*)'$/$1/ for values %env;

my $primary = primary_node();
ok($primary, 'one node is ready (the primary)');
my ($standby) = grep { $_ ne ($primary // '') } split / /, $env{HA_NODES};
is(psql_node($primary, 'SHOW synchronous_standby_names') =~ /pgautofailover_standby/ ? 1 : 0,
	1, 'the primary waits for its standby on commit');
is(psql_node($standby, 'SELECT pg_is_in_recovery()'), 't', "$standby is a standby");

my $gateway = base58_of_random_32();
my $agent = base58_of_random_32();
my $token_id = base58_of_random_32();
my $nonce_base = int(time) * 1000;
my @all;

sub run_load
{
	my ($nonces) = @_;
	return HaLoad->start(port => $line{entry}, token => $line{key}, gateway => $gateway,
		agent => $agent, token_id => $token_id, nonce_base => $nonces, rate => $RATE,
		log => "$dir/load-$nonces.log", max_seconds => 150);
}

sub wait_answers_after
{
	my ($l, $t, $secs) = @_;
	my $first;
	wait_for($secs, sub { $first = first_200_after($t, $l->results); $first });
	return $first;
}

# ---- 1. the standby dies -------------------------------------------------------

$load = run_load($nonce_base);
ok(wait_for(30, sub { grep { $_->{status} == 200 } $load->results }), 'intents answered 200 through the entry');
sleep 2;
my $t_kill = kill_node($standby);
my $first = wait_answers_after($load, $t_kill, 90);
ok($first, 'with the standby dead, intents sent after its death are answered 200');
ok(wait_for(30, sub { psql_node($primary, 'SHOW synchronous_standby_names') eq '' }),
	'pg_auto_failover dropped the synchronous requirement');
my $t_async = time;
wait_for(20, sub { first_200_after($t_async + 2, $load->results) });
$load->stop;
my @r = $load->results;
push @all, @r;
diag(sprintf 'standby killed: first 200 for a request sent after the kill %.1f s after it; '
	  . 'statuses of requests sent after the kill: %s', $first ? $first->{done} - $t_kill : -1,
	count_statuses($t_kill, @r));
my @late = grep { $_->{status} == 200 && $_->{sent} >= $t_kill } @r;
my ($slowest) = sort { $b <=> $a } map { $_->{done} - $_->{sent} } @late;
diag(sprintf 'standby killed: slowest 200 for a request sent after the kill took %.1f s', $slowest // -1);
check_answered_intents($primary, $gateway, 'standby killed', @r);

# ---- 2. the standby comes back -------------------------------------------------

ok(defined ha_bash("ha_start_keeper $standby \"\$HA_DIR/$standby/pgdata\""), "$standby restarted");
ok(wait_for(120, sub { defined ha_bash('ha_sync_ready', 10, 1) }), "$standby caught up; the primary is synchronous again");
ok(wait_for(30, sub { psql_node($primary, 'SHOW synchronous_standby_names') =~ /pgautofailover_standby/ }),
	'synchronous_standby_names names the standby again');

# ---- 3. the primary dies -------------------------------------------------------

$load = run_load($nonce_base + 1_000_000);
ok(wait_for(30, sub { grep { $_->{status} == 200 } $load->results }), 'intents answered 200 before the failover');

my $console = sse_open($line{entry_sse}, "/v1/stream?types=payment_intent&access_token=$line{console}");
ok($console->read_until(qr/event: payment_intent\n/, 20), 'a console on entry-sse sees payment_intent events');
my @ev = grep { defined $_->{id} } $console->events;
my $last_id = $ev[-1]{id};
sleep 1;

$t_kill = kill_node($primary);
$first = wait_answers_after($load, $t_kill, 120);
ok($first, 'after the primary died, the entry answers 200 again');
my $new_primary = primary_node();
is($new_primary, $standby, "$standby was promoted and is the one the entry follows");

ok(wait_for(10, sub { !$console->read_some(0.2) }), 'the console on the dead primary was cut');
# The relay of the new primary starts at its promotion and reads the keys
# from the replicated table: retry until it serves (a deadline, not a wait).
my $again;
ok(wait_for(30, sub {
	$again->disconnect if $again;
	$again = eval { sse_open($line{entry_sse}, "/v1/stream?types=payment_intent&access_token=$line{console}",
		headers => { 'Last-Event-ID' => $last_id }) };
	return $again && ($again->response(5) // 0) == 200;
}), 'the console reconnects through entry-sse with the same key');
ok($again->read_until(qr/event: reset\n/, 20), 'and gets "event: reset" for its Last-Event-ID of the old primary');
ok($again->read_until(qr/event: payment_intent\n/, 20), 'then live payment_intent events from the new primary');
$again->disconnect;

wait_for(10, sub { first_200_after($first->{done} + 3, $load->results) });
$load->stop;
@r = $load->results;
push @all, @r;
undef $load;
my @after = grep { $_->{sent} >= $t_kill } @r;
my $failed = grep { $_->{status} != 200 && $_->{sent} < $first->{sent} } @after;
diag(sprintf 'primary killed: first 200 through the entry %.1f s after the kill; %d requests '
	  . 'failed meanwhile; statuses of requests sent after the kill: %s',
	$first->{done} - $t_kill, $failed, count_statuses($t_kill, @r));
check_answered_intents($new_primary, $gateway, 'primary killed', @r);
check_answered_intents($new_primary, $gateway, 'both runs', @all);

done_testing();
