# POST /v1/ingest promises of SPEC §4 checked on the wire: at most 100
# errors listed, an NDJSON error's index is its line, HTTP and
# machpay.ingest() answer the same body for the same payload (numbers in
# every JSON form included), and a fast shutdown: idle connections closed
# at once, requests in flight answered, a request decided after the stop
# began answered 503.
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
use H2Raw;

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

# ---- a fast shutdown ----
# As nginx stops gracefully: idle keep-alive connections are closed at
# once, without an answer (their client sent nothing, and a request sent
# later could only be refused); requests in flight finish and are
# answered, each connection closing after its answer; a request whose head
# is only decided after the stop began is answered 503 shutting_down.
# The idle connections must see their close while the in-flight requests
# are still being served: a worker that only closed them when it exits
# would close those too.

sub conn
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  or die "connect: $!";
	binmode $s;
	$s->autoflush(1);
	return $s;
}

# Reads until a whole answer (head and Content-Length body) came, EOF, or
# the deadline; returns what came and whether the server closed.
sub read_answer
{
	my ($s, $timeout) = @_;
	my $sel = IO::Select->new($s);
	my ($got, $eof) = ('', 0);
	my $end = time + ($timeout // 10);
	while (time < $end && $sel->can_read($end - time))
	{
		my $k = sysread($s, my $buf, 65536);
		if (!$k)
		{
			$eof = 1;
			last;
		}
		$got .= $buf;
		last if $got =~ /\r\n\r\n/ && $got =~ /Content-Length: (\d+)/i
		  && length($got) >= index($got, "\r\n\r\n") + 4 + $1;
	}
	return ($got, $eof);
}

# Waits for EOF; returns (closed, bytes that came before it).
sub wait_eof
{
	my ($s, $timeout) = @_;
	my $sel = IO::Select->new($s);
	my $got = '';
	my $end = time + $timeout;
	while (time < $end && $sel->can_read($end - time))
	{
		my $k = sysread($s, my $buf, 65536);
		return (1, $got) if !$k;
		$got .= $buf;
	}
	return (0, $got);
}

sub head_of
{
	my ($body, @extra) = @_;
	return "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	  . join('', map { "$_\r\n" } @extra) . 'Content-Length: ' . length($body) . "\r\n\r\n";
}

# An idle keep-alive connection, after a request it made.
my $idle = conn();
my $first = gateway_event($GATEWAY_ID, int(time) - 3600);
print $idle head_of($first) . $first;
my ($answer, $eof) = read_answer($idle);
like($answer, qr{^HTTP/1\.1 202 }, 'keep-alive connection: 202 before the stop');
unlike($answer, qr/^connection: close/mi, 'keep-alive connection: kept open');
# A connection opened and never used.
my $unused = conn();
# A request whose body is in flight: its head accepted (100 Continue), half
# of its body sent.
my $late = json_array(map { gateway_event($OTHER_ID, int(time) - 60 * $_) } 1 .. 20);
my $half = int(length($late) / 2);
my $inflight = conn();
print $inflight head_of($late, 'Expect: 100-continue');
{
	my $sel = IO::Select->new($inflight);
	my $cont = '';
	my $end = time + 10;
	while ($cont !~ /\r\n\r\n/ && time < $end && $sel->can_read($end - time))
	{
		last if !sysread($inflight, my $b, 4096);
		$cont .= $b;
	}
	like($cont, qr{^HTTP/1\.1 100 }, 'in flight: the head is accepted (100 Continue)');
}
print $inflight substr($late, 0, $half);
# A request whose head is not complete yet.
my $later = gateway_event($GATEWAY_ID, int(time) - 7200);
my $partial = conn();
print $partial "POST /v1/ingest HTTP/1.1\r\nHost: x\r\n";
# HTTP/2: an idle connection, and one with a stream whose body is in flight.
my $h2_idle = H2Raw->new($port);
$h2_idle->wait_until(sub { $_[0]->{settings_seen} }, 10);
$h2_idle->request(1, 'GET', '/healthz');
my $hs = $h2_idle->wait_stream_done(1, 10);
is($hs && $hs->{status}, '200', 'HTTP/2 connection: 200 before the stop');
my $h2_busy = H2Raw->new($port);
$h2_busy->wait_until(sub { $_[0]->{settings_seen} }, 10);
my $h2_body = json_array(map { gateway_event($OTHER_ID, int(time) - 5000 - 60 * $_) } 1 .. 20);
$h2_busy->headers(1, H2Raw::request_block('POST', '/v1/ingest',
	'content-type' => 'application/json', 'content-length' => length($h2_body)), end_stream => 0);
ok($h2_busy->data_flow(1, substr($h2_body, 0, 100), 0, 10), 'HTTP/2 in flight: part of the body sent');
ok($h2_busy->ping_barrier(10), 'HTTP/2 in flight: the stream is open');

my $stop = IPC::Run::start([ 'pg_ctl', '-D', $node->data_dir, '-m', 'fast', '-w', 'stop' ],
	'>', \my $stop_out, '2>', \my $stop_err, IPC::Run::timeout(120));

my ($closed, $before) = wait_eof($idle, 60);
ok($closed, 'idle keep-alive connection: closed by the shutdown');
is($before, '', 'idle keep-alive connection: nothing sent before the close');

# The requests in flight go on (the worker gives them 2 s): each is
# answered, after the idle connections were closed.
print $inflight substr($late, $half);
print $partial "Content-Type: application/json\r\nContent-Length: " . length($later) . "\r\n\r\n$later";
$h2_busy->data_flow(1, substr($h2_body, 100), 1, 10);

my $got;
($got, $eof) = read_answer($inflight);
like($got, qr{^HTTP/1\.1 (202|503) .*"(accepted|error)"}s,
	'a request in flight at the stop is answered') or diag($got);
my ($inflight_status) = $got =~ /^HTTP\/1\.1 (\d+)/;
like($got, qr/^connection: close/mi, 'in flight: the answer closes the connection');
ok($eof || (wait_eof($inflight, 10))[0], 'in flight: the connection is closed after the answer');

($answer, $eof) = read_answer($partial);
like($answer, qr{^HTTP/1\.1 503 }, 'a request while the server shuts down is answered 503') or diag($answer);
like($answer, qr/"shutting_down"/, 'with the code shutting_down');
like($answer, qr/^connection: close/mi, 'and the connection closes after it');

$hs = $h2_busy->wait_stream_done(1, 10);
like($hs && $hs->{status} // '', qr/^(202|503)$/, 'HTTP/2 in flight: the stream is answered');
ok($h2_busy->wait_closed(10), 'HTTP/2 in flight: the connection closes after it');
is($h2_busy->{goaway} && $h2_busy->{goaway}{last_stream}, 1,
	'HTTP/2 in flight: GOAWAY named the stream in flight as the last one taken');

($closed, $before) = wait_eof($unused, 10);
ok($closed && $before eq '', 'a connection never used: closed without an answer');
ok($h2_idle->wait_closed(10), 'idle HTTP/2 connection: closed');
is($h2_idle->{goaway} && $h2_idle->{goaway}{code}, H2Raw::NO_ERROR,
	'idle HTTP/2 connection: GOAWAY NO_ERROR first');

$stop->finish;
$node->_update_pid(0);
# SPEC: telemetry answered 202 is not lost on a clean stop.
$node->start;
$node->safe_psql('postgres', 'SELECT machpay.flush()');
my $accepted = grep { ($_ // '') eq '202' } ($inflight_status, $hs && $hs->{status});
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.metrics WHERE entity_id = '$OTHER_ID'"),
	3 * 20 * $accepted, "the rows of the requests in flight answered 202 ($accepted) are stored");
$node->stop;

done_testing();
