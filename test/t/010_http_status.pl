# POST /v1/ingest and the ops endpoints answer every status of SPEC §4,
# over HTTP/1.1 and over HTTP/2 (prior knowledge); keep-alive and
# pipelining, NDJSON, gzip; HTTPS with ALPN h2 on a throwaway certificate.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('http_status', create_extension => 0, conf => <<'EOC');
machpay.buffer_size = 1MB
machpay.max_body_size = 4MB
EOC
my $port = $node->{machpay_http_port};

# Before CREATE EXTENSION the worker listens but does not ingest.
my $r;
my $tries = 0;
do { $r = http_req($port, path => '/healthz'); sleep 0.2 if $r->{status} != 200 }
  while ($r->{status} != 200 && ++$tries < 150);
is($r->{status}, 200, 'healthz answers while waiting for the extension');
is(http_req($port, path => '/readyz')->{status}, 503, 'readyz is 503 before CREATE EXTENSION');
is(http_req($port, method => 'POST', body => gateway_event())->{status}, 503,
	'ingest is 503 before CREATE EXTENSION');

$node->safe_psql('postgres',
	'SET client_min_messages = warning; CREATE EXTENSION machpay_receiver CASCADE');
add_key($node, 'tok-ingest', '*', 'ingest');
add_key($node, 'tok-console', '*', 'console');
ok(wait_ready($port), 'readyz is 200 once the extension exists');
# tok-console was stored last: once the worker knows it, it knows both.
{
	my $known = 0;
	for (1 .. 200)
	{
		$known = http_req($port, method => 'POST', token => 'tok-console', body => gateway_event())->{status} == 403;
		last if $known;
		select(undef, undef, undef, 0.05);
	}
	ok($known, 'the worker knows the new keys');
}

my $big = json_array(map { gateway_event() } 1 .. 8000);
# A condition of the test's own input, not an assertion about the server.
length($big) > 1024 * 1024 or die 'test input: the large body must exceed the 1 MB buffer';

for my $h2 (0, 1)
{
	my $p = $h2 ? 'h2' : 'h1';
	my %o = (http2 => $h2);

	$r = http_req($port, %o, path => '/healthz');
	is($r->{status}, 200, "$p: healthz 200");
	is($r->{version}, $h2 ? '2' : '1.1', "$p: protocol version");
	is(http_req($port, %o, path => '/nowhere')->{status}, 404, "$p: unknown path 404");
	is(http_req($port, %o, path => '/v1/ingest')->{status}, 405, "$p: GET on ingest 405");
	is(http_req($port, %o, method => 'POST', path => '/healthz', body => '{}')->{status},
		405, "$p: POST on healthz 405");

	$r = http_req($port, %o, method => 'POST', body => gateway_event());
	is($r->{status}, 401, "$p: no key 401");
	like($r->{headers}{'content-type'}, qr{application/json}, "$p: errors are JSON");
	is(http_req($port, %o, method => 'POST', token => 'nope', body => gateway_event())->{status},
		401, "$p: unknown key 401");
	is(http_req($port, %o, method => 'POST', token => 'tok-console', body => gateway_event())->{status},
		403, "$p: console key on ingest 403");

	$r = http_req($port, %o, method => 'POST', token => 'tok-ingest', body => gateway_event());
	is($r->{status}, 202, "$p: telemetry 202");
	like($r->{body}, qr/"accepted":1\b/, "$p: one event accepted");

	$r = http_req($port, %o, method => 'POST', token => 'tok-ingest',
		body => json_array(gateway_event(), sdk_event(), log_event()));
	is($r->{status}, 202, "$p: array 202");
	like($r->{body}, qr/"accepted":3\b/, "$p: three events accepted");

	$r = http_req($port, %o, method => 'POST', token => 'tok-ingest',
		type => 'application/x-ndjson', body => gateway_event() . "\n" . sdk_event() . "\n");
	is($r->{status}, 202, "$p: NDJSON 202");
	like($r->{body}, qr/"accepted":2\b/, "$p: NDJSON lines accepted");

	$r = http_req($port, %o, method => 'POST', token => 'tok-ingest', gzip => 1,
		body => json_array(gateway_event(), sdk_event()));
	is($r->{status}, 202, "$p: gzip 202");
	like($r->{body}, qr/"accepted":2\b/, "$p: gzip events accepted");

	my $nonce = 1000 + $h2;
	$r = http_req($port, %o, method => 'POST', token => 'tok-ingest',
		body => json_array(intent_event($nonce), gateway_event()));
	is($r->{status}, 200, "$p: intents 200 after commit");
	my ($id) = $r->{body} =~ /"intents":\[\{"index":0,"id":"([0-9a-f-]{36})","duplicate":false\}\]/;
	ok($id, "$p: intent id in the answer");
	is($node->safe_psql('postgres',
		"SELECT count(*) FROM machpay.payment_intents WHERE id = '" . ($id // '00000000-0000-0000-0000-000000000000') . "'"),
		1, "$p: intent committed before the answer");

	$r = http_req($port, %o, method => 'POST', token => 'tok-ingest', body => 'not json {');
	is($r->{status}, 400, "$p: bad JSON 400");
	$r = http_req($port, %o, method => 'POST', token => 'tok-ingest',
		body => '{"source":"bogus"}');
	is($r->{status}, 422, "$p: every event rejected 422");
	like($r->{body}, qr/"code":"unknown_source"/, "$p: error code listed");

	is(http_req($port, %o, method => 'POST', token => 'tok-ingest', type => 'text/plain',
		body => gateway_event())->{status}, 415, "$p: text/plain 415");
	is(http_req($port, %o, method => 'POST', token => 'tok-ingest',
		headers => ['Content-Encoding: br'], body => gateway_event())->{status},
		415, "$p: unknown Content-Encoding 415");
	is(http_req($port, %o, method => 'POST', token => 'tok-ingest',
		body => ' ' x (5 * 1024 * 1024))->{status}, 413, "$p: body over max_body_size 413");

	$r = http_req($port, %o, method => 'POST', token => 'tok-ingest', body => $big);
	is($r->{status}, 429, "$p: no room in the buffer 429");
	ok(defined $r->{headers}{'retry-after'}, "$p: 429 carries Retry-After");

	# No body at all: HTTP/1.1 without Content-Length, HTTP/2 HEADERS with END_STREAM.
	if ($h2)
	{
		is(http_req($port, %o, method => 'POST', token => 'tok-ingest',
			headers => ['Content-Type: application/json'])->{status}, 411, "$p: no body 411");
	}
	else
	{
		my $raw = raw_exchange($port,
			"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-ingest\r\n"
			  . "Content-Type: application/json\r\nConnection: close\r\n\r\n");
		like($raw, qr{^HTTP/1\.1 411}, "$p: POST without length 411");
	}
}

# Keep-alive and pipelining: two requests in one write, two answers, one connection.
my $two = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
  . "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-ingest\r\n"
  . "Content-Type: application/json\r\nContent-Length: " . length(gateway_event()) . "\r\n"
  . "Connection: close\r\n\r\n" . gateway_event();
my $raw = raw_exchange($port, $two);
like($raw, qr{^HTTP/1\.1 200 .*HTTP/1\.1 202 }s, 'pipelined requests answered in order on one connection');

# Request smuggling: Content-Length and Transfer-Encoding together -> 400 and close.
my ($ans, $closed) = raw_exchange($port,
	"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-ingest\r\n"
	  . "Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
	  . "2\r\n{}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 5);
like($ans, qr{^HTTP/1\.1 400}, 'Content-Length with Transfer-Encoding is 400');
unlike($ans, qr{HTTP/1\.1 200}, 'nothing after the smuggling attempt is served');
ok($closed, 'the connection is closed after the smuggling attempt');

# /metrics renders the counters.
$r = http_req($port, path => '/metrics');
is($r->{status}, 200, 'metrics 200');
like($r->{body}, qr/^machpay_http_requests_total\{status="202"\} [1-9]/m, 'requests by status');
like($r->{body}, qr/^machpay_http_events_total\{source="gateway",outcome="accepted"\} [1-9]/m,
	'events by source and outcome');
like($r->{body}, qr/^machpay_buffer_bytes_capacity \d+/m, 'buffer capacity gauge');
like($r->{body}, qr/^machpay_intents_waiting \d+/m, 'intents waiting gauge');
like($r->{body}, qr/^machpay_flush_duration_seconds_bucket\{le="\+Inf"\} [1-9]/m, 'flush duration histogram');
like($r->{body}, qr/^machpay_rows_metrics_total [1-9]/m, 'rows by table');

is($node->safe_psql('postgres', q{
	SELECT count(*) FROM pg_stat_activity
	WHERE backend_type = 'machpay ingest' AND query LIKE 'serving on port%'}),
	1, 'the worker shows its state in pg_stat_activity');

$node->stop;

# HTTPS with ALPN h2, on a throwaway certificate.
my $tls = PostgreSQL::Test::Utils::tempdir();
system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
	'-subj', '/CN=localhost', '-keyout', "$tls/key.pem", '-out', "$tls/cert.pem",
	'-loglevel', 'error') == 0
  or system('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
	'-subj', '/CN=localhost', '-keyout', "$tls/key.pem", '-out', "$tls/cert.pem") == 0
  or die 'openssl failed';
my $tnode = machpay_node('http_tls', conf => <<"EOC");
machpay.tls_cert_file = '$tls/cert.pem'
machpay.tls_key_file = '$tls/key.pem'
machpay.auth = off
EOC
my $tport = $tnode->{machpay_http_port};
$tries = 0;
do { $r = http_req($tport, tls => 1, path => '/readyz'); sleep 0.2 if $r->{status} != 200 }
  while ($r->{status} != 200 && ++$tries < 150);
is($r->{status}, 200, 'TLS: readyz 200');
is($r->{version}, '2', 'TLS: h2 negotiated by ALPN');
$r = http_req($tport, tls => 1, method => 'POST', body => gateway_event());
is($r->{status}, 202, 'TLS: telemetry 202 (auth off)');
my $h1 = `curl -s -k --http1.1 -o /dev/null -w '%{http_version} %{http_code}' https://127.0.0.1:$tport/healthz`;
is($h1, '1.1 200', 'TLS: HTTP/1.1 still served');

# With no preread (the stream window is 0 until the head is decided), curl
# over TLS applies our SETTINGS before it sends a body byte, and its
# SETTINGS ACK comes after its HEADERS: the accepted upload still gets its
# window, its 202 and its rows, one event or more than a window's worth.
$tnode->append_conf('postgresql.conf', 'machpay.http2_body_preread = 0');
$tnode->restart;
$tries = 0;
do { $r = http_req($tport, tls => 1, path => '/readyz'); sleep 0.2 if $r->{status} != 200 }
  while ($r->{status} != 200 && ++$tries < 150);
is($r->{status}, 200, 'TLS, preread 0: readyz 200');
is($tnode->safe_psql('postgres', 'SHOW machpay.http2_body_preread'), '0',
	'TLS, preread 0: the setting is in force');
$r = http_req($tport, tls => 1, method => 'POST', body => gateway_event($OTHER_ID));
is("$r->{version} $r->{status}", '2 202', 'TLS, preread 0: an h2 upload with curl is 202');
$r = http_req($tport, tls => 1, method => 'POST',
	body => json_array(map { gateway_event($OTHER_ID, int(time) - 60 * $_) } 1 .. 400));
is("$r->{version} $r->{status}", '2 202', 'TLS, preread 0: a 90 kB h2 upload with curl is 202');
like($r->{body}, qr/"accepted":400\b/, 'TLS, preread 0: every event accepted');
$tnode->safe_psql('postgres', 'SELECT machpay.flush()');
is($tnode->safe_psql('postgres',
	"SELECT count(*) FROM machpay.metrics WHERE entity_id = '$OTHER_ID'"),
	3 * 401, 'TLS, preread 0: the rows of both uploads are stored');
$tnode->stop;

done_testing();
