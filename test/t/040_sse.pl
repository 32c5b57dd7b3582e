# SSE relay (SPEC §5): auth both ways, NOTIFY relayed with id/event/data,
# filters, Last-Event-ID replay and reset, heartbeat, CORS, max clients,
# large payloads through machpay.notify_event, the console page, HTTP/2.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes ();
use MachpayTest;
use SseTest;

my $node = machpay_node('sse', conf => <<'EOC');
machpay.port = 0
machpay.sse_heartbeat_interval = '1s'
machpay.sse_allow_origin = 'https://console.example'
machpay.sse_max_clients = 4
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
EOC
my $port = $node->{machpay_sse_port};

sse_add_key($node, 'ingest-token', 'ingest');
sse_add_key($node, 'revoked-token', 'console');
sse_add_key($node, 'bound-token', 'console', 'GATEWAY_B');
$node->safe_psql('postgres',
	"UPDATE machpay.ingest_keys SET revoked_at = now() WHERE token_sha256 = sha256('revoked-token'::bytea)");
# Added last: a key list that has it was read after the revocation above.
sse_add_key($node, 'console-token', 'console');
ok(sse_wait_ready($node, 'console-token'), 'relay accepts a console key');

# Through the receiver's publisher: a plain NOTIFY is not relayed (t/050).
sub notify
{
	my ($payload) = @_;
	$payload =~ s/'/''/g;
	$node->safe_psql('postgres', "SELECT machpay.notify_event('$payload')");
}

# ---- auth ----
my %status;
for my $case (
	[ 'none', '/v1/stream', {} ],
	[ 'unknown', '/v1/stream?access_token=nope', {} ],
	[ 'revoked', '/v1/stream?access_token=revoked-token', {} ],
	[ 'ingest', '/v1/stream', { Authorization => 'Bearer ingest-token' } ],
	[ 'ingest_query', '/v1/stream?access_token=ingest-token', {} ],
	[ 'console_header', '/v1/stream', { Authorization => 'Bearer console-token' } ],
	[ 'console_query', '/v1/stream?access_token=console-token', {} ])
{
	my $c = sse_open($port, $case->[1], headers => $case->[2]);
	$status{ $case->[0] } = $c->response(5);
	$c->disconnect;
}
is($status{none}, 401, 'no key: 401');
is($status{unknown}, 401, 'unknown key: 401');
is($status{revoked}, 401, 'revoked key: 401');
is($status{ingest}, 403, 'ingest key in the header: 403');
is($status{ingest_query}, 403, 'ingest key in the query: 403');
is($status{console_header}, 200, 'console key as Bearer header: 200');
is($status{console_query}, 200, 'console key as access_token: 200');

# Revocation takes effect within a second.
sse_add_key($node, 'soon-revoked', 'console');
ok(sse_wait_ready($node, 'soon-revoked'), 'new key accepted without restart');
$node->safe_psql('postgres',
	"UPDATE machpay.ingest_keys SET revoked_at = now() WHERE token_sha256 = sha256('soon-revoked'::bytea)");
{
	my ($ok, $what) = machpay_revoked_within(Time::HiRes::time(), 1.0, sub {
		my $c = sse_open($port, '/v1/stream?access_token=soon-revoked');
		my $st = $c->response(5);
		$c->disconnect;
		return $st;
	});
	ok($ok, "revoked key refused within a second ($what)");
}

# ---- relay, headers, CORS ----
# The probes above hold client slots until the relay sees them closed
# (within 250 ms): retry a 503 for a while.
my $all;
for (1 .. 50)
{
	$all = sse_open($port, '/v1/stream', headers => { Authorization => 'Bearer console-token' });
	last if ($all->response(5) // 0) != 503;
	$all->disconnect;
	select(undef, undef, undef, 0.1);
}
is($all->{status}, 200, 'stream opened');
like($all->{headers}{'content-type'}, qr{^text/event-stream}, 'content type is text/event-stream');
is($all->{headers}{'access-control-allow-origin'}, 'https://console.example', 'CORS header from machpay.sse_allow_origin');
my $jobs = sse_open($port, '/v1/stream?access_token=console-token&types=job,config');
my $gw = sse_open($port, '/v1/stream?access_token=console-token&entity=GATEWAY_A');
my $bound = sse_open($port, '/v1/stream?access_token=bound-token');
$_->response(5) for ($jobs, $gw, $bound);

notify('{"type":"job","job":"rollup","status":"succeeded","rows":3}');
notify('{"type":"payment_intent","gateway_id":"GATEWAY_A","agent_id":"AGENT_1","amount":"5"}');
notify('{"type":"config","entity_id":"GATEWAY_B"}');
$node->safe_psql('postgres', q{NOTIFY machpay_events, '{"type":"forged","note":"a plain NOTIFY"}'});
notify('{"type":"gateway","entity_id":"GATEWAY_A","n":1}');
notify('{"type":"sdk","agent_id":"GATEWAY_A","n":2}');
notify('{"type":"done"}');

ok($all->read_until(qr/event: done\n/), 'unfiltered client got everything');
my @ev = $all->events;
is(scalar(@ev), 6, 'six events relayed');
is_deeply([ map { $_->{event} } @ev ],
	[qw(job payment_intent config gateway sdk done)], 'event names are the payload types; a plain NOTIFY is not relayed');
is_deeply(decode_json($ev[0]{data}), { type => 'job', job => 'rollup', status => 'succeeded', rows => 3 },
	'data is the payload, without its signature');
my @ids = map { $_->{id} } @ev;
ok((!grep { $ids[$_] != $ids[ $_ - 1 ] + 1 } 1 .. $#ids), 'ids are consecutive');

notify('{"type":"config","entity_id":"END"}');
ok($jobs->read_until(qr/"END"/), 'types filter client got its last event');
is_deeply([ map { $_->{event} } $jobs->events ], [qw(job config config)], '?types=job,config');

notify('{"type":"job","gateway_id":"GATEWAY_A","last":true}');
ok($gw->read_until(qr/"last": true/), 'entity filter client got its last event');
is_deeply([ map { $_->{event} } $gw->events ], [qw(payment_intent gateway sdk job)],
	'?entity= matches entity_id, gateway_id and agent_id');

notify('{"type":"job","entity_id":"GATEWAY_B","last":true}');
ok($bound->read_until(qr/"last": true/), 'entity-bound key got its last event');
is_deeply([ map { $_->{event} } $bound->events ], [qw(config job)], 'a key bound to an entity sees that entity only');
{
	my $c = sse_open($port, '/v1/stream?access_token=bound-token&entity=GATEWAY_A');
	is($c->response(5), 403, 'a bound key asking for another entity: 403');
	$c->disconnect;
}

# ---- max clients: 4 open ($all, $jobs, $gw, $bound) ----
{
	my $c = sse_open($port, '/v1/stream?access_token=console-token');
	is($c->response(5), 503, 'beyond machpay.sse_max_clients: 503');
	$c->disconnect;
}
$_->disconnect for ($jobs, $gw, $bound);
sleep 1;    # the relay notices closed HTTP/1 clients within 250 ms

# ---- heartbeat ----
ok($all->read_until(qr/^: heartbeat\n\n/m, 5), 'comment heartbeat with a 1 s interval');

# ---- large payload ----
my $n = $node->safe_psql('postgres', q{
	SELECT machpay.notify_event(jsonb_build_object('type', 'big', 'gateway_id', 'GATEWAY_A',
		'blob', repeat('0123456789', 3000), 'tail', 'é✓'))});
ok($n > 1, "large payload sent in $n parts");
ok($all->read_until(qr/event: big\n/), 'large payload relayed');
my ($big) = grep { ($_->{event} // '') eq 'big' } $all->events;
like($big->{data}, qr/^\{"blob": "(0123456789){3000}", "tail": "é✓", "type": "big", "gateway_id": "GATEWAY_A"\}$/,
	'large payload relayed whole, as one event');
is($node->safe_psql('postgres', q{SELECT machpay.notify_event('{"type":"small"}')}), 1,
	'a small payload is one notification');
ok($all->read_until(qr/event: small\n/), 'small payload through notify_event relayed');

# ---- Last-Event-ID replay ----
my @evs = $all->events;
my $third = $evs[2]{id};
my $resume = sse_open($port, '/v1/stream?access_token=console-token',
	headers => { 'Last-Event-ID' => $third });
$resume->response(5);
ok($resume->read_until(qr/event: small\n/), 'resumed client replays up to the live head');
my @replayed = $resume->events;
is($replayed[0]{id}, $third + 1, 'replay starts right after Last-Event-ID');
is(scalar(@replayed), scalar(@evs) - 3, 'every later event replayed once');
$resume->disconnect;

# An id from before the window (e.g. an earlier run of the relay): reset.
my $old = sse_open($port, '/v1/stream?access_token=console-token',
	headers => { 'Last-Event-ID' => '1' });
$old->response(5);
ok($old->read_until(qr/event: reset\n/), 'Last-Event-ID outside the window: event: reset');
$old->disconnect;

# Fall out of the 10,000-event window.
my $first_id = $evs[0]{id};
$all->disconnect;
sleep 1;
my $marker = sse_open($port, '/v1/stream?access_token=console-token&types=marker');
$marker->response(5);
$node->safe_psql('postgres', q{
	SELECT count(machpay.notify_event(jsonb_build_object('type', 'bulk', 'i', g)))
	FROM generate_series(1, 10050) g});
notify('{"type":"marker"}');
ok($marker->read_until(qr/event: marker\n/, 60), 'the relay took in 10,050 events');
my ($mark) = grep { ($_->{event} // '') eq 'marker' } $marker->events;
my $m = $mark->{id};
$marker->disconnect;
my $probe = sse_open($port, '/v1/stream?access_token=console-token',
	headers => { 'Last-Event-ID' => $first_id });
$probe->response(5);
ok($probe->read_until(qr/event: reset\n/), 'client that fell out of the 10,000-event window gets reset');
my ($reset) = grep { ($_->{event} // '') eq 'reset' } $probe->events;
like($reset->{data}, qr/"last_event_id":"$first_id"/, 'reset names the id that fell out');
$probe->disconnect;
# The window is exactly the 10,000 newest events: ids $m - 9999 .. $m (the
# marker).  Resuming after $m - 10000 replays 9,999 bulk events and the
# marker; resuming after $m - 10001 asks for an event that fell out.
my $inwin = sse_open($port, '/v1/stream?access_token=console-token',
	headers => { 'Last-Event-ID' => $m - 10000 });
$inwin->response(5);
ok($inwin->read_until(qr/event: marker\n/, 60), 'the oldest position inside the window replays to the head');
my @w = grep { ($_->{event} // '') eq 'bulk' } $inwin->events;
is(scalar(@w), 9999, 'replay window holds 10,000 events: 9,999 bulk events and the marker replayed');
is($w[0]{id}, $m - 9999, 'replay starts at the oldest event held');
is_deeply([ map { decode_json($_->{data})->{i} } @w[0, -1] ], [ 52, 10050 ], 'the oldest held is bulk event 52');
$inwin->disconnect;
my $out = sse_open($port, '/v1/stream?access_token=console-token',
	headers => { 'Last-Event-ID' => $m - 10001 });
$out->response(5);
ok($out->read_until(qr/event: reset\n/), 'one event older than the window: event: reset');
$out->disconnect;

# ---- other paths ----
{
	my $c = sse_open($port, '/');
	is($c->response(5), 200, 'GET / serves the console page');
	like($c->{headers}{'content-type'}, qr{^text/html}, 'console page is HTML');
	like($c->{body}, qr/EventSource/, 'console page uses EventSource');
	$c->disconnect;
	$c = sse_open($port, '/nope');
	is($c->response(5), 404, 'unknown path: 404');
	$c->disconnect;
}

# ---- HTTP/2: many streams on one connection ----
SKIP:
{
	my $nghttp = machpay_tool('nghttp');
	skip 'nghttp not installed', 2 unless $nghttp;
	sleep 1;    # closed HTTP/1 clients above free their slots (max 4)
	my $url = "http://127.0.0.1:$port/v1/stream?access_token=console-token";
	my ($out, $err) = ('', '');
	require IPC::Run;
	# stdbuf: nghttp's stdout is a pipe here, line-buffer it so we see frames as they come.
	my $h = IPC::Run::start([ 'stdbuf', '-oL', $nghttp, '-v', $url, "$url&types=h2" ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(30));
	my %streams;
	for (1 .. 100)
	{
		$h->pump_nb;
		%streams = map { $_ => 1 } $out =~ /recv \(stream_id=(\d+)\) :status: 200/g;
		last if keys %streams >= 2;
		select(undef, undef, undef, 0.1);
	}
	notify('{"type":"h2","hello":1}');
	my $hellos = 0;
	for (1 .. 100)
	{
		$h->pump_nb;
		$hellos = () = $out =~ /^data: \{"type": "h2", "hello": 1\}$/mg;
		last if $hellos >= 2;
		select(undef, undef, undef, 0.1);
	}
	$h->kill_kill;
	diag("nghttp output:\n$out\n$err") unless keys %streams == 2 && $hellos == 2;
	is(scalar(keys %streams), 2, 'HTTP/2 prior knowledge: two streams answered 200 on one connection');
	is($hellos, 2, 'each HTTP/2 stream received the event');
}

# ---- machpay.auth = off (reloadable) skips the key check ----
$node->safe_psql('postgres', 'ALTER SYSTEM SET machpay.auth = off');
$node->reload;
my $open_status = 0;
for (1 .. 50)
{
	my $c = sse_open($port, '/v1/stream');
	$open_status = $c->response(5);
	$c->disconnect;
	last if $open_status == 200;
	select(undef, undef, undef, 0.2);
}
is($open_status, 200, 'machpay.auth = off: no key needed');

# DROP DATABASE waits for every process to absorb a procsignal barrier:
# the relay's loop must not block it.
$node->safe_psql('postgres', 'CREATE DATABASE sse_scratch');
my $drop_timed_out = 0;
my $drop_rc = $node->psql('postgres', 'DROP DATABASE sse_scratch',
	timeout => 60, timed_out => \$drop_timed_out);
ok(!$drop_timed_out && $drop_rc == 0, 'DROP DATABASE completes within 60 s with the relay running');

$node->stop;
done_testing();
