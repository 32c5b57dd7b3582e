# SSE relay: notifications sent while its LISTEN connection is down are
# lost with it, so after it reconnects the relay reads the payment intents
# committed meanwhile back from the table.  A console connected throughout
# gets every intent exactly once: those relayed live are not repeated.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time);
use Test::More;
use MachpayTest;
use SseTest;

my $node = sse_node('sse_missed');
my $port = $node->{machpay_sse_port};

my $gw    = 'Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT';
my $agent = 'DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi';
my $token = 'AkWxNPcPofjeyBnJqaBBUtYT8asTwFtPvwYBeWHLd3W7';
my $sig   = '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK';

# The relay connects as the bootstrap superuser; the test as another one,
# so pg_hba.conf can keep the relay out while the test goes on.
my $relay_user = $node->safe_psql('postgres', 'SELECT current_user');
$node->safe_psql('postgres', 'CREATE ROLE tester SUPERUSER LOGIN');
my @as_tester = (extra_params => [ '-U', 'tester' ]);

sub ingest_intents
{
	my ($from, $to) = @_;
	my $sql = join('', map { qq{
		SELECT machpay.ingest(jsonb_build_object('source', 'payment_intent', 'gateway_id', '$gw',
			'agent_id', '$agent', 'token', '$token', 'signature', '$sig', 'nonce', $_, 'amount', 5000));} }
		  $from .. $to);
	$node->safe_psql('postgres', $sql, @as_tester);
}

sub replayed
{
	return $node->safe_psql('postgres',
		q{SELECT value FROM machpay.stat_receiver WHERE name = 'sse_intents_replayed'}, @as_tester);
}

# Reads until $n payment_intent events arrived (or $timeout passed).
sub intents_seen
{
	my ($c, $n, $timeout) = @_;
	my $deadline = time() + $timeout;
	my @pi;
	while (1)
	{
		@pi = grep { ($_->{event} // '') eq 'payment_intent' } $c->events;
		last if @pi >= $n || time() >= $deadline || $c->{eof};
		$c->read_some(0.2);
	}
	return map { decode_json($_->{data}) } @pi;
}

my $c = sse_open($port, '/v1/stream?access_token=console-token&types=payment_intent');
is($c->response(5), 200, 'console connected');

ingest_intents(1, 5);
is(scalar(intents_seen($c, 5, 30)), 5, 'five intents relayed live');

# Keep the relay out, then cut its LISTEN connection.
my $hba = $node->data_dir . '/pg_hba.conf';
my $orig = PostgreSQL::Test::Utils::slurp_file($hba);
PostgreSQL::Test::Utils::append_to_file("$hba.new", "local all $relay_user reject\n$orig");
rename("$hba.new", $hba) or die "rename: $!";
$node->reload;
my $listener = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE application_name = 'machpay_sse_listener'}, @as_tester);
ok($listener, "LISTEN connection found (pid $listener)");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($listener)", @as_tester);
my $refused = 0;
for (1 .. 150)
{
	$refused = $node->log_contains('sse relay could not connect to its database: .*pg_hba.conf rejects');
	last if $refused;
	select(undef, undef, undef, 0.2);
}
ok($refused, 'the relay is kept out');

# Committed while the relay cannot listen: their notifications are lost.
my $replayed0 = replayed();
ingest_intents(6, 25);

open(my $fh, '>', $hba) or die $!;
print $fh $orig;
close $fh;
$node->reload;

my @pi = intents_seen($c, 25, 60);
is(scalar(@pi), 25, 'after the reconnect the console has all 25 intents');
my @nonces = sort { $a <=> $b } map { $_->{nonce} } @pi;
is_deeply(\@nonces, [ 1 .. 25 ], 'each intent exactly once');
is(replayed() - $replayed0, 20, 'the 20 committed while away were read back from the table');
my %stored = map { split /\|/ } split /\n/, $node->safe_psql('postgres',
	'SELECT id, nonce FROM machpay.payment_intents', @as_tester);
is_deeply({ map { $_->{id} => $_->{nonce} } @pi }, \%stored, 'ids and nonces are those stored');
my ($missed) = grep { $_->{nonce} eq '6' } @pi;
is_deeply([ sort keys %$missed ],
	[ sort qw(type id gateway_id agent_id nonce amount token status created_at) ],
	'a read-back intent has the fields of a live one');
ok($node->log_contains('payment intents committed meanwhile are read back'), 'reconnect logged');

# Live again: the next intent arrives once, nothing is repeated.
ingest_intents(26, 26);
@pi = intents_seen($c, 26, 30);
is(scalar(@pi), 26, 'a new intent after the reconnect arrives once');
is($pi[-1]{nonce}, '26', 'and it is the new one');

$c->disconnect;
$node->stop;
done_testing();
