# Payment intents never wait behind telemetry (issue 10, SPEC §4): while a
# telemetry batch is held by a lock on metric_points (its writer waits on
# the lock), an intent posted is answered 200 and stored once, a retry gets
# the same id back; while telemetry has filled its part of the buffer
# (429 for telemetry), intents are still answered 200, never 429.  Once the
# lock goes, every telemetry row answered 202 lands.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
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

# --- 3. the lock goes: every telemetry row answered 202 lands
$locker->query_safe('COMMIT');
$locker->quit;
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM machpay.metric_points}), $acc * 3,
	"every row of the $acc accepted events landed (3 per event)");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM machpay.payment_intent_keys WHERE nonce BETWEEN 7001 AND 7120}), 21,
	'every intent has one key in the registry');

$node->stop;
done_testing();
