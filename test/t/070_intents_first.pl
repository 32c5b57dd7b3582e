# Payment intents never wait behind telemetry (issue 10, SPEC §4): while a
# telemetry batch is held by a lock on metric_points (its writer waits on
# the lock), an intent posted is answered 200 and stored once, a retry gets
# the same id back; while telemetry has filled its part of the buffer
# (429 for telemetry), intents are still answered 200, never 429.  A
# telemetry request that finds its part full waits for room (up to
# machpay.http_overload_wait) and is taken once the lock goes and the writer
# frees it.  Every telemetry row answered 202 lands.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('intents_first', conf => <<'EOC');
machpay.auth = off
machpay.buffer_size = '1MB'
machpay.flush_interval = '100ms'
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'machpay intent writer'}), 1,
	'payment intents have a writer of their own');

# [[id, duplicate], ...] from a 200 body, in index order.
sub intent_ids
{
	my ($body) = @_;
	my @ids;
	while ($body =~ /\{"index":(\d+),"id":"([0-9a-f-]{36})","duplicate":(true|false)\}/g)
	{
		$ids[$1] = [ $2, $3 ];
	}
	return @ids;
}

sub stored
{
	my ($nonce) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) FROM machpay.payment_intents WHERE nonce = $nonce});
}

sub writer_waits_on_lock
{
	return $node->poll_query_until('postgres', q{
		SELECT count(*) >= 1 FROM pg_stat_activity
		WHERE backend_type = 'machpay flusher' AND wait_event_type = 'Lock'});
}

# --- 1. a telemetry batch held by a lock on metric_points
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE machpay.metric_points IN ACCESS EXCLUSIVE MODE');
my $t_end = int(time) - 1;
my $acc = 0;
my $r = http_req($port, method => 'POST',
	body => json_array(map { gateway_event($GATEWAY_ID, $t_end - $_) } 1 .. 10));
is($r->{status}, 202, 'telemetry accepted');
$acc += $1 if $r->{body} =~ /"accepted":(\d+)/;
ok(writer_waits_on_lock(), 'the telemetry writer took the batch and waits on the lock');

$r = http_req($port, method => 'POST', body => intent_event(7001));
is($r->{status}, 200, 'an intent posted meanwhile is answered 200');
my @ids = intent_ids($r->{body});
is($ids[0][1], 'false', 'as a new intent');
is(stored(7001), 1, 'it is stored, once, while the telemetry batch still waits');
$r = http_req($port, method => 'POST', body => intent_event(7001));
is($r->{status}, 200, 'its retry is answered 200');
my @again = intent_ids($r->{body});
is_deeply([ $again[0][0], $again[0][1] ], [ $ids[0][0], 'true' ],
	'with the first id, marked duplicate');
is(stored(7001), 1, 'still stored once');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'machpay flusher' AND wait_event_type = 'Lock'}), 1,
	'the telemetry batch is still held by the lock');

# --- 2. telemetry fills its part of the buffer: 429 for telemetry, 200 for intents
my ($n429, $other) = (0, 0);
for my $i (1 .. 400)
{
	my $body = json_array(map { gateway_event($GATEWAY_ID, $t_end - 100 - $i * 60 - $_) } 1 .. 50);
	$r = http_req($port, http2 => $i % 2, method => 'POST', body => $body);
	if ($r->{status} == 202)
	{
		$acc += $1 if $r->{body} =~ /"accepted":(\d+)/;
	}
	elsif ($r->{status} == 429)
	{
		$n429++;
		last if $n429 >= 3;
	}
	else
	{
		$other++;
		diag "unexpected answer $r->{status}: $r->{body}";
		last;
	}
}
cmp_ok($n429, '>=', 1, 'telemetry filled its part of the buffer: 429');
is($other, 0, 'no other answer to telemetry');
my %status;
my %first_id;
for my $nonce (7101 .. 7120)
{
	$r = http_req($port, http2 => $nonce % 2, method => 'POST', body => intent_event($nonce));
	$status{ $r->{status} }++;
	my @got = intent_ids($r->{body});
	$first_id{$nonce} = $got[0][0] if @got;
}
is_deeply(\%status, { 200 => 20 }, 'every intent posted while telemetry is full is answered 200, none 429');
is(http_req($port, method => 'POST',
	body => json_array(map { gateway_event($GATEWAY_ID, $t_end - 50000 - $_) } 1 .. 50))->{status},
	429, 'telemetry is still refused: it is the telemetry part that is full');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM machpay.payment_intents WHERE nonce BETWEEN 7101 AND 7120}), 20,
	'the 20 intents are stored');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM machpay.payment_intents
	WHERE nonce BETWEEN 7101 AND 7120
	  AND id::text IN ('} . join("','", values %first_id) . q{')}), 20,
	'each with the id it was answered with');
# The locker's own session can read the table it locked.
is($locker->query_safe('SELECT count(*) FROM machpay.metric_points'), 0,
	'no telemetry row committed while the lock is held');

# --- 3. a telemetry request that finds its part full waits for room
# (machpay.http_overload_wait) instead of a 429 at once, and is taken when
# the lock goes and the writer frees the room.
sub deferred_count
{
	my $m = http_req($port, path => '/metrics')->{body};
	return $m =~ /^machpay_http_bodies_deferred_total (\d+)$/m ? $1 : -1;
}
$node->safe_psql('postgres', "ALTER SYSTEM SET machpay.http_overload_wait = '60s'");
$node->safe_psql('postgres', "ALTER SYSTEM SET machpay.http_overload_queue = 1");
$node->reload;
my $wait_body = json_array(map { gateway_event($GATEWAY_ID, $t_end - 90000 - $_) } 1 .. 50);
my $wait_req = "POST /v1/ingest HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
  . "Content-Length: " . length($wait_body) . "\r\n\r\n" . $wait_body;
my ($waiting, $answer, $parked);
for my $try (1 .. 60)
{
	my $before = deferred_count();
	$waiting = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  or die "connect: $!";
	syswrite($waiting, $wait_req);
	# Refused at once while the reload has not reached the worker yet.
	if (IO::Select->new($waiting)->can_read(0.5))
	{
		sysread($waiting, $answer, 65536);
		close($waiting);
		next;
	}
	$parked = deferred_count() > $before;
	last if $parked;
}
ok($parked, 'a telemetry request finding the buffer full waits for room');
$answer = '';
ok(!IO::Select->new($waiting)->can_read(0.5), 'with no answer while the room is still taken');
is(http_req($port, method => 'POST',
	body => json_array(map { gateway_event($GATEWAY_ID, $t_end - 95000 - $_) } 1 .. 50))->{status},
	429, 'the queue of waiting requests (http_overload_queue = 1) is full: the next one gets 429 at once');
$locker->query_safe('COMMIT');
$locker->quit;
my $deadline = time + 60;
while (time < $deadline && IO::Select->new($waiting)->can_read($deadline - time))
{
	my $n = sysread($waiting, my $chunk, 65536);
	last if !$n;
	$answer .= $chunk;
	last if $answer =~ /\r\n\r\n.*\}/s;
}
like($answer, qr{^HTTP/1\.1 202 }, 'once the writer freed room it is taken: 202');
$acc += $1 if $answer =~ /"accepted":(\d+)/;
close($waiting);
$node->safe_psql('postgres', 'ALTER SYSTEM RESET machpay.http_overload_wait');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET machpay.http_overload_queue');
$node->reload;

# --- 4. every telemetry row answered 202 lands
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM machpay.metric_points}), $acc * 3,
	"every row of the $acc accepted events landed (3 per event)");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM machpay.payment_intent_keys WHERE nonce BETWEEN 7001 AND 7120}), 21,
	'every intent has one key in the registry');

$node->stop;
done_testing();
