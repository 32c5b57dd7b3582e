# The events of SPEC §5 as a console sees them when data comes in over
# HTTP and through the flusher (not machpay.ingest()): one `ingest` per
# committed flush, one `payment_intent` per new intent and none for a
# duplicate, `config` when a vendor profile changes and not when a report
# changes nothing, `gateway`/`sdk` per telemetry event with
# machpay.notify_telemetry, and `job` for scheduled rollup and maintenance
# runs.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time);
use Test::More;
use MachpayTest;
use MachpayHttp;
use SseTest;

my $node = machpay_node('sse_http', conf => <<'EOC');
machpay.auth = off
machpay.notify_telemetry = on
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
EOC
my $port = $node->{machpay_http_port};
my $sse_port = $node->{machpay_sse_port};
ok(wait_ready($port), 'ingest ready');
ok(sse_wait_ready($node, 'any'), 'relay ready');

my $mint = '4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1';
$node->safe_psql('postgres', "INSERT INTO machpay.users (wallet_address) VALUES ('$GATEWAY_ID')");

sub counter
{
	my ($name) = @_;
	return $node->safe_psql('postgres', "SELECT value FROM machpay.stat_receiver WHERE name = '$name'");
}

sub events_of
{
	my ($c, $type) = @_;
	return map { decode_json($_->{data}) } grep { ($_->{event} // '') eq $type } $c->events;
}

my $c = sse_open($sse_port, '/v1/stream');
is($c->response(5), 200, 'console connected');
# The relay may still be connecting its LISTEN: publish until it relays.
my $listening = 0;
for my $k (1 .. 30)
{
	$node->safe_psql('postgres', "SELECT machpay.notify_event('{\"type\":\"warmup\",\"k\":$k}')");
	last if ($listening = $c->read_until(qr/"k": $k,/, 1));
}
ok($listening, 'the relay relays');

# ---- telemetry: gateway/sdk per event, one ingest per committed flush ----
my $flushes0 = counter('flushes');
my $r = http_req($port, method => 'POST', body => json_array(gateway_event(), sdk_event(), log_event()));
is($r->{status}, 202, 'telemetry buffered');
is($node->safe_psql('postgres', 'SELECT machpay.flush() >= 0'), 't', 'flush() returned');
$node->safe_psql('postgres', q{SELECT machpay.notify_event('{"type":"mark","n":1}')});
ok($c->read_until(qr/"n": 1/, 30), 'events up to the mark arrived');
my @ingest = events_of($c, 'ingest');
is(scalar(@ingest), counter('flushes') - $flushes0, 'one ingest event per committed flush');
is_deeply([ map { $_->{origin} } @ingest ], [ ('http') x @ingest ], 'ingest events come from the flusher (origin http)')
  or diag(explain \@ingest);
my %sum;
for my $e (@ingest)
{
	$sum{$_} += $e->{rows}{$_} for keys %{ $e->{rows} };
	$sum{"events_$_"} += $e->{events}{$_} for keys %{ $e->{events} };
}
is_deeply([ @sum{qw(metrics debug_logs events_gateway events_sdk events_log)} ], [ 4, 1, 1, 1, 1 ],
	'their counts: 3 + 1 metric rows, 1 log row; one event per source');
my @gw = events_of($c, 'gateway');
my @sdk = events_of($c, 'sdk');
is(scalar(@gw), 1, 'one gateway event (notify_telemetry)');
is($gw[0]{entity_id}, $GATEWAY_ID, 'for the gateway');
is($gw[0]{rows}, 3, 'with its row count');
is(scalar(@sdk), 1, 'one sdk event (notify_telemetry)');
is($sdk[0]{entity_id}, $AGENT_ID, 'for the agent');

# ---- payment intents: once, none for a duplicate ----
$r = http_req($port, method => 'POST', body => json_array(intent_event(7001), intent_event(7002)));
is($r->{status}, 200, 'two intents committed');
my $resp = decode_json($r->{body});
$r = http_req($port, method => 'POST', body => json_array(intent_event(7001)));
is($r->{status}, 200, 'a retry');
ok(decode_json($r->{body})->{intents}[0]{duplicate}, 'answered as a duplicate');
$node->safe_psql('postgres', q{SELECT machpay.notify_event('{"type":"mark","n":2}')});
ok($c->read_until(qr/"n": 2/, 30), 'events up to the second mark arrived');
my @pi = events_of($c, 'payment_intent');
is_deeply([ sort map { $_->{id} } @pi ], [ sort map { $_->{id} } @{ $resp->{intents} } ],
	'one payment_intent event per new intent, none for the duplicate');
is_deeply([ sort keys %{ $pi[0] } ],
	[ sort qw(type id gateway_id agent_id nonce amount token status created_at) ], 'with the fields of SPEC §5');
my ($i7001) = grep { $_->{nonce} eq '7001' } @pi;
is_deeply([ @$i7001{qw(gateway_id agent_id amount token status)} ],
	[ $GATEWAY_ID, $AGENT_ID, '5000', $OTHER_ID, 'PENDING' ], 'and the values posted');

# ---- config: on change only ----
sub config_report
{
	my ($end, $version) = @_;
	my $e = gateway_event($GATEWAY_ID, $end);
	$e =~ s/\}$/,"config":{"price_per_unit":5000,"accepted_mint":"$mint","version":"$version"}}/;
	return $e;
}
my $t = int(time) - 10;
is(http_req($port, method => 'POST', body => config_report($t, 'v1'))->{status}, 202, 'config report v1');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is(http_req($port, method => 'POST', body => config_report($t + 1, 'v1'))->{status}, 202, 'the same config again');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is(http_req($port, method => 'POST', body => config_report($t + 2, 'v2'))->{status}, 202, 'config report v2');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
$node->safe_psql('postgres', q{SELECT machpay.notify_event('{"type":"mark","n":3}')});
ok($c->read_until(qr/"n": 3/, 30), 'events up to the third mark arrived');
my @cfg = events_of($c, 'config');
is(scalar(@cfg), 2, 'two config events: the unchanged report sent none');
is_deeply([ map { $_->{changed}{config_version} } @cfg ], [ 'v1', 'v2' ], 'each with the changed version');
is($cfg[0]{gateway_id}, $GATEWAY_ID, 'for the gateway');

# ---- scheduled jobs: a job event per run, not manual ----
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET machpay.rollup_interval = '1s'; ALTER SYSTEM SET machpay.maintenance_interval = '2s'; SELECT pg_reload_conf()});
ok($c->read_until(qr/"job":\s*"rollup"/, 60), 'a scheduled rollup run announced');
ok($c->read_until(qr/"job":\s*"maintenance"/, 120), 'a scheduled maintenance run announced');
$node->safe_psql('postgres',
	q{ALTER SYSTEM RESET machpay.rollup_interval; ALTER SYSTEM RESET machpay.maintenance_interval; SELECT pg_reload_conf()});
my @jobs = events_of($c, 'job');
my %runs = map { $_->{run_id} => $_ } @jobs;
for my $job ('rollup', 'maintenance')
{
	my @mine = grep { $_->{job} eq $job } @jobs;
	ok(@mine >= 1, "$job: announced");
	ok(!(grep { $_->{manual} } @mine), "$job: scheduled runs are not manual");
	my $row = $node->safe_psql('postgres',
		"SELECT status FROM machpay.job_runs WHERE run_id = $mine[0]{run_id}");
	is($mine[0]{status}, $row, "$job: the event's status is the run's ($row)");
}

$c->disconnect;
$node->stop;
done_testing();
