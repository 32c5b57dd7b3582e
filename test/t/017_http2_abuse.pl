# HTTP/2 spoken in raw frames (cleartext, prior knowledge): a normal POST
# lands its rows; a request refused at the headers is answered and reset
# without the server ever opening flow-control window for its body; rapid
# reset, CONTINUATION floods, oversized header blocks, SETTINGS/PING/
# WINDOW_UPDATE floods, too many concurrent streams and a zero-window reader
# each meet a limit, while /healthz on another connection keeps its latency
# and the worker stays the same process.  Timeouts apply per stream.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use File::Temp ();
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;
use H2Raw;

$SIG{PIPE} = 'IGNORE';

# The strict setting: no body byte before the head is decided (the
# default, 65535, is HTTP/2's own initial window).
my $node = machpay_node('http2_abuse', conf => <<'EOC');
machpay.max_body_size = 1MB
machpay.http2_body_preread = 0
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'server ready');
add_key($node, 'tok-ingest', '*', 'ingest');
my @auth = (authorization => 'Bearer tok-ingest');
# New keys reach the worker within a second: wait until this one did.
{
	my $end = time + 20;
	sleep 0.1 while time < $end && http_req($port, method => 'POST', token => 'tok-ingest',
		body => '[]')->{status} == 401;
}

sub worker_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay ingest'});
}
my $pid = worker_pid();
ok($pid, "ingest worker running (pid $pid)");

# Private memory of the worker (kB): VmRSS also counts shared memory the
# process touches for the first time, RssAnon does not.
sub worker_anon_kb
{
	open(my $fh, '<', "/proc/$pid/status") or return -1;
	while (<$fh>)
	{
		return $1 if /^RssAnon:\s+(\d+)/;
	}
	return -1;
}

sub stored_rows
{
	$node->safe_psql('postgres', 'SELECT machpay.flush()');
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM machpay.metrics WHERE entity_id = '$GATEWAY_ID'");
}

sub still_alive
{
	my ($what) = @_;
	is(http_req($port, path => '/healthz')->{status}, 200, "$what: healthz 200 afterwards");
	is(worker_pid(), $pid, "$what: the same worker process");
}

sub json_error
{
	my ($body) = @_;
	my $j = eval { decode_json($body // '') };
	return ref($j) eq 'HASH' ? $j->{error} : undef;
}

# A connection that has exchanged SETTINGS with the server.
sub h2_conn
{
	my (%o) = @_;
	my $c = H2Raw->new($port, %o);
	$c->wait_until(sub { $_[0]->{settings_seen} }, 10);
	return $c;
}

# ---- a normal request ---------------------------------------------------

my $body = json_array(gateway_event());
my $c = h2_conn();
ok($c->{settings_seen}, 'the server sends its SETTINGS after the preface');
is($c->{server_settings}{ H2Raw::INITIAL_WINDOW_SIZE() }, 0,
	'SETTINGS_INITIAL_WINDOW_SIZE 0 with http2_body_preread = 0: no body byte before the head is decided');
$c->request(1, 'POST', '/v1/ingest', [@auth, 'content-type' => 'application/json',
	'content-length' => length($body)], $body);
my $st = $c->wait_stream_done(1, 10);
is($st && $st->{status}, '202', 'raw frames: a valid POST is 202');
like($st && $st->{body}, qr/"accepted":1\b/, 'raw frames: one event accepted');
like($st && $st->{headers}{'content-type'} // '', qr{^application/json}, 'raw frames: answered as JSON');
$c->close;
is(stored_rows(), 3, 'its three rows are stored');

# ---- a head decided before the client acknowledged our SETTINGS ----------
# What curl does: its request leaves in its first flight, it applies our
# SETTINGS (window 0) as they come, and its ACK reaches the server after
# the HEADERS.  The window the server opens for the accepted body must
# count from our SETTINGS, which the client already applies, not from the
# default window the server's HTTP/2 library assumes until the ACK (which
# then closes it, and the upload stalls).  Rows of $OTHER_ID, counted apart.
sub other_rows
{
	$node->safe_psql('postgres', 'SELECT machpay.flush()');
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM machpay.metrics WHERE entity_id = '$OTHER_ID'");
}
{
	my $early = json_array(map { gateway_event($OTHER_ID, int(time) - 60 * $_) } 1 .. 400);
	$c = h2_conn(no_auto_ack => 1);
	$c->{no_auto_ack} = 0;		# from now on the client counts from our SETTINGS
	$c->headers(1, H2Raw::request_block('POST', '/v1/ingest', @auth,
		'content-type' => 'application/json', 'content-length' => length($early)),
		end_stream => 0);
	$c->settings_ack;
	ok($c->data_flow(1, $early, 1, 10),
		sprintf('ACK after the HEADERS: the server opens the window for the %d-byte body', length $early))
	  or diag('stream window seen: ' . ($c->{window_updates}{1} // 0));
	$st = $c->wait_stream_done(1, 10);
	is($st && $st->{status}, '202', 'ACK after the HEADERS: the POST is 202');
	like($st && $st->{body}, qr/"accepted":400\b/, 'ACK after the HEADERS: every event accepted');
	$c->close;
	is(other_rows(), 1200, 'ACK after the HEADERS: its rows are stored');
}
# The same with curl itself (prior knowledge), whose first flight races
# with our SETTINGS: a few uploads on new connections, each answered.
{
	my @codes;
	for my $i (1 .. 5)
	{
		my ($fh, $file) = File::Temp::tempfile(UNLINK => 1);
		print $fh json_array(gateway_event($OTHER_ID, int(time) - 30000 - 60 * $i));
		close $fh;
		push @codes, `curl -s --http2-prior-knowledge --max-time 20 -o /dev/null -w '%{http_version} %{http_code}' -H 'Expect:' -H 'Authorization: Bearer tok-ingest' -H 'Content-Type: application/json' --data-binary \@$file http://127.0.0.1:$port/v1/ingest`;
	}
	is(join(', ', @codes), join(', ', ('2 202') x 5), 'curl, prior knowledge: five uploads answered 202');
	is(other_rows(), 1215, 'curl, prior knowledge: their rows are stored');
}

# ---- refused at the headers: no window for the body ---------------------

for my $case (
	[ 'no key, 8 MB declared', 401, [ 'content-type' => 'application/json', 'content-length' => 8000000 ] ],
	[ 'over max_body_size by content-length', 413,
	  [ @auth, 'content-type' => 'application/json', 'content-length' => 2000000 ] ])
{
	my ($what, $want, $headers) = @$case;
	my ($declared) = map { $headers->[ $_ + 1 ] } grep { $headers->[$_] eq 'content-length' }
	  grep { $_ % 2 == 0 } 0 .. $#$headers;
	$c = h2_conn();
	$c->headers(1, H2Raw::request_block('POST', '/v1/ingest', @$headers), end_stream => 0);
	my $t0 = time;
	$st = $c->wait_until(sub {
		my $s = $_[0]->stream(1);
		$s && defined $s->{status} && ($s->{end_stream} || defined $s->{rst}) ? $s : undef;
	}, 10);
	diag(sprintf('%s: answered after %.1f ms without a body byte sent', $what, 1000 * (time - $t0)));
	is($st && $st->{status}, $want, "$what: $want before any DATA was sent");
	is(json_error($st && $st->{body}), $want == 401 ? 'unauthorized' : 'too_large',
		"$what: the answer is a JSON error");
	like($st && $st->{headers}{'content-type'} // '', qr{^application/json},
		"$what: Content-Type application/json");
	# A client already in flight may send some of the body: the server
	# drops it without opening window for more.
	$c->data(1, 'x' x 16384, 0);
	ok($c->ping_barrier(10), "$what: connection still answers PING");
	ok(!$c->{window_updates}{1}, "$what: no WINDOW_UPDATE for the refused stream")
	  or diag("WINDOW_UPDATE for stream 1: $c->{window_updates}{1}");
	# Nor may the initial window itself have let the whole body in.
	my $win = $c->{server_settings}{ H2Raw::INITIAL_WINDOW_SIZE() } // 65535;
	cmp_ok($win + ($c->{window_updates}{1} // 0), '<', $declared,
		"$what: the stream window ($win) never covered the declared body");
	# RFC 9113 §8.1: the complete answer, then RST_STREAM NO_ERROR.
	$c->wait_until(sub { defined $_[0]->{streams}{1}{rst} }, 10);
	my @on1 = grep { $_->{stream} == 1 } @{ $c->{frames} };
	my $order = join(' ', map {
		$_->{name} . ($_->{flags} & H2Raw::END_STREAM && $_->{name} =~ /DATA|HEADERS/ ? '+END' : '')
	} @on1);
	like($order, qr/^HEADERS (?:DATA )*DATA\+END RST_STREAM$/,
		"$what: HEADERS, DATA with END_STREAM, then RST_STREAM ($order)");
	is($st && $st->{rst}, H2Raw::NO_ERROR, "$what: the reset is NO_ERROR");
	# The same connection serves the next request.
	my $next = json_array(gateway_event($GATEWAY_ID, int(time) - 600 - length($what)));
	$c->request(3, 'POST', '/v1/ingest', [@auth, 'content-type' => 'application/json',
		'content-length' => length($next)], $next);
	my $st3 = $c->wait_stream_done(3, 10);
	is($st3 && $st3->{status}, '202', "$what: the next stream on the connection is served");
	$c->close;
}
is(stored_rows(), 9, 'the requests after the refusals stored their rows');

# Refused bodies already in flight fill the connection window, never the
# streams': the server gives the connection window back (it never opens a
# stream's), so a client whose refused streams sent 1.5 MB (more than the
# connection window) is still served on the same connection.  A server
# that did not would see a flow-control error on the last stream.  The
# client does not acknowledge the server's SETTINGS, so its streams keep
# the window of RFC 9113 (65535) that a client has before they apply.
{
	$c = h2_conn(no_auto_ack => 1);
	my $win = 65535;
	my $chunk = 'x' x 16384;
	my $sent = 0;
	my $id = 1;
	my $refused = 0;
	while ($sent < 1536 * 1024)
	{
		$c->headers($id, H2Raw::request_block('POST', '/v1/ingest', 'content-type' => 'application/json',
			'content-length' => 4000000), end_stream => 0);
		# The whole stream window, as a client that sent before the answer.
		for (my $n = 0; $n < $win; $n += 16384)
		{
			my $k = $win - $n < 16384 ? $win - $n : 16384;
			$c->data($id, substr($chunk, 0, $k), 0);
			$sent += $k;
		}
		last if $win == 0;
		my $s = $c->wait_until(sub { my $x = $_[0]->stream($id); $x && defined $x->{rst} ? $x : undef }, 10);
		$refused++ if $s && ($s->{status} // '') eq '401' && $s->{rst} == H2Raw::NO_ERROR;
		$id += 2;
	}
	my $n = ($id - 1) / 2;
	is($refused, $n, "$n refused streams, each answered 401 then reset NO_ERROR");
	my $stream_updates = grep { $_ != 0 } keys %{ $c->{window_updates} // {} };
	is($stream_updates, 0, 'no WINDOW_UPDATE for any refused stream');
	my $next = json_array(gateway_event($GATEWAY_ID, int(time) - 900));
	$c->request($id, 'POST', '/v1/ingest', [@auth, 'content-type' => 'application/json',
		'content-length' => length($next)], $next);
	$st = $c->wait_stream_done($id, 10);
	diag(sprintf('%d KB of refused DATA sent; connection WINDOW_UPDATEs: %d bytes',
		$sent / 1024, $c->{window_updates}{0} // 0));
	is($st && $st->{status}, '202', 'after 1.5 MB of refused DATA the connection still serves a POST');
	ok(!$c->{goaway}, 'no GOAWAY (no flow-control error)')
	  or diag("GOAWAY $c->{goaway}{code}");
	$c->close;
}
is(stored_rows(), 12, 'and its rows are stored');

# ---- too many concurrent streams ----------------------------------------

# A fresh event (a new period_end): the same one again would store no rows.
$body = json_array(gateway_event($GATEWAY_ID, int(time) - 300));

$c = h2_conn();
my $max = $c->{server_settings}{ H2Raw::MAX_CONCURRENT_STREAMS() };
ok(defined $max && $max > 0 && $max <= 1000,
	'SETTINGS_MAX_CONCURRENT_STREAMS is advertised and bounded (' . ($max // 'none') . ')');
$max = 100 if !defined $max || $max > 1000;
my $extra = 20;
for my $i (0 .. $max + $extra - 1)
{
	$c->headers(1 + 2 * $i, H2Raw::request_block('POST', '/v1/ingest', @auth,
		'content-type' => 'application/json', 'content-length' => length($body)),
		end_stream => 0) or last;
}
$c->ping_barrier(10);
my @refused = grep { defined $_->{rst}
	  && ($_->{rst} == H2Raw::REFUSED_STREAM || $_->{rst} == H2Raw::PROTOCOL_ERROR) }
  values %{ $c->{streams} };
ok(@refused >= $extra || ($c->{goaway} && $c->{goaway}{code} != 0),
	sprintf('streams over the limit are refused (%d reset, goaway %s)',
		scalar @refused, $c->{goaway} ? $c->{goaway}{code} : 'none'));
# The first stream is still served once its body arrives.
$c->data_flow(1, $body, 1);
$st = $c->wait_stream_done(1, 10);
is($st && $st->{status}, '202', 'a stream within the limit completes with 202');
$c->close;
is(stored_rows(), 15, 'only that request stored rows');

# ---- oversized header block ---------------------------------------------

$c = h2_conn();
{
	my $block = H2Raw::request_block('POST', '/v1/ingest', @auth,
		'content-type' => 'application/json', 'content-length' => length($body),
		map { ("x-pad-$_" => 'a' x 4000) } 1 .. 256);
	my @parts = unpack('(a16384)*', $block);
	$c->headers(1, shift @parts, end_stream => 0, end_headers => 0);
	while (@parts)
	{
		my $p = shift @parts;
		$c->continuation(1, $p, !@parts) or last;
	}
	$c->wait_until(sub {
		my $s = $_[0]->stream(1);
		$_[0]->{goaway} || ($s && (defined $s->{rst} || defined $s->{status}));
	}, 10);
	$st = $c->stream(1);
	my $outcome = $c->{goaway} ? "GOAWAY $c->{goaway}{code}"
	  : $st && defined $st->{status} ? "status $st->{status}"
	  : $st && defined $st->{rst} ? "RST_STREAM $st->{rst}" : $c->{closed} ? 'closed' : 'nothing';
	ok($c->{goaway} || ($st && (defined $st->{rst} || ($st->{status} // '') =~ /^(431|400|413)$/)),
		"a 1 MB header block is refused ($outcome)");
}
$c->close;
still_alive('oversized header block');

# ---- control-frame floods -----------------------------------------------
# 2,000,000 frames, more ACKs than any socket buffer holds.  The client
# does not read while it floods (a small receive buffer), so a server that
# queues its ACKs without limit is seen too.  The server must end the
# connection while the flood lasts (a server that stops reading may end it
# by its send timeout, within the 30 s the flood may last) or right after
# it: within 3 s, before any idle timeout.
for my $flood (
	[ 'SETTINGS', H2Raw::frame($H2Raw::TYPE{SETTINGS}, 0, 0, '') ],
	[ 'PING', H2Raw::frame($H2Raw::TYPE{PING}, 0, 0, 'abcdefgh') ],
	[ 'WINDOW_UPDATE', H2Raw::frame($H2Raw::TYPE{WINDOW_UPDATE}, 0, 0, pack('N', 1)) ])
{
	my ($what, $frame) = @$flood;
	my $anon0 = worker_anon_kb();
	my $peak = $anon0;
	$c = h2_conn(rcvbuf => 4096);
	$c->{no_auto_ack} = 1;
	my $chunk = $frame x 1000;
	my $t0 = time;
	my $end = $t0 + 30;
	my $sent = 0;
	while ($sent < 2000 && time < $end)
	{
		last if !$c->send_noread($chunk, $end);
		$sent++;
		if ($sent % 50 == 0)
		{
			my $a = worker_anon_kb();
			$peak = $a if $a > $peak;
		}
	}
	my $flood_end = time;
	my $closed = $c->wait_closed(3);
	my $a = worker_anon_kb();
	$peak = $a if $a > $peak;
	diag(sprintf('%s flood: %d frames sent in %.1f s; write error: %s; goaway: %s; closed: %s; worker RssAnon %d -> peak %d kB',
		$what, $sent * 1000, $flood_end - $t0, $c->{write_error} // 'none',
		$c->{goaway} ? $c->{goaway}{code} : 'none', $c->{closed} || 'no', $anon0, $peak));
	ok($c->{write_error} || $closed || $c->{goaway},
		"$what flood: the server ends the connection");
	cmp_ok($peak - $anon0, '<', 8 * 1024, "$what flood: worker memory grew by less than 8 MB");
	$c->close;
	still_alive("$what flood");
}

# ---- zero-window reader -------------------------------------------------

{
	my $anon0 = worker_anon_kb();
	$c = h2_conn(rcvbuf => 4096, settings => { H2Raw::INITIAL_WINDOW_SIZE() => 0 });
	my $blocks = '';
	for my $i (0 .. 199)
	{
		$blocks .= H2Raw::frame($H2Raw::TYPE{HEADERS}, H2Raw::END_STREAM | H2Raw::END_HEADERS,
			1 + 2 * $i, H2Raw::request_block('GET', '/metrics'));
	}
	$c->send_noread($blocks, time + 10);
	my $peak = $anon0;
	my $end = time + 60;
	while (time < $end && !$c->{closed})
	{
		my $a = worker_anon_kb();
		$peak = $a if $a > $peak;
		$c->wait_until(sub { 0 }, 0.5);
	}
	diag(sprintf('zero-window reader: closed after %s; worker RssAnon %d -> peak %d kB',
		$c->{closed} || 'never', $anon0, $peak));
	ok($c->{closed}, 'zero-window reader: the server closes the connection');
	cmp_ok($peak - $anon0, '<', 32 * 1024, 'zero-window reader: worker memory bounded');
	$c->close;
	still_alive('zero-window reader');
}

# ---- floods with a prober on another connection -------------------------

# A child process asks /healthz every 10 ms on its own keep-alive HTTP/1.1
# connection until $stopfile exists and writes one latency (ms) a line,
# from the start of the request (connecting included) to the end of the
# answer.  A prober that falls behind skips the probes it missed rather
# than bursting: it is one client, not an open-loop load.
my $dir = PostgreSQL::Test::Utils::tempdir();
sub start_prober
{
	my ($name) = @_;
	my $out = "$dir/$name.lat";
	my $stop = "$dir/$name.stop";
	my $child = fork();
	die "fork: $!" if !defined $child;
	return { pid => $child, out => $out, stop => $stop } if $child;
	open(my $fh, '>', $out) or POSIX::_exit(1);
	my ($s, $next) = (undef, time);
	my $deadline = time + 120;
	while (!-e $stop && time < $deadline)
	{
		my $start = time;
		$next = $start if $next < $start - 0.010;
		$next += 0.010;
		$s //= IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
		my $ok = 0;
		if ($s && syswrite($s, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
		{
			my ($got, $sel) = ('', IO::Select->new($s));
			my $end = time + 5;
			while (time < $end && $sel->can_read($end - time))
			{
				my $n = sysread($s, my $buf, 65536);
				last if !$n;
				$got .= $buf;
				if ($got =~ /\A(HTTP\/1\.1 (\d+).*?\r\n\r\n)/s)
				{
					my ($head, $status) = ($1, $2);
					my ($cl) = $head =~ /content-length:\s*(\d+)/i;
					if (length($got) >= length($head) + ($cl // 0))
					{
						$ok = $status == 200;
						last;
					}
				}
			}
		}
		printf $fh "%.3f %d\n", 1000 * (time - $start), $ok;
		if (!$ok)
		{
			close $s if $s;
			$s = undef;
		}
		my $wait = $next - time;
		sleep($wait) if $wait > 0;
	}
	close $fh;
	POSIX::_exit(0);
}

sub stop_prober
{
	my ($p) = @_;
	open(my $fh, '>', $p->{stop});
	close $fh;
	waitpid($p->{pid}, 0);
	open($fh, '<', $p->{out}) or return (0, 0, 0, 0);
	my (@lat, $fail);
	while (<$fh>)
	{
		my ($ms, $ok) = split;
		push @lat, $ms;
		$fail++ if !$ok;
	}
	@lat = sort { $a <=> $b } @lat;
	return (0, 0, 0, 0) if !@lat;
	my $p99 = $lat[ int(0.99 * $#lat) ];
	return (scalar @lat, $fail // 0, $p99, $lat[-1]);
}

# Runs $flood->() with a prober; the prober starts early enough to have a
# baseline and goes on 1 s after the flood.
sub with_prober
{
	my ($name, $flood) = @_;
	my $p = start_prober($name);
	sleep 0.3;
	$flood->();
	sleep 0.3;
	my ($n, $fail, $p99, $max) = stop_prober($p);
	my $load = `cat /proc/loadavg`;
	chomp $load;
	diag(sprintf('%s: /healthz on another connection: %d probes, %d failed, p99 %.1f ms, max %.1f ms (load average %s)',
		$name, $n, $fail, $p99, $max, $load));
	cmp_ok($n, '>=', 50, "$name: the prober ran");
	is($fail, 0, "$name: every /healthz probe got 200");
	cmp_ok($p99, '<', 50, "$name: /healthz p99 under 50 ms on another connection");
}

# Both floods are sustained for FLOOD_SECONDS the way an attacker would:
# each time the server cuts a connection, a new one takes over; every
# connection must be cut the same way.
my $FLOOD_SECONDS = 3;

# One rapid-reset connection: up to 10,000 streams opened and cancelled at
# once.  Returns (streams sent, GOAWAY code or undef, closed).
sub rapid_reset_once
{
	my $c = h2_conn();
	my $opened = 0;
	my $block = H2Raw::request_block('GET', '/healthz');
	for my $batch (0 .. 19)
	{
		my $bytes = '';
		for my $i (0 .. 499)
		{
			my $id = 1 + 2 * ($batch * 500 + $i);
			$bytes .= H2Raw::frame($H2Raw::TYPE{HEADERS}, H2Raw::END_STREAM | H2Raw::END_HEADERS, $id, $block)
			  . H2Raw::frame($H2Raw::TYPE{RST_STREAM}, 0, $id, pack('N', H2Raw::CANCEL));
		}
		last if !$c->send_raw($bytes, time + 30);
		$opened += 500;
		last if $c->{goaway};
	}
	$c->wait_until(sub { $_[0]->{goaway} }, 10);
	my $closed = $c->wait_closed(10);
	my $code = $c->{goaway} ? $c->{goaway}{code} : undef;
	$c->close;
	return ($opened, $code, $closed);
}

# One CONTINUATION-flood connection: a HEADERS frame without END_HEADERS,
# then 16 KB CONTINUATION frames without end, up to 64 MB.  Returns (MB
# sent, GOAWAY code or undef, closed or write failed).
my $cont_frames = join('', map {
	H2Raw::frame($H2Raw::TYPE{CONTINUATION}, 0, 1,
		H2Raw::hpack_literal(sprintf('x-flood-%06d', $_), 'b' x 16300)) } 1 .. 64);
sub continuation_once
{
	my ($peak) = @_;
	my $c = h2_conn();
	$c->headers(1, H2Raw::request_block('POST', '/v1/ingest', @auth,
		'content-type' => 'application/json', 'content-length' => 10), end_stream => 0,
		end_headers => 0);
	my $end = time + 60;
	for (my $i = 0; $i < 64 && time < $end; $i++)    # 64 x 64 x 16 KB = 64 MB
	{
		last if !$c->send_raw($cont_frames, $end) || $c->{goaway} || $c->{closed};
		my $a = worker_anon_kb();
		$$peak = $a if $a > $$peak;
	}
	$c->wait_until(sub { $_[0]->{goaway} }, 5);
	my $closed = $c->wait_closed(5) || $c->{write_error};
	my $code = $c->{goaway} ? $c->{goaway}{code} : undef;
	my $mb = $c->{bytes_sent} / (1024 * 1024);
	$c->close;
	return ($mb, $code, $closed);
}

with_prober('rapid reset', sub {
	my ($conns, $streams, $calm, $closed, %codes) = (0, 0, 0, 0);
	my $t0 = time;
	do
	{
		my ($opened, $code, $cl) = rapid_reset_once();
		$conns++;
		$streams += $opened;
		$calm++ if defined $code && $code == H2Raw::ENHANCE_YOUR_CALM;
		$closed++ if $cl;
		$codes{ $code // 'none' }++;
	} while (time < $t0 + $FLOOD_SECONDS && $conns < 500);
	diag(sprintf('rapid reset: %d connections, %d streams opened and cancelled in %.2f s; GOAWAY codes: %s; %d closed',
		$conns, $streams, time - $t0, join(', ', map { "$_ x $codes{$_}" } sort keys %codes), $closed));
	is($calm, $conns, 'rapid reset: every connection got GOAWAY ENHANCE_YOUR_CALM');
	is($closed, $conns, 'rapid reset: every connection is closed');
});
still_alive('rapid reset');

with_prober('CONTINUATION flood', sub {
	my $anon0 = worker_anon_kb();
	my $peak = $anon0;
	my ($conns, $goaway, $closed, $mb_max, $mb, %codes) = (0, 0, 0, 0, 0);
	my $t0 = time;
	do
	{
		my ($sent, $code, $cl) = continuation_once(\$peak);
		$conns++;
		$mb += $sent;
		$mb_max = $sent if $sent > $mb_max;
		$goaway++ if defined $code;
		$closed++ if $cl;
		$codes{ $code // 'none' }++;
	} while (time < $t0 + $FLOOD_SECONDS && $conns < 500);
	my $a = worker_anon_kb();
	$peak = $a if $a > $peak;
	diag(sprintf('CONTINUATION flood: %d connections, %.1f MB sent in %.2f s (at most %.1f MB on one); GOAWAY codes: %s; %d closed; worker RssAnon %d -> peak %d kB',
		$conns, $mb, time - $t0, $mb_max, join(', ', map { "$_ x $codes{$_}" } sort keys %codes),
		$closed, $anon0, $peak));
	is($goaway, $conns, 'CONTINUATION flood: every connection got GOAWAY');
	is($closed, $conns, 'CONTINUATION flood: every connection is closed');
	cmp_ok($mb_max, '<', 60, 'CONTINUATION flood: each cut before 64 MB were taken');
	cmp_ok($peak - $anon0, '<', 16 * 1024, 'CONTINUATION flood: worker memory grew by less than 16 MB');
});
still_alive('CONTINUATION flood');

is(stored_rows(), 15, 'no rows from any of the abuse');

# ---- timeouts per stream ------------------------------------------------
# A stream whose body stalls for http_idle_timeout is answered 408 (then
# reset, its body unread); one whose head does not complete within
# http_header_timeout is reset with CANCEL.  Other streams on the same
# connection are served meanwhile and after.

$node->append_conf('postgresql.conf', "machpay.http_header_timeout = 1s\nmachpay.http_idle_timeout = 2s\n");
$node->reload;
{
	# The worker applies a reload at its next loop turn.
	my $end = time + 20;
	my $cut;
	while (!$cut && time < $end)
	{
		my $p = h2_conn();
		$p->headers(1, H2Raw::request_block('GET', '/healthz'), end_stream => 0, end_headers => 0);
		$cut = $p->wait_until(sub { defined(($_[0]->stream(1) // {})->{rst}) }, 5);
		$p->close;
	}
	ok($cut, 'the shorter timeouts are applied on reload');
}

$c = h2_conn();
$c->headers(1, H2Raw::request_block('POST', '/v1/ingest', @auth, 'content-type' => 'application/json',
	'content-length' => 1000), end_stream => 0);
$c->data_flow(1, '[{"source"', 0);
$body = json_array(gateway_event($GATEWAY_ID, int(time) - 1200));
$c->request(3, 'POST', '/v1/ingest', [@auth, 'content-type' => 'application/json',
	'content-length' => length($body)], $body);
$st = $c->wait_stream_done(3, 10);
is($st && $st->{status}, '202', 'beside a stalled body, another stream is served');
$st = $c->wait_until(sub { my $s = $_[0]->stream(1); $s && defined $s->{rst} ? $s : undef }, 20);
is($st && $st->{status}, '408', 'a stream whose body stalls: 408');
is(json_error($st && $st->{body}), 'request_timeout', '408: error code request_timeout');
ok($st && $st->{end_stream}, '408: a complete answer (END_STREAM)');
is($st && $st->{rst}, H2Raw::NO_ERROR, '408: then RST_STREAM NO_ERROR');
$body = json_array(gateway_event($GATEWAY_ID, int(time) - 1500));
$c->request(5, 'POST', '/v1/ingest', [@auth, 'content-type' => 'application/json',
	'content-length' => length($body)], $body);
$st = $c->wait_stream_done(5, 10);
is($st && $st->{status}, '202', 'after the 408, the connection serves the next stream');
ok(!$c->{goaway}, 'no GOAWAY on that connection');
$c->close;

$c = h2_conn();
$c->headers(1, H2Raw::request_block('POST', '/v1/ingest', @auth), end_stream => 0, end_headers => 0);
$st = $c->wait_until(sub { my $s = $_[0]->stream(1); $s && defined $s->{rst} ? $s : undef }, 20);
is($st && $st->{rst}, H2Raw::CANCEL, 'a stream whose head never completes: RST_STREAM CANCEL');
ok(!defined($st && $st->{status}), 'no answer for a request that never was');
$c->close;

is(stored_rows(), 21, 'the streams served beside the timeouts stored their rows');
still_alive('timeouts');
$node->stop;
done_testing();
