# Several telemetry writers (machpay.flush_workers, issue 10): batches
# taken by different writers commit in the order they were taken, so a
# reader polling the tables while requests arrive one after another always
# sees a prefix of them, never a later request's rows without an earlier
# one's; every row of every request lands once; a payment intent claimed by
# several writers (and machpay.ingest() sessions) at once is stored once,
# and every request that carried it gets the same id, exactly one of them as
# new; after kill -9 of a writer all come back and telemetry lands.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use List::Util qw(shuffle);
use Time::HiRes qw(time);
use MachpayTest;
use MachpayHttp;

my $SIG = '3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt';

my $node = machpay_node('flush_workers', conf => <<'EOC');
machpay.auth = off
machpay.flush_workers = 3
machpay.batch_size = 5
machpay.flush_interval = '20ms'
machpay.buffer_size = '1MB'
restart_after_crash = on
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');
is($node->safe_psql('postgres', q{
	SELECT string_agg(backend_type, ',' ORDER BY backend_type) FROM pg_stat_activity
	WHERE backend_type LIKE 'machpay%writer' OR backend_type = 'machpay flusher'}),
	'machpay flusher,machpay flusher,machpay flusher,machpay intent writer',
	'three telemetry writers and the intents writer');

# --- 1. requests one after another: a reader sees a prefix, always
my $n = 60;
my $t = int(time) - 1;
my $poster = <<'EOP';
use strict;
my ($port, $n, $t, $gw) = @ARGV;
for my $i (1 .. $n)
{
	# 40 gateway events (120 rows) and one log whose message is the request's number.
	my @ev = map {
		my $end = $t - $i * 100 - $_;
		my $start = $end - 60;
		qq({"source":"gateway","gateway_id":"$gw","period_start":$start,"period_end":$end,"system":{"cpu_usage_percent":1,"ram_usage_mb":2},"network":{"bytes_in":3}})
	} 1 .. 40;
	push @ev, qq({"source":"log","entity_id":"$gw","time":$t,"level":"info","message":"ord $i"});
	my $body = '[' . join(',', @ev) . ']';
	my $code = `curl -s -o /dev/null -w '%{http_code}' --max-time 20 -H 'Content-Type: application/json' --data-binary '$body' http://127.0.0.1:$port/v1/ingest`;
	print "$code\n";
}
EOP
my ($pout, $perr) = ('', '');
my $ph = IPC::Run::start([ 'perl', '-e', $poster, $port, $n, $t, $GATEWAY_ID ],
	'>', \$pout, '2>', \$perr);

# The reader: how many requests' logs are visible, and the highest number.
my ($observations, $gaps, $torn) = (0, 0, 0);
my $reader = $node->background_psql('postgres');
my $deadline = time + 120;
while (time < $deadline)
{
	my $row = $reader->query_safe(q{
		SELECT count(*) || ' ' || coalesce(max(split_part(message, ' ', 2)::int), 0)
		  || ' ' || (SELECT count(*) FROM machpay.metric_points)
		FROM machpay.debug_logs WHERE message LIKE 'ord %'});
	my ($cnt, $max, $points) = split / /, $row;
	$observations++;
	$gaps++ if $cnt != $max;
	# 120 points per request committed with its log, in the same transaction.
	$torn++ if $points < $cnt * 120;
	last if $cnt == $n;
}
$ph->finish;
is(($pout =~ tr/\n//), $n, "the $n requests were answered");
unlike($pout, qr/^(?!202)/m, 'each with 202');
cmp_ok($observations, '>', 1, "the reader looked $observations times");
is($gaps, 0, 'the reader never saw a later request without every earlier one');
is($torn, 0, 'nor a request\'s log without its points');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || count(DISTINCT message) FROM machpay.debug_logs WHERE message LIKE 'ord %'}),
	"$n $n", 'every request\'s log stored once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM machpay.metric_points}), $n * 120,
	'every request\'s points stored once');
cmp_ok($node->safe_psql('postgres',
	"SELECT value FROM machpay.stat_receiver WHERE name = 'flushes'"), '>', 1,
	'in several flushes');

# --- 2. the same intents claimed at once by several writers and ingest() sessions
sub intent
{
	my ($nonce) = @_;
	return qq({"source":"payment_intent","gateway_id":"$GATEWAY_ID","agent_id":"$AGENT_ID",)
	  . qq("nonce":"$nonce","amount":7,"token":"$OTHER_ID","signature":"$SIG"});
}
# 600 intents a request: bigger than the intents' part of a 1MB buffer, so
# these requests go to the telemetry writers, which take one each.
my @nonces = (10001 .. 10600);
my @clients;
for my $c (1 .. 4)
{
	my $file = "$PostgreSQL::Test::Utils::tmp_check/intents_$c.json";
	open(my $fh, '>', $file) or die;
	print $fh '[' . join(',', map { intent($_) } shuffle(@nonces)) . ']';
	close $fh;
	my $out = '';
	push @clients, [ IPC::Run::start(
		[ 'curl', '-s', '--max-time', '60', '-H', 'Content-Type: application/json',
		  '--data-binary', "\@$file", "http://127.0.0.1:$port/v1/ingest" ],
		'>', \$out), \$out ];
}
my @sessions;
for my $c (1 .. 2)
{
	my $payload = '[' . join(',', map { intent($_) } shuffle(@nonces[0 .. 99])) . ']';
	my $out = '';
	push @sessions, [ IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr('postgres'), '-c',
		  "SELECT machpay.ingest('$payload'::jsonb)" ],
		'>', \$out), \$out ];
}
$_->[0]->finish for @clients, @sessions;

my (%ids, %new, $answers);
for my $c (@clients, @sessions)
{
	my $body = ${ $c->[1] };
	$answers++ if $body =~ /"intents":\s*\[/;
	# HTTP answers and jsonb text differ in spacing and key order.
	for my $obj ($body =~ /(\{[^{}]*"duplicate"[^{}]*\})/g)
	{
		my ($id) = $obj =~ /"id":\s*"([0-9a-f-]{36})"/;
		my ($dup) = $obj =~ /"duplicate":\s*(true|false)/;
		push @{ $ids{$id} }, $dup if $id && $dup;
	}
}
is($answers, 6, 'the 4 requests and 2 ingest() calls were all answered with their intents');
is(scalar(keys %ids), 600, 'all answers together name exactly 600 ids, one per nonce');
is(scalar(grep { scalar(grep { $_ eq 'false' } @{ $ids{$_} }) == 1 } keys %ids), 600,
	'each id answered as new exactly once');
is($node->safe_psql('postgres', q{
	SELECT count(*) || ' ' || count(DISTINCT nonce) FROM machpay.payment_intents
	WHERE nonce BETWEEN 10001 AND 10600}), '600 600', 'each intent stored once');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM machpay.payment_intents
	WHERE nonce BETWEEN 10001 AND 10600 AND id::text IN ('} . join("','", keys %ids) . q{')}),
	600, 'with the ids the clients were given');

# --- 3. kill -9 of a writer: the server restarts, every writer comes back,
# telemetry is accepted again and lands
my $pid = $node->safe_psql('postgres', q{
	SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay flusher' ORDER BY pid LIMIT 1});
kill 'KILL', $pid;
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 3 FROM pg_stat_activity
	WHERE backend_type = 'machpay flusher' AND pid <> $pid}), 'the writers are back');
ok(wait_ready($port), 'ready again');
my $r = http_req($port, method => 'POST', body => json_array(map { gateway_event($GATEWAY_ID, $t - 90000 - $_) } 1 .. 5));
is($r->{status}, 202, 'telemetry accepted after the restart');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', q{SELECT count(*) FROM machpay.metric_points}), $n * 120 + 15,
	'and landed');

$node->stop;
done_testing();
