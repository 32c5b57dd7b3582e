# Limits and bad input on the ingest port: a gzip bomb is 413, request
# smuggling is 400 and closes, slowloris and 1,000 idle connections do not
# block a normal client, garbage bytes never crash the worker.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use IO::Compress::Gzip qw(gzip);
use IPC::Run;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('http_limits', conf => <<'EOC');
machpay.max_body_size = 1MB
machpay.auth = off
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'server ready');

sub worker_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay ingest'});
}
my $pid = worker_pid();
ok($pid, "ingest worker running (pid $pid)");

# A gzip bomb: 64 MB of zeros in a few kB; the inflated limit applies.
my $zeros = "\0" x (64 * 1024 * 1024);
my $bomb;
gzip(\$zeros => \$bomb) or die 'gzip';
undef $zeros;
# A condition of the test's own input, not an assertion about the server.
length($bomb) < 1024 * 1024 or die 'test input: the gzip bomb must be under the 1 MB body limit';
for my $h2 (0, 1)
{
	my $r = http_req($port, http2 => $h2, method => 'POST',
		headers => ['Content-Encoding: gzip', 'Content-Type: application/json'],
		body => $bomb, type => 'application/json');
	is($r->{status}, 413, ($h2 ? 'h2' : 'h1') . ': gzip bomb is 413');
}
my $r = http_req($port, method => 'POST', gzip => 1, body => json_array(gateway_event()));
is($r->{status}, 202, 'a normal gzip body still works');
$r = http_req($port, method => 'POST', headers => ['Content-Encoding: gzip'],
	body => "\x1f\x8b\x08\x00garbage");
is($r->{status}, 400, 'a corrupt gzip body is 400');

# Deep nesting is 400, never a crash.
$r = http_req($port, method => 'POST', body => ('[' x 100000) . (']' x 100000));
is($r->{status}, 400, 'nesting deeper than 64 is 400');

# Smuggling, both header orders; nothing after it is served.
for my $head ("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
	"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n")
{
	my ($ans, $closed) = raw_exchange($port,
		"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n$head\r\n"
		  . "2\r\n{}\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	like($ans, qr{^HTTP/1\.1 400}, 'Content-Length with Transfer-Encoding: 400');
	unlike($ans, qr{HTTP/1\.1 200}, 'the smuggled request is not served');
	ok($closed, 'the connection is closed');
}
my ($te) = raw_exchange($port,
	"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
	  . "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
like($te, qr{^HTTP/1\.1 400}, 'an unknown Transfer-Encoding is 400');

# Garbage bytes: random, a broken request line, a broken HTTP/2 preface.
srand(42);
my $random = join('', map { chr(int(rand(256))) } 1 .. 65536);
# Each is refused (400, or for HTTP/2 a GOAWAY) and the connection closed,
# never a 2xx; a declared length over the limit is 413 before any body.
my ($ans, $closed) = raw_exchange($port, $random, 10);
ok($closed, 'random bytes: the connection is closed');
ok($ans eq '' || $ans =~ m{^HTTP/1\.[01] 400 }, 'random bytes: 400 or nothing')
  or diag(substr($ans, 0, 200));
($ans, $closed) = raw_exchange($port, "GET /\x00\xff HTTP/1.1\r\nHost: \x01\r\n\r\n", 10);
like($ans, qr{^HTTP/1\.1 400 }, 'a broken request line: 400');
ok($closed, 'a broken request line: the connection is closed');
($ans, $closed) = raw_exchange($port, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" . $random, 10);
ok($closed, 'a broken HTTP/2 connection is closed');
unlike($ans, qr{HTTP/1\.1 2\d\d}, 'a broken HTTP/2 connection gets no HTTP/1 success');
($ans, $closed) = raw_exchange($port,
	"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999999999999999\r\n\r\n", 10);
like($ans, qr{^HTTP/1\.1 (413|400) }, 'Content-Length: 99999999999999999999 is refused before the body (413 or 400)');
($ans, $closed) = raw_exchange($port,
	"POST /v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 10);
like($ans, qr{^HTTP/1\.1 400 }, 'a broken chunk size: 400');
ok($closed, 'a broken chunk size: the connection is closed');
$r = http_req($port, path => '/healthz');
is($r->{status}, 200, 'healthz answers after garbage');
is(worker_pid(), $pid, 'the same worker: garbage did not crash it');

# 1,000 idle connections and a few slowloris clients, held by a helper
# process with a raised descriptor limit; a normal client is still served.
my $holder = <<'EOP';
use strict; use IO::Socket::INET; use Time::HiRes qw(sleep time);
my ($port, $n) = @ARGV;
my @idle;
for (1 .. $n) {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
	  or last;
	push @idle, $s;
}
my @slow;
for (1 .. 5) {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp') or last;
	syswrite($s, "POST /v1/ingest HTTP/1.1\r\nHost: x\r\n");
	push @slow, $s;
}
print "open " . scalar(@idle) . " " . scalar(@slow) . "\n";
$| = 1;
# Trickle one header byte a second on the slow ones until stdin closes.
$SIG{ALRM} = sub {};
my $closed_slow = 0;
my $start = time;
while (1) {
	my $rin = '';
	vec($rin, fileno(STDIN), 1) = 1;
	my $nfound = select(my $rout = $rin, undef, undef, 1.0);
	if ($nfound > 0) { my $line = <STDIN>; last if !defined $line; }
	for my $s (@slow) { next if !$s; if (!defined syswrite($s, "X")) { $s = undef; $closed_slow++; } }
	if ($closed_slow == 5) { print "slow closed " . int(time - $start) . "\n"; $closed_slow = 99; }
}
EOP
my ($in, $out) = ('', '');
my $h = IPC::Run::start(['bash', '-c', 'ulimit -n 4096 2>/dev/null; exec perl -e "$0" "$@"', $holder, $port, 1000],
	\$in, \$out, \*STDERR);
my $end = time + 60;
$h->pump while $out !~ /open/ && time < $end;
like($out, qr/open 1000 5/, 'helper holds 1,000 idle and 5 slowloris connections');

my $t0 = time;
$r = http_req($port, method => 'POST', body => json_array(gateway_event()));
is($r->{status}, 202, 'a normal client is served beside them (HTTP/1.1)');
$r = http_req($port, http2 => 1, method => 'POST', body => json_array(gateway_event()));
is($r->{status}, 202, 'a normal client is served beside them (HTTP/2)');
note(sprintf('normal requests took %.3f s with 1,005 other connections', time - $t0));

# The slowloris connections are cut by the request timeout.
$end = time + 60;
$h->pump while $out !~ /slow closed/ && time < $end;
like($out, qr/slow closed \d+/, 'slowloris connections are closed by the server');
is(http_req($port, path => '/healthz')->{status}, 200, 'still healthy');
$in = "\n";
$h->kill_kill;

is(worker_pid(), $pid, 'the same worker after all of it');
$node->stop;
done_testing();
