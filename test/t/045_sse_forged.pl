# SSE relay: only the receiver publishes (SPEC §5, §7).  A login that was
# granted nothing NOTIFYs forged events (whole, with a made-up signature,
# in parts that reassemble into 100,000 nested brackets) and sends signed
# ones it saw again: the console sees none of them, the relay counts them
# and keeps its pid and its clients, and real events still arrive.  Events are never split into extra lines,
# a signed payload nested too deep is dropped and counted, and what
# notify_event puts on the wire is signed and reassembles exactly.
use strict;
use warnings;
use JSON::PP;
use MIME::Base64;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;
use SseTest;

my $node = sse_node('sse_forged');
my $port = $node->{machpay_sse_port};

my $gw    = 'Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT';
my $agent = 'DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi';
my $token = 'AkWxNPcPofjeyBnJqaBBUtYT8asTwFtPvwYBeWHLd3W7';
my $sig   = '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK';

my $relay_q = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay sse relay'};
my $relay_pid = $node->safe_psql('postgres', $relay_q);
ok($relay_pid, "relay running (pid $relay_pid)");

sub counter
{
	my ($name) = @_;
	return $node->safe_psql('postgres',
		"SELECT value FROM machpay.stat_receiver WHERE name = '$name'");
}

sub publish
{
	my ($sql_jsonb) = @_;
	return $node->safe_psql('postgres', "SELECT machpay.notify_event($sql_jsonb)");
}

$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN');

my $c = sse_open($port, '/v1/stream?access_token=console-token');
is($c->response(5), 200, 'console connected');

# ---- forged events from a login granted nothing ----
my $forged0 = counter('sse_notifications_forged');
my $fake_intent = qq{{"type":"payment_intent","id":"00000000-0000-0000-0000-000000000001","gateway_id":"$gw","agent_id":"$agent","nonce":"1","amount":"1000000","status":"PENDING"}};
my $fake_mac = $fake_intent;
$fake_mac =~ s/\}$/,"mac":"@{['0' x 64]}"}/;
# 100,000 '[' sent as parts of the relay's part protocol: they would
# reassemble into JSON nested 100,000 deep.
my $deep = '{"type":"job","v":' . ('[' x 100000) . (']' x 100000) . '}';
my @parts;
my $nparts = int((length($deep) + 4999) / 5000);
for my $i (1 .. $nparts)
{
	my $chunk = encode_base64(substr($deep, ($i - 1) * 5000, 5000), '');
	push @parts, qq{{"type":"job","part":$i,"parts":$nparts,"ref":"r1","chunk":"$chunk"}};
}
my $sql = "NOTIFY machpay_events, '$fake_intent';\n"
  . "SELECT pg_notify('machpay_events', '$fake_intent');\n"
  . "SELECT pg_notify('machpay_events', '$fake_mac');\n"
  . "NOTIFY machpay_events, 'plain text';\n"
  . "BEGIN;\n" . join('', map { "SELECT pg_notify('machpay_events', '$_');\n" } @parts) . "COMMIT;\n";
my $nforged = 4 + $nparts;
my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', 'mallory' ], on_error_stop => 1);
is($ret, 0, "a login granted nothing can NOTIFY ($nforged notifications sent)") or diag($err);
($ret, $out, $err) = $node->psql('postgres', q{SELECT machpay.notify_event('{"type":"payment_intent"}')},
	extra_params => [ '-U', 'mallory' ]);
isnt($ret, 0, 'but cannot call machpay.notify_event');
like($err, qr/permission denied/, 'permission denied');

# A real event after the forged ones: the relay reads notifications in
# order, so once it is on the wire every forged one was handled.
publish(q{'{"type":"marker","n":1}'});
ok($c->read_until(qr/event: marker\n/, 30), 'a real event arrives after the forged ones');
my @ev = $c->events;
is_deeply([ map { $_->{event} } @ev ], ['marker'], 'the console saw none of the forged events');
is(counter('sse_notifications_forged') - $forged0, $nforged, "all $nforged forged notifications counted as forged");
is($node->safe_psql('postgres', $relay_q), $relay_pid, 'the relay kept its pid');
ok($node->log_contains('sse relay dropped a notification on machpay_events: not signed by the receiver'),
	'dropping is logged');

# A real intent still arrives, exactly once.
my $resp = $node->safe_psql('postgres', qq{
	SELECT machpay.ingest(jsonb_build_object('source', 'payment_intent', 'gateway_id', '$gw',
		'agent_id', '$agent', 'token', '$token', 'signature', '$sig', 'nonce', '42', 'amount', 5000))});
my ($intent_id) = $resp =~ /"id": "([0-9a-f-]{36})"/;
ok($intent_id, "intent stored ($intent_id)");
ok($c->read_until(qr/"nonce": ?"42"/, 30), 'the real intent arrives on the same connection');
my @pi = grep { ($_->{event} // "") eq 'payment_intent' } $c->events;
is(scalar(@pi), 1, 'one payment_intent event');
is(decode_json($pi[0]{data})->{id}, $intent_id, 'it is the stored intent, without a signature field');
ok(!exists decode_json($pi[0]{data})->{mac}, 'the signature is not relayed');

# ---- line breaks never split an event ----
publish(q{jsonb_build_object('type', 'nl', 'msg', E'a\n\nb\r\nc\rd')});
publish(q{jsonb_build_object('type', 'nlbig', 'msg', repeat(E'x\n\r\n', 4000))});
publish(q{'{"type":"marker","n":2}'});
ok($c->read_until(qr/"n": 2/, 30), 'events with line breaks relayed');
like($c->{body}, qr/\nevent: nl\ndata: \{"msg": "a\\n\\nb\\r\\nc\\rd", "type": "nl"\}\n\n/,
	'line breaks inside a payload stay escaped: one data line, bytes as sent');
my ($nlbig) = $c->{body} =~ /\nevent: nlbig\n(.*?)\n\n/s;
ok(defined $nlbig, 'large payload with line breaks relayed');
my @lines = split /\n/, $nlbig // '';
is(scalar(@lines), 1, 'one data line for a payload sent in parts');
is(length($lines[0] // ''), length('data: {"msg": "' . ('x\\n\\r\\n' x 4000) . '", "type": "nlbig"}'),
	'its bytes are the payload');

# ---- a signed payload nested too deep: dropped, counted, relay unhurt ----
my $invalid0 = counter('sse_notifications_invalid');
my $n = publish(q{('{"type":"deep","v":' || repeat('[', 2000) || repeat(']', 2000) || '}')::jsonb});
ok($n >= 1, "deep payload published ($n notifications)");
publish(q{'{"type":"marker","n":3}'});
ok($c->read_until(qr/"n": 3/, 30), 'the same client still receives events');
ok(!grep({ ($_->{event} // "") eq 'deep' } $c->events), 'the payload nested 2,000 deep was not relayed');
is(counter('sse_notifications_invalid') - $invalid0, 1, 'and was counted as invalid');
is($node->safe_psql('postgres', $relay_q), $relay_pid, 'the relay kept its pid');
ok(!$c->{eof}, 'the client is still connected');

# ---- what notify_event puts on the wire ----
# Signed (,"mac":"<64 hex>"} closes every notification), under 8000 bytes,
# and parts that reassemble into exactly the payload's text.
my $payload_sql = q{jsonb_build_object('type', 'big', 'blob', repeat('é✓', 9000), 'nl', E'\n')};
my $expected_text = $node->safe_psql('postgres', "SELECT ($payload_sql)::text");
($ret, $out, $err) = $node->psql('postgres',
	"LISTEN machpay_events;\nSELECT machpay.notify_event($payload_sql);\nSELECT machpay.notify_event('{\"type\":\"small\"}');\n");
my @wire = map { /^Asynchronous notification "machpay_events" with payload "(.*)" received from server process/ ? $1 : () }
  split /\n/, $out . "\n" . $err;
ok(@wire >= 2, scalar(@wire) . ' notifications seen by a listener');
ok(!grep({ !/,"mac":"[0-9a-f]{80}"\}$/ } @wire), 'every notification carries a counter and a signature');
ok(!grep({ length($_) >= 8000 } @wire), 'every notification is under 8000 bytes');
my @p = map { decode_json($_) } grep { /"part"/ } @wire;
is_deeply([ map { $_->{part} } @p ], [ 1 .. scalar(@p) ], 'parts in order');
my $whole = join('', map { decode_base64($_->{chunk}) } @p);
utf8::decode($whole);
utf8::decode($expected_text);
is($whole, $expected_text, 'the parts reassemble into exactly the payload text');
is((grep { /"type": "small"/ } @wire) + 0, 1, 'a small payload is one notification');

# ---- signed notifications sent again are not relayed again ----
# A login that LISTENs sees signed notifications; it sends the small one
# and every part of the large one again.
ok($c->read_until(qr/event: small\n/, 30), 'the console got the small payload');
my @again = ((grep { /"type": "small"/ } @wire), (grep { /"part"/ } @wire));
my $replayed0 = counter('sse_notifications_replayed');
($ret, $out, $err) = $node->psql('postgres',
	join('', map { "SELECT pg_notify('machpay_events', \$q\$$_\$q\$);\n" } @again),
	extra_params => [ '-U', 'mallory' ]);
is($ret, 0, scalar(@again) . ' signed notifications sent again by a login granted nothing') or diag($err);
publish(q{'{"type":"marker","n":4}'});
ok($c->read_until(qr/"n": 4/, 30), 'a real event after them arrives');
is(scalar(grep { ($_->{event} // '') eq 'small' } $c->events), 1, 'the small payload was relayed once');
is(scalar(grep { ($_->{event} // '') eq 'big' } $c->events), 1, 'the large payload was relayed once');
is(counter('sse_notifications_replayed') - $replayed0, scalar(@again), 'each one sent again counted as replayed');
is($node->safe_psql('postgres', $relay_q), $relay_pid, 'the relay kept its pid');

$c->disconnect;
$node->stop;
done_testing();
