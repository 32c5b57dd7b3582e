# Defect: a 202'd event that PostgreSQL then cannot store must not stall
# anyone.  (1) A log whose fields hold a number numeric cannot store is a
# per-event error, and an intent in the same request is answered 200.
# (2) An event that looks storable but fails at flush (a BEFORE INSERT
# trigger raises for message 'poison') is isolated at once: intents of
# other requests and of its own request are committed and answered 200
# within their wait (SPEC: 503 only if they cannot be committed), other
# telemetry lands, and the poisoned event is retried until
# machpay.flush_retry_window and then dropped and counted.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('poison', conf => <<EOC);
machpay.auth = off
machpay.flush_retry_window = '20s'
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');

sub log_msg
{
	my ($msg, $fields) = @_;
	my $t = int(time) - 1;
	$fields //= '{"attempt":3}';
	return qq({"source":"log","entity_id":"$AGENT_ID","time":$t,"level":"warn","message":"$msg","fields":$fields});
}

sub post
{
	my ($body) = @_;
	return http_req($port, method => 'POST', body => $body);
}

sub count_sql
{
	my ($sql) = @_;
	return $node->safe_psql('postgres', $sql);
}

sub counter
{
	my ($name) = @_;
	return count_sql("SELECT value FROM machpay.stat_receiver WHERE name = '$name'");
}

# --- (1) what PostgreSQL's input functions refuse is refused per event
my $r = post(json_array(log_msg('overflow', '{"n":1e999999}'), intent_event(101)));
is($r->{status}, 200, 'poisoned log beside an intent: the request is answered 200');
like($r->{body}, qr/"rejected":1,"errors":\[\{"index":0,"code":"invalid_type"/,
	'the poisoned log is a per-event invalid_type');
like($r->{body}, qr/"intents":\[\{"index":1,/, 'and the intent got its id');
is(count_sql("SELECT count(*) FROM machpay.payment_intents WHERE nonce = 101"), 1,
	'the intent is stored');

$r = post(log_msg('overflow2', '{"deep":{"list":[1,0e-16384]}}'));
is($r->{status}, 422, 'a lone poisoned log is answered 422, not 202');
like($r->{body}, qr/out of the range PostgreSQL can store/, 'with a clear message');

$r = post(json_array(log_msg('fine', '{"big":1e131071,"small":1.5e-16382}')));
is($r->{status}, 202, 'numbers at the edge of numeric range are accepted');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is(count_sql("SELECT count(*) FROM machpay.debug_logs WHERE message IN ('overflow', 'overflow2')"), 0,
	'nothing of the poisoned logs is stored');
is(count_sql("SELECT count(*) FROM machpay.debug_logs WHERE message = 'fine'"), 1,
	'the edge values are stored');

# --- (2) isolation of an entry that fails at flush, independent of validation
$node->safe_psql('postgres', q{
CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.message = 'poison' THEN
		RAISE EXCEPTION 'poisoned row refused by test trigger';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON machpay.debug_logs
	FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();
});
my $failures0 = counter('flush_failures');
my $dropped0 = counter('events_dropped');

$r = post(log_msg('poison'));
is($r->{status}, 202, 'the storable-looking poisoned log is accepted');
# Let the flusher fail on it and back off before the next requests come.
ok($node->poll_query_until('postgres',
	"SELECT value > $failures0 FROM machpay.stat_receiver WHERE name = 'flush_failures'"),
	'its flush fails');

$r = post(intent_event(201));
is($r->{status}, 200, 'an unrelated intent posted meanwhile is answered 200');
is(count_sql("SELECT count(*) FROM machpay.payment_intents WHERE nonce = 201"), 1,
	'and is stored');

$r = post(json_array(log_msg('poison'), intent_event(202), log_msg('sibling')));
is($r->{status}, 200, 'an intent in the same request as a poisoned log is answered 200');
like($r->{body}, qr/"accepted":3/, 'all three events were accepted');
is(count_sql("SELECT count(*) FROM machpay.payment_intents WHERE nonce = 202"), 1,
	'and the intent is stored');

$r = post(json_array(map { log_msg("other $_") } 1 .. 5));
is($r->{status}, 202, 'telemetry of another request is accepted');
$r = post(intent_event(203));
is($r->{status}, 200, 'another intent is answered 200 while the poisoned entries are retried');
ok($node->poll_query_until('postgres',
	"SELECT count(*) = 5 FROM machpay.debug_logs WHERE message LIKE 'other %'"),
	'other telemetry lands while the poisoned entries are retried');
is(count_sql("SELECT count(*) FROM machpay.debug_logs WHERE message = 'poison'"), 0,
	'the poisoned rows are never stored');

# The poisoned entries (1 event, and the 2 telemetry events of the mixed
# request) are dropped after the retry window, and counted.
ok($node->poll_query_until('postgres',
	"SELECT value - $dropped0 = 3 FROM machpay.stat_receiver WHERE name = 'events_dropped'"),
	'after the retry window the poisoned telemetry is dropped and counted');
is(count_sql("SELECT count(*) FROM machpay.debug_logs WHERE message = 'sibling'"), 0,
	'the poisoned request\'s other telemetry went with it (retried as one)');
is(count_sql("SELECT count(*) FROM machpay.payment_intents WHERE nonce BETWEEN 201 AND 203"), 3,
	'every acknowledged intent is stored once');

# Nothing is left behind: flush() returns and the service is ready.
is(count_sql("SET statement_timeout = '20s'; SELECT machpay.flush() >= 0"), 't',
	'flush() completes once the poisoned entries are gone');
is(http_req($port, path => '/readyz')->{status}, 200, '/readyz is 200');

$node->stop;
done_testing();
