# The shared-memory buffer and the flusher, driven through SQL
# (machpay.buffer_ingest, machpay.flush): flushes by call, by batch_size and
# for intents; backpressure when the buffer is full and a table is locked;
# durability across fast/immediate stops and a kill -9 of the flusher;
# a failing flush keeps telemetry and fails intents.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);
use MachpayTest;

my $ENTITY = 'QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg';
my $GATEWAY = 'BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp';
my $TOKEN = '4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1';
my $SIG = '3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt';

# A JSON array of $n log events whose messages start with $tag.
sub logs
{
	my ($n, $tag) = @_;
	my $t = int(time);
	return '[' . join(',', map {
		qq({"source":"log","entity_id":"$ENTITY","time":$t,"level":"info","message":"$tag $_"})
	} 1 .. $n) . ']';
}

sub intent
{
	my ($nonce, $amount) = @_;
	$amount //= 5000;
	return qq({"source":"payment_intent","gateway_id":"$GATEWAY","agent_id":"$ENTITY","nonce":"$nonce","amount":$amount,"token":"$TOKEN","signature":"$SIG"});
}

sub count_logs
{
	my ($node, $tag) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM machpay.debug_logs WHERE message LIKE '$tag %'");
}

sub counter
{
	my ($node, $name) = @_;
	return $node->safe_psql('postgres',
		"SELECT value FROM machpay.stat_receiver WHERE name = '$name'");
}

sub ingest
{
	my ($node, $json) = @_;
	return $node->safe_psql('postgres', "SELECT machpay.buffer_ingest('$json')");
}

# Timers long enough that only flush(), batch_size or intents flush.
my $node = machpay_node('flusher', conf => <<EOC);
machpay.flush_interval = '1h'
machpay.batch_size = 100000
machpay.port = 0
machpay.sse_port = 0
restart_after_crash = on
EOC

$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'machpay flusher' AND query NOT LIKE 'waiting%'")
  or die "flusher did not start";
# The flusher may still be attaching right after it shows up.
$node->poll_query_until('postgres', "SELECT machpay.flush() >= 0");

# --- rows land after flush()
my $res = ingest($node, logs(5, 'f1'));
like($res, qr/"accepted": 5/, 'buffer_ingest accepts the events');
is(count_logs($node, 'f1'), 0, 'nothing is committed before a flush');
like($node->safe_psql('postgres', 'SELECT bytes_used > 0, capacity > 0, intents_waiting, accepting FROM machpay.buffer_status()'),
	qr/^t\|t\|0\|t$/, 'buffer gauges show the buffered rows');
is($node->safe_psql('postgres', 'SELECT machpay.flush()'), 5, 'flush() returns the rows written');
is(count_logs($node, 'f1'), 5, 'rows land after flush()');
is($node->safe_psql('postgres', 'SELECT machpay.flush()'), 0, 'an empty flush writes nothing');
cmp_ok(counter($node, 'flushes'), '>=', 1, 'flushes are counted');
cmp_ok(counter($node, 'flush_duration_le_inf'), '>=', 1, 'flush durations are observed');

# --- batch_size triggers a flush without flush()
$node->safe_psql('postgres', "ALTER SYSTEM SET machpay.batch_size = 10; SELECT pg_reload_conf()");
sleep(0.5);
ingest($node, logs(10, 'f2'));
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 10 FROM machpay.debug_logs WHERE message LIKE 'f2 %'"),
	'batch_size events are flushed without flush()');
$node->safe_psql('postgres', "ALTER SYSTEM RESET machpay.batch_size; SELECT pg_reload_conf()");

# --- flush_interval flushes what waits
$node->safe_psql('postgres',
	"ALTER SYSTEM SET machpay.flush_interval = '200ms'; SELECT pg_reload_conf()");
sleep(0.5);
ingest($node, logs(30, 'timer'));
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 30 FROM machpay.debug_logs WHERE message LIKE 'timer %'"),
	'flush_interval flushes waiting events without flush()');
$node->safe_psql('postgres',
	"ALTER SYSTEM RESET machpay.flush_interval; SELECT pg_reload_conf()");
sleep(0.5);

# --- intents are committed before buffer_ingest returns (group commit)
$res = ingest($node, '[' . intent(1001) . ',' . intent(1002) . ']');
like($res, qr/"intents":/, 'the answer carries the intents');
like($res, qr/"duplicate": false/, 'new intents are not duplicates');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.payment_intents WHERE nonce IN (1001, 1002)"), 2,
	'intents are committed when buffer_ingest returns, without flush()');
my ($id1) = $res =~ /"id": "([0-9a-f-]+)"/;
my $res2 = ingest($node, intent(1001));
like($res2, qr/"duplicate": true/, 'a retried intent is a duplicate');
like($res2, qr/\Q$id1\E/, 'and gets the first id back');

# Many intents in one payload: outcomes travel through the ring entry.
$res = ingest($node, '[' . join(',', map { intent(1100 + $_) } 1 .. 12) . ',' . intent(1001) . ']');
my @ids = $res =~ /"id": "([0-9a-f-]+)"/g;
is(scalar(@ids), 13, 'every intent of a big payload gets its id');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.payment_intents WHERE nonce BETWEEN 1101 AND 1112"), 12,
	'and is committed');
is($ids[12], $id1, 'the duplicate among them gets the first id back');

# --- a full buffer refuses whole payloads while a table is locked
$node->append_conf('postgresql.conf', "machpay.buffer_size = '1MB'");
$node->restart;
$node->poll_query_until('postgres', "SELECT machpay.flush() >= 0");
my ($in, $out, $err) = ('', '', '');
my $locker = IPC::Run::start(
	[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-f', '-' ],
	'<', \$in, '>', \$out, '2>', \$err);
$in .= "BEGIN; LOCK TABLE machpay.debug_logs IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n";
$locker->pump until $out =~ /locked/;

my ($accepted, $refused) = (0, 0);
for my $i (1 .. 200)
{
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"SELECT machpay.buffer_ingest('" . logs(500, "f3b$i") . "')");
	if ($ret == 0) { $accepted++; }
	elsif ($stderr =~ /buffer is full/) { $refused++; last; }
	else { diag $stderr; last; }
	# Wake the flusher so it blocks on the lock with a batch in hand.
	$node->psql('postgres', "SELECT pg_notify('x', '')") if $i == 1;
}
ok($accepted > 0, "payloads accepted before the buffer filled ($accepted)");
is($refused, 1, 'a payload that does not fit is refused with "buffer is full"');
cmp_ok(counter($node, 'events_dropped'), '==', 0, 'nothing dropped while waiting');

$in .= "COMMIT;\n";
$in .= "\\q\n";
$locker->finish;
$node->safe_psql('postgres', 'SELECT machpay.flush()');
my $landed = $node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.debug_logs WHERE message LIKE 'f3b%'");
is($landed, $accepted * 500, 'every accepted row lands after the lock is released, none of the refused');

# --- the ring wraps many times; every row lands once
$node->safe_psql('postgres', q{
DO $$
DECLARE
	payload jsonb;
BEGIN
	FOR i IN 1..60 LOOP
		SELECT jsonb_agg(jsonb_build_object('source', 'log',
				'entity_id', 'QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg',
				'time', floor(extract(epoch FROM now())), 'level', 'info',
				'message', format('wrap %s-%s', i, j)))
		  INTO payload FROM generate_series(1, 100 + i * 7) j;
		PERFORM machpay.buffer_ingest(payload);
		IF i % 8 = 0 THEN
			PERFORM machpay.flush();
		END IF;
	END LOOP;
END $$});
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres',
	"SELECT count(*), count(DISTINCT message) FROM machpay.debug_logs WHERE message LIKE 'wrap %'"),
	(100 * 60 + 7 * 60 * 61 / 2) . '|' . (100 * 60 + 7 * 60 * 61 / 2),
	'every row of a workload that wraps the ring lands exactly once');

# --- a clean stop flushes everything accepted
ingest($node, logs(50, 'f4'));
$node->stop('fast');
$node->start;
is(count_logs($node, 'f4'), 50, 'accepted telemetry survives pg_ctl stop -m fast');

# --- an acknowledged intent survives an immediate stop
$node->poll_query_until('postgres', "SELECT machpay.flush() >= 0");
$res = ingest($node, intent(2001));
like($res, qr/"duplicate": false/, 'intent acknowledged');
$node->stop('immediate');
$node->start;
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.payment_intents WHERE nonce = 2001"), 1,
	'an acknowledged intent survives pg_ctl stop -m immediate');

# --- kill -9 of the flusher: crash restart, service resumes
$node->poll_query_until('postgres', "SELECT machpay.flush() >= 0");
$res = ingest($node, intent(3001));
my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay flusher'");
ok($pid =~ /^\d+$/, 'flusher pid found');
my $t0 = time;
kill 'KILL', $pid;
ok($node->poll_query_until('postgres',
	"SELECT machpay.buffer_ingest('" . intent(3002) . "') IS NOT NULL"),
	'intents are accepted and committed again after the flusher is killed');
diag sprintf("service resumed %.1f s after kill -9 of the flusher", time - $t0);
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.payment_intents WHERE nonce IN (2001, 3001, 3002)"), 3,
	'no acknowledged intent lost');

# --- a failing flush: telemetry is kept and retried, intents fail
$node->safe_psql('postgres',
	"ALTER TABLE machpay.debug_logs ADD CONSTRAINT no_boom CHECK (message NOT LIKE 'boom%')");
my $failures = counter($node, 'flush_failures');
ingest($node, logs(3, 'boom'));
ingest($node, logs(4, 'good'));
# flush() waits until the batch commits, which it cannot: give up after 1 s.
$node->psql('postgres', "SET statement_timeout = '1s'; SELECT machpay.flush()");
ok($node->poll_query_until('postgres',
	"SELECT value > $failures FROM machpay.stat_receiver WHERE name = 'flush_failures'"),
	'the failing flush is counted');
is(count_logs($node, 'boom'), 0, 'the refused entry is not committed');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 4 FROM machpay.debug_logs WHERE message LIKE 'good %'"),
	'the rest of the failed batch is committed without it');

$node->safe_psql('postgres',
	"ALTER TABLE machpay.payment_intents ADD CONSTRAINT no_13 CHECK (amount <> 13)");
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"SELECT machpay.buffer_ingest('" . intent(4001, 13) . "')");
isnt($ret, 0, 'an intent that cannot be committed fails the call');
like($stderr, qr/could not be committed/, 'with the 503-equivalent error');
cmp_ok(counter($node, 'intents_failed'), '>=', 1, 'failed intents are counted');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.payment_intent_keys WHERE nonce = 4001"), 0,
	'nothing of the failed intent is stored');

$node->safe_psql('postgres', "ALTER TABLE machpay.debug_logs DROP CONSTRAINT no_boom");
$node->safe_psql('postgres', "ALTER TABLE machpay.payment_intents DROP CONSTRAINT no_13");
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is(count_logs($node, 'boom'), 3, 'kept telemetry lands once the failure is gone');
like(ingest($node, intent(4001, 13)), qr/"duplicate": false/,
	'the retried intent is stored once it can be');

# Telemetry that cannot be written for machpay.flush_retry_window is dropped and counted.
$node->safe_psql('postgres',
	"ALTER TABLE machpay.debug_logs ADD CONSTRAINT no_drop CHECK (message NOT LIKE 'todrop%')");
$node->safe_psql('postgres', "ALTER SYSTEM SET machpay.flush_retry_window = '2s'; SELECT pg_reload_conf()");
my $dropped = counter($node, 'events_dropped');
ingest($node, logs(2, 'todrop'));
$node->psql('postgres', "SET statement_timeout = '1s'; SELECT machpay.flush()");
ok($node->poll_query_until('postgres',
	"SELECT value >= $dropped + 2 FROM machpay.stat_receiver WHERE name = 'events_dropped'"),
	'refused telemetry is dropped after the retry window, and counted');
$node->safe_psql('postgres', "ALTER SYSTEM RESET machpay.flush_retry_window; SELECT pg_reload_conf()");
$node->safe_psql('postgres', "ALTER TABLE machpay.debug_logs DROP CONSTRAINT no_drop");
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is(count_logs($node, 'todrop'), 0, 'dropped telemetry never lands');

$node->stop;

# --- without shared_preload_libraries there is no buffer
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
$plain->safe_psql('postgres',
	'SET client_min_messages = warning; CREATE EXTENSION machpay_receiver CASCADE');
my ($rc, $o, $e) = $plain->psql('postgres', 'SELECT machpay.flush()');
is($o, '0', 'flush() without the preloaded library returns 0');
like($e, qr/NOTICE:  machpay buffer is not in use/, 'with a notice');
$plain->stop;

done_testing();
