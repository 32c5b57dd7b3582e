# POST /v1/ingest promises of SPEC §4 checked on the wire: at most 100
# errors listed, an NDJSON error's index is its line, HTTP and
# machpay.ingest() answer the same body for the same payload (numbers in
# every JSON form included), and a request on an open connection while the
# server shuts down is answered 503.
use strict;
use warnings;
use JSON::PP;
use IO::Socket::INET;
use IO::Select;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time);
use Test::More;
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('http_promises', conf => <<'EOC');
machpay.auth = off
machpay.sse_port = 0
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'server ready');

my $json = JSON::PP->new->canonical;

sub post
{
	my ($body, %o) = @_;
	my $r = http_req($port, method => 'POST', body => $body, %o);
	my $d = eval { decode_json($r->{body}) };
	return ($r->{status}, $d, $r);
}

# ---- at most 100 errors listed ----
my @bad = map { qq({"source":"nope","n":$_}) } 1 .. 150;
my ($st, $d) = post(json_array(gateway_event(), @bad));
is($st, 202, '150 bad events and one good: 202');
is($d->{accepted}, 1, 'one accepted');
is($d->{rejected}, 150, 'all 150 counted as rejected');
is(scalar(@{ $d->{errors} }), 100, 'at most 100 errors listed');
is_deeply([ map { $_->{index} } @{ $d->{errors} } ], [ 1 .. 100 ], 'the first 100, by array position');
is($d->{errors}[0]{code}, 'unknown_source', 'with their code');
($st, $d) = post(json_array(@bad));
is($st, 422, 'every event rejected: 422');
is(scalar(@{ $d->{errors} }), 100, '422 lists at most 100 errors too');

# ---- NDJSON: index is the line ----
my $ndjson = join("\n", gateway_event(), '{"source":"nope"}', sdk_event(),
	'{"source":"gateway","gateway_id":"x"}', log_event()) . "\n";
($st, $d) = post($ndjson, type => 'application/x-ndjson');
is($st, 202, 'NDJSON with two bad lines: 202');
is_deeply([ map { [ $_->{index}, $_->{code} ] } @{ $d->{errors} } ],
	[ [ 1, 'unknown_source' ], [ 3, 'invalid_entity_id' ] ], 'errors carry their 0-based line');
is($d->{accepted}, 3, 'the three good lines accepted');

# ---- HTTP and machpay.ingest() give the same body ----
# The intent fields that differ by nature (ids) are compared separately.
sub sql_ingest
{
	my ($payload) = @_;
	$payload =~ s/'/''/g;
	return decode_json($node->safe_psql('postgres', "SELECT machpay.ingest('$payload'::jsonb)"));
}

sub intent_with
{
	my ($nonce, $amount) = @_;
	my $e = intent_event($nonce);
	$e =~ s/"amount":5000/"amount":$amount/;
	return $e;
}

my $n = 0;
for my $case (
	[ 'telemetry and bad events', json_array(gateway_event(), sdk_event(), log_event(), @bad[ 0 .. 4 ]) ],
	[ 'one bad event', '{"source":"gateway","gateway_id":"x"}' ],
	[ 'a bad time', '{"source":"log","entity_id":"' . $AGENT_ID . '","time":1,"level":"info","message":"m"}' ],
	map({ my $a = $_; [ "amount $a", json_array(intent_with(900 + ++$n, $a)) ] }
		qw(-0 1e3 1E+3 1.5e1 1.50e1 1.0 -1 1e-3 18446744073709551615 18446744073709551616 1e20)))
{
	my ($name, $payload) = @$case;
	my ($hst, $hd) = post($payload);
	# The same payload again through SQL: intents are duplicates now.
	my $sd = sql_ingest($payload);
	for my $i (@{ $hd->{intents} // [] })
	{
		ok(!$i->{duplicate}, "$name: new over HTTP");
	}
	for my $i (0 .. $#{ $sd->{intents} // [] })
	{
		is($sd->{intents}[$i]{id}, $hd->{intents}[$i]{id}, "$name: SQL finds the id HTTP stored");
		ok($sd->{intents}[$i]{duplicate}, "$name: a duplicate through SQL");
		$_->{intents}[$i]{duplicate} = JSON::PP::true for grep { $_->{intents} && $_->{intents}[$i] } ($hd, $sd);
	}
	is($json->encode($sd), $json->encode($hd), "$name: the same body over HTTP ($hst) and through SQL")
	  or diag("HTTP: $json->encode($hd)\nSQL:  " . $json->encode($sd));
}

# ---- 503 while shutting down ----
# A keep-alive connection stays open while the worker drains after
# pg_ctl stop: a request on it is answered 503, never taken.
my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
  or die "connect: $!";
binmode $sock;

sub ask
{
	my ($body) = @_;
	print $sock "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	  . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
	my $sel = IO::Select->new($sock);
	my $got = '';
	my $end = time + 10;
	while (time < $end && $sel->can_read($end - time))
	{
		my $k = sysread($sock, my $buf, 65536);
		last if !$k;
		$got .= $buf;
		last if $got =~ /\r\n\r\n/ && $got =~ /Content-Length: (\d+)/i
		  && length($got) >= index($got, "\r\n\r\n") + 4 + $1;
	}
	return $got;
}
like(ask(gateway_event()), qr{^HTTP/1\.1 202 }, 'keep-alive connection: 202 before the stop');
my $stop = IPC::Run::start([ 'pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-w', 'stop' ],
	'>', \my $stop_out, '2>', \my $stop_err, IPC::Run::timeout(120));
my ($answer, $draining) = ('', 0);
my $end = time + 60;
while (time < $end)
{
	$answer = ask(gateway_event());
	if ($answer =~ m{^HTTP/1\.1 503 })
	{
		$draining = 1;
		last;
	}
	last if $answer eq '';    # closed: the worker is gone
	select(undef, undef, undef, 0.02);
}
ok($draining, 'a request while the server shuts down is answered 503') or diag($answer);
like($answer, qr/"shutting_down"/, 'with the code shutting_down');
$stop->finish;
close $sock;
$node->_update_pid(0);

done_testing();
