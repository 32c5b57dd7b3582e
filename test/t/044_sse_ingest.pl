# End to end through the SQL API: machpay.ingest() commits a payment intent,
# the writer NOTIFYs, the relay streams it; a duplicate emits nothing; the
# entity filter picks the intents of one gateway.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;
use SseTest;

my $node = sse_node('sse_ingest');
my $port = $node->{machpay_sse_port};

my $gw    = 'Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT';
my $agent = 'DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi';
my $token = 'AkWxNPcPofjeyBnJqaBBUtYT8asTwFtPvwYBeWHLd3W7';
my $sig   = '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK';

my $all = sse_open($port, '/v1/stream?access_token=console-token&types=payment_intent,ingest');
is($all->response(5), 200, 'stream opened');
my $mine = sse_open($port, "/v1/stream?access_token=console-token&entity=$gw&types=payment_intent");
is($mine->response(5), 200, 'entity-filtered stream opened');

sub ingest_intent
{
	my ($nonce) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT machpay.ingest(jsonb_build_object('source', 'payment_intent', 'gateway_id', '$gw',
			'agent_id', '$agent', 'token', '$token', 'signature', '$sig',
			'nonce', '$nonce', 'amount', 5000))});
}

ingest_intent('18446744073709551615');
ingest_intent('18446744073709551615');    # duplicate: no event
ingest_intent('7');
ok($all->read_until(qr/"nonce":\s*"7"/), 'intents relayed');
my @intents = grep { $_->{event} eq 'payment_intent' } $all->events;
is(scalar(@intents), 2, 'two new intents, the duplicate emitted nothing');
like($intents[0]{data}, qr/"nonce":\s*"18446744073709551615"/, 'u64 nonce relayed exactly');
like($intents[0]{data}, qr/"gateway_id":\s*"\Q$gw\E"/, 'gateway_id in the event');
ok($mine->read_until(qr/"nonce":\s*"7"/), 'entity filter by gateway_id');
is(scalar($mine->events), 2, 'entity-filtered stream got both intents');

$all->disconnect;
$mine->disconnect;
$node->stop;
done_testing();
