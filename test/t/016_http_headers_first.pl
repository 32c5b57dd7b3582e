# Raw HTTP/1.1: whatever the headers decide is answered before a body byte
# is read (SPEC §4): not ready 503, smuggling 400, no key 401, wrong role
# 403, no length 411, declared length over max_body_size 413, type or
# encoding 415, no room in the buffer 429.  Each request declares a body
# (up to 8 MB) that is never sent; the answer arrives anyway, as JSON, and
# the connection is closed.  Bodies checked as they stream in (broken
# chunking, a gzip body that inflates past the limit, a chunked body over
# the limit) are answered with JSON errors too.  None of it stores a row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use IO::Compress::Gzip qw(gzip);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

$SIG{PIPE} = 'IGNORE';

# buffer_size (1 MB, the least) under max_body_size (4 MB): a declared
# length between the two is 429, above both 413.
my $node = machpay_node('http_headers_first', create_extension => 0, conf => <<'EOC');
machpay.buffer_size = 1MB
machpay.max_body_size = 4MB
EOC
my $port = $node->{machpay_http_port};
my $MB8 = 8_000_000;

# Sends $head (and $body, if any) on a fresh connection without waiting
# for the server to read it; returns the parsed answer: status, headers,
# body, raw bytes, whether the server closed the connection within
# $timeout seconds, and how long the answer took to arrive.
sub exchange
{
	my ($head, $body, $timeout) = @_;
	# Shorter than any request timeout a server would use: an answer that
	# waited for a timeout is not one decided at the headers.
	$timeout //= 5;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp') or die "connect: $!";
	binmode $s;
	$s->blocking(0);
	my $out = $head . ($body // '');
	my ($got, $off, $closed, $t_answer) = ('', 0, 0, undef);
	my $t0 = time;
	my $end = $t0 + $timeout;
	my $sel = IO::Select->new($s);
	my %r;
	while (time < $end)
	{
		if ($off < length $out)
		{
			my $n = syswrite($s, $out, length($out) - $off, $off);
			if (defined $n) { $off += $n; }
			elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) { $off = length $out; }
		}
		my ($rd) = IO::Select->select($sel, undef, undef, 0.02);
		next if !$rd || !@$rd;
		my $n = sysread($s, my $buf, 65536);
		next if !defined $n && ($! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR);
		if (!$n)
		{
			$closed = 1;
			last;
		}
		$got .= $buf;
		$t_answer //= time - $t0 if $got =~ /\r\n\r\n/;
	}
	close $s;
	%r = (raw => $got, closed => $closed, status => 0, headers => {}, body => '',
		ms => defined $t_answer ? 1000 * $t_answer : undef, sent => $off);
	if ($got =~ /\AHTTP\/1\.1 (\d{3})[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n/s)
	{
		$r{status} = $1;
		my $rest = substr($got, length $&);
		for (split /\r\n/, $2)
		{
			$r{headers}{ lc $1 } = $2 if /^([^:]+):\s*(.*)$/;
		}
		my $cl = $r{headers}{'content-length'};
		$r{body} = defined $cl ? substr($rest, 0, $cl) : $rest;
	}
	return \%r;
}

sub post_head
{
	my (@h) = @_;
	return "POST /v1/ingest HTTP/1.1\r\nHost: x\r\n" . join('', map { "$_\r\n" } @h) . "\r\n";
}

sub json_error
{
	my ($r) = @_;
	my $j = eval { decode_json($r->{body}) };
	return ref($j) eq 'HASH' ? $j->{error} : undef;
}

# The common checks of an answer decided at the headers.
sub refused_at_headers
{
	my ($what, $r, $status, $code) = @_;
	diag(sprintf('%s: answer after %s ms, %d request bytes sent', $what,
		defined $r->{ms} ? sprintf('%.1f', $r->{ms}) : 'never', $r->{sent}));
	is($r->{status}, $status, "$what: $status without the body being sent");
	like($r->{headers}{'content-type'} // '', qr{^application/json}, "$what: answered as JSON");
	is(json_error($r), $code, "$what: error code $code in the JSON body");
	ok($r->{closed}, "$what: the connection is closed");
}

# ---- before CREATE EXTENSION: 503 ---------------------------------------

my $r;
my $tries = 0;
do { $r = http_req($port, path => '/healthz'); sleep 0.2 if $r->{status} != 200 }
  while ($r->{status} != 200 && ++$tries < 150);
is($r->{status}, 200, 'healthz answers while waiting for the extension');
$r = exchange(post_head('Content-Type: application/json', "Content-Length: $MB8"));
refused_at_headers('not ready', $r, 503, 'not_ready');

$node->safe_psql('postgres',
	'SET client_min_messages = warning; CREATE EXTENSION machpay_receiver CASCADE');
add_key($node, 'tok-ingest', '*', 'ingest');
add_key($node, 'tok-console', '*', 'console');
ok(wait_ready($port), 'ready once the extension exists');
{
	# New keys reach the worker within a second: wait until they did.
	my $end = time + 20;
	sleep 0.1 while time < $end && http_req($port, method => 'POST', token => 'tok-console',
		body => '[]')->{status} != 403;
}
my $key = 'Authorization: Bearer tok-ingest';
my $json = 'Content-Type: application/json';

# ---- decided at the headers ---------------------------------------------

refused_at_headers('no key, 8 MB declared',
	exchange(post_head($json, "Content-Length: $MB8")), 401, 'unauthorized');
refused_at_headers('unknown key, 8 MB declared',
	exchange(post_head('Authorization: Bearer nope', $json, "Content-Length: $MB8")),
	401, 'unauthorized');
refused_at_headers('console key on ingest, 8 MB declared',
	exchange(post_head('Authorization: Bearer tok-console', $json, "Content-Length: $MB8")),
	403, 'forbidden');
refused_at_headers('8 MB declared over max_body_size 4 MB',
	exchange(post_head($key, $json, "Content-Length: $MB8")), 413, 'too_large');
refused_at_headers('text/plain, 3 MB declared',
	exchange(post_head($key, 'Content-Type: text/plain', 'Content-Length: 3000000')),
	415, 'unsupported_media_type');
refused_at_headers('Content-Encoding: br, 3 MB declared',
	exchange(post_head($key, $json, 'Content-Encoding: br', 'Content-Length: 3000000')),
	415, 'unsupported_encoding');
refused_at_headers('Content-Length with Transfer-Encoding',
	exchange(post_head($key, $json, "Content-Length: $MB8", 'Transfer-Encoding: chunked')),
	400, 'bad_request');
$r = exchange(post_head($key, $json, 'Content-Length: 3000000'));
refused_at_headers('3 MB declared, 1 MB buffer', $r, 429, 'buffer_full');
ok(defined $r->{headers}{'retry-after'}, '429 carries Retry-After');

# No length: answered at once, no Connection: close needed.
$r = exchange(post_head($key, $json), undef, 5);
is($r->{status}, 411, 'POST without Content-Length or chunked body: 411');
is(json_error($r), 'length_required', '411 is a JSON error');

# ---- checked as the body streams in -------------------------------------

$r = exchange(post_head($key, $json, 'Transfer-Encoding: chunked'), "zz\r\n{}\r\n0\r\n\r\n");
is($r->{status}, 400, 'broken chunked encoding: 400');
like($r->{headers}{'content-type'} // '', qr{^application/json}, 'broken chunked encoding: JSON');
ok(defined json_error($r), 'broken chunked encoding: a JSON error body');
ok($r->{closed}, 'broken chunked encoding: the connection is closed');

my $zeros = '[' . (' ' x (6 * 1024 * 1024)) . ']';
my $bomb;
gzip(\$zeros => \$bomb) or die 'gzip';
undef $zeros;
$r = exchange(post_head($key, $json, 'Content-Encoding: gzip', 'Content-Length: ' . length($bomb)), $bomb);
is($r->{status}, 413, sprintf('gzip body of %d bytes inflating to 6 MB: 413', length $bomb));
like($r->{headers}{'content-type'} // '', qr{^application/json}, 'gzip over the limit: JSON');
is(json_error($r), 'too_large', 'gzip over the limit: error too_large');

my $chunk = ' ' x 65536;
my $chunked = join('', map { sprintf("%x\r\n%s\r\n", length $chunk, $chunk) } 1 .. 80) . "0\r\n\r\n";
$r = exchange(post_head($key, $json, 'Transfer-Encoding: chunked'), $chunked, 20);
is($r->{status}, 413, 'chunked body of 5 MB over max_body_size 4 MB: 413');
like($r->{headers}{'content-type'} // '', qr{^application/json}, 'chunked over the limit: JSON');
is(json_error($r), 'too_large', 'chunked over the limit: error too_large');
ok($r->{closed}, 'chunked over the limit: the connection is closed');

# ---- nothing stored; the counters saw every answer -----------------------

$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', 'SELECT count(*) FROM machpay.metrics'), 0,
	'no metric rows stored by any refused request');
is($node->safe_psql('postgres', 'SELECT count(*) FROM machpay.debug_logs'), 0,
	'no log rows stored either');
my $m = http_req($port, path => '/metrics')->{body};
for my $st (400, 401, 403, 411, 413, 415, 429)
{
	my ($count) = $m =~ /^machpay_http_requests_total\{status="$st"\} (\d+)/m;
	cmp_ok($count // 0, '>', 0, "status $st counted in /metrics");
}

# The same count sees rows when there are some.
$r = http_req($port, method => 'POST', token => 'tok-ingest', body => json_array(gateway_event()));
is($r->{status}, 202, 'a normal request afterwards: 202');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', 'SELECT count(*) FROM machpay.metrics'), 3,
	'its three rows are stored');

# ---- Expect: 100-continue ----------------------------------------------
# A client that waits for 100 before its body and is refused at the headers
# gets the answer without a 100 and keeps its connection: it need not send
# the body.  If it sends it anyway (it stopped waiting), a small body is
# dropped and the connection serves on; a large one closes it.

sub ka_conn
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp') or die "connect: $!";
	binmode $s;
	return { sock => $s, buf => '', closed => 0 };
}

sub ka_send
{
	my ($c, $bytes) = @_;
	return defined syswrite($c->{sock}, $bytes);
}

# The next whole answer on the connection, or undef at close or deadline.
sub ka_answer
{
	my ($c, $timeout) = @_;
	my $end = time + ($timeout // 10);
	my $sel = IO::Select->new($c->{sock});
	while (1)
	{
		if ($c->{buf} =~ /\AHTTP\/1\.1 (\d{3})[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n/s)
		{
			my ($status, $lines, $hlen) = ($1, $2, length $&);
			my %h;
			for (split /\r\n/, $lines)
			{
				$h{ lc $1 } = $2 if /^([^:]+):\s*(.*)$/;
			}
			my $cl = $h{'content-length'} // 0;
			if (length($c->{buf}) >= $hlen + $cl)
			{
				my $body = substr($c->{buf}, $hlen, $cl);
				my $raw = substr($c->{buf}, 0, $hlen + $cl, '');
				return { status => $status, headers => \%h, body => $body, raw => $raw };
			}
		}
		return undef if $c->{closed} || time >= $end;
		next if !$sel->can_read(0.05);
		my $n = sysread($c->{sock}, my $buf, 65536);
		if (!$n)
		{
			$c->{closed} = 1;
			next;
		}
		$c->{buf} .= $buf;
	}
}

my $expect = 'Expect: 100-continue';
my $healthz = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

my $c = ka_conn();
ka_send($c, post_head($expect, $json, 'Content-Length: 3000000'));
$r = ka_answer($c);
is($r && $r->{status}, 401, 'Expect: 100-continue, no key: 401 at once');
is(json_error($r // {}), 'unauthorized', 'Expect refused: a JSON error');
unlike($r ? $r->{raw} : '', qr/ 100 /, 'Expect refused: no 100 Continue before it');
isnt(lc($r && $r->{headers}{connection} // ''), 'close', 'Expect refused, no body sent: no Connection: close');
ka_send($c, $healthz);
$r = ka_answer($c);
is($r && $r->{status}, 200, 'Expect refused, no body sent: the connection serves the next request');
ok(!$c->{closed}, 'and stays open');
close $c->{sock};

$c = ka_conn();
ka_send($c, post_head($expect, $json, 'Content-Length: 20'));
$r = ka_answer($c);
is($r && $r->{status}, 401, 'Expect, 20-byte body: 401 before the body');
ka_send($c, '[{"source":"log"}]  ' . $healthz);
$r = ka_answer($c);
is($r && $r->{status}, 200, 'the body sent after all is dropped; the next request is served');
is($c->{buf}, '', 'nothing more was answered (the body was not taken for a request)');
close $c->{sock};

$c = ka_conn();
ka_send($c, post_head($expect, $json, 'Content-Length: 3000000'));
$r = ka_answer($c);
is($r && $r->{status}, 401, 'Expect, 3 MB declared: 401 before the body');
ka_send($c, '[' . (' ' x 300000));
$r = ka_answer($c, 10);
ok(!defined $r && $c->{closed}, 'a large body sent after all: the connection is closed, nothing answered');
close $c->{sock};

# A refused request whose small body comes anyway (in pieces, after the
# answer) keeps its connection: the body is dropped, never parsed as a
# request, and the requests behind it are served in order.
$c = ka_conn();
my $small = '[' . (' ' x 99998) . ']';
my $small_head = post_head($json, 'Content-Length: ' . length $small);
ka_send($c, $small_head . substr($small, 0, 1000));
$r = ka_answer($c);
is($r && $r->{status}, 401, 'no key, 100 kB body: 401 at its head');
isnt(lc($r && $r->{headers}{connection} // ''), 'close', 'no key, 100 kB body: the connection stays');
ka_send($c, substr($small, 1000, 50000));
ka_send($c, substr($small, 51000) . $healthz . $small_head . $small . $healthz);
for my $want (200, 401, 200)
{
	$r = ka_answer($c);
	is($r && $r->{status}, $want, "then $want on the same connection");
}
ok(!$c->{closed}, 'the connection stays open throughout');
close $c->{sock};

# An accepted request still gets its 100 Continue.
$c = ka_conn();
my $ev = json_array(gateway_event());
ka_send($c, post_head($expect, $key, $json, 'Content-Length: ' . length $ev));
$r = ka_answer($c);
is($r && $r->{status}, 100, 'Expect, a request that will be read: 100 Continue');
ka_send($c, $ev);
$r = ka_answer($c);
is($r && $r->{status}, 202, 'then its body is read: 202');
close $c->{sock};

# ---- timeouts: 408 once a request began, a silent close otherwise -------

$node->append_conf('postgresql.conf', "machpay.http_header_timeout = 1s\nmachpay.http_idle_timeout = 2s\n");
$node->reload;
{
	# The worker applies a reload at its next loop turn: wait until a head
	# sent in pieces is cut at the new timeout (well before the old 10 s).
	my $end = time + 20;
	my $r;
	do { $r = exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n", undef, 5) }
	  while (!$r->{closed} && time < $end);
}

# A head that never completes: 408, JSON, closed.
$r = exchange("POST /v1/ingest HTTP/1.1\r\nHost: x\r\n$key\r\n", undef, 20);
is($r->{status}, 408, 'a request head not complete within http_header_timeout: 408');
like($r->{headers}{'content-type'} // '', qr{^application/json}, '408: answered as JSON');
is(json_error($r), 'request_timeout', '408: error code request_timeout');
like($r->{body}, qr/"message":"[^"]+"/, '408: a message says why');
ok($r->{closed}, '408: the connection is closed');

# Only the request line's first bytes: a request began all the same.
$r = exchange("POS", undef, 20);
is($r->{status}, 408, 'three bytes of a request line: 408');

# Nothing sent: closed without an answer.
$r = exchange('', undef, 20);
ok($r->{closed}, 'a connection that sends nothing is closed');
is($r->{raw}, '', 'without any answer');

# An idle keep-alive connection after an answer: closed at
# http_idle_timeout with no second answer; blank lines are no request.
$r = exchange("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\r\n", undef, 20);
is($r->{status}, 200, 'keep-alive: the request is answered');
ok($r->{closed}, 'keep-alive: the idle connection is closed');
my @answers = $r->{raw} =~ m{^HTTP/1\.1 \d+}mg;
is(scalar @answers, 1, 'keep-alive: one answer only, no 408 for an idle connection')
  or diag($r->{raw});

# A body that stalls: 408, closed.
$r = exchange(post_head($key, $json, 'Content-Length: 100'), '[{"source"', 20);
is($r->{status}, 408, 'a body that stalls for http_idle_timeout: 408');
is(json_error($r), 'request_timeout', 'stalled body: error code request_timeout');
ok($r->{closed}, 'stalled body: the connection is closed');

$m = http_req($port, path => '/metrics')->{body};
my ($n408) = $m =~ /^machpay_http_requests_total\{status="408"\} (\d+)/m;
cmp_ok($n408 // 0, '>=', 3, '408 counted in /metrics');

# Every close of the server counted by its cause.
my %closed = $m =~ /^machpay_http_connections_closed_total\{cause="(\w+)"\} (\d+)/mg;
diag(join(', ', map { "$_ $closed{$_}" } sort keys %closed));
cmp_ok($closed{header_timeout} // 0, '>=', 3, 'closes by header timeout counted (two 408, one silent)');
cmp_ok($closed{idle_timeout} // 0, '>=', 1, 'closes by idle timeout counted');
cmp_ok($closed{body_timeout} // 0, '>=', 1, 'closes by a stalled body counted');
cmp_ok($closed{refused_body} // 0, '>=', 8, 'closes after a refusal before a large body counted');
cmp_ok($closed{protocol_error} // 0, '>=', 2, 'closes after a protocol error counted (smuggling, chunking)');
cmp_ok($closed{peer} // 0, '>=', 1, 'closes by the client counted');
is($closed{other} // -1, 0, 'no close without a cause');

$node->stop;
done_testing();
