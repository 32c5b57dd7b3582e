# SseTest: a raw-socket Server-Sent-Events client for the SSE relay tests.
#
# sse_open() sends one HTTP/1.1 GET and returns a client; $c->read_until(qr//)
# reads (and de-chunks) until the decoded body matches; $c->events() parses
# the body into events ({id, event, data}); $c->{status}, $c->{headers}.
# sse_node() gives a cluster where only the relay serves, with a loaded
# console key 'console-token'.
package SseTest;

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(time);
use Exporter 'import';
use Test::More;
use MachpayTest;

our @EXPORT = qw(sse_open sse_wait_ready sse_add_key sse_node);

# sse_node($name): no ingest port, no scheduled jobs, key 'console-token'.
sub sse_node
{
	my ($name) = @_;
	my $node = machpay_node($name, conf => <<'EOC');
machpay.port = 0
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
EOC
	sse_add_key($node, 'console-token', 'console');
	ok(sse_wait_ready($node, 'console-token'), 'relay ready');
	return $node;
}

# sse_open($port, $path, headers => {..}, rcvbuf => bytes)
sub sse_open
{
	my ($port, $path, %opts) = @_;
	my $sock;
	if ($opts{rcvbuf})
	{
		# A small receive buffer, set before connecting: a slow reader.
		$sock = IO::Socket::INET->new(Proto => 'tcp') or die "socket: $!";
		setsockopt($sock, SOL_SOCKET, SO_RCVBUF, pack('i', $opts{rcvbuf}));
		$sock->connect(Socket::pack_sockaddr_in($port, Socket::inet_aton('127.0.0.1')))
		  or die "connect: $!";
	}
	else
	{
		$sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
			Proto => 'tcp', Timeout => 10) or die "connect: $!";
	}
	$sock->autoflush(1);
	my $req = "GET $path HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nAccept: text/event-stream\r\n";
	my $h = $opts{headers} || {};
	$req .= "$_: $h->{$_}\r\n" for sort keys %$h;
	$req .= "\r\n";
	print $sock $req;
	my $c = bless { sock => $sock, raw => '', body => '', status => undef,
		headers => {}, eof => 0, chunked => 0 }, 'SseTest';
	return $c;
}

sub _parse
{
	my ($c) = @_;
	if (!defined $c->{status})
	{
		my $end = index($c->{raw}, "\r\n\r\n");
		return if $end < 0;
		my $head = substr($c->{raw}, 0, $end);
		$c->{raw} = substr($c->{raw}, $end + 4);
		my @lines = split /\r\n/, $head;
		my $sl = shift @lines;
		($c->{status}) = $sl =~ m{^HTTP/1\.\d (\d+)};
		for (@lines)
		{
			my ($k, $v) = /^([^:]+):\s*(.*)$/ or next;
			$c->{headers}{ lc $k } = $v;
		}
		$c->{chunked} = (($c->{headers}{'transfer-encoding'} // '') =~ /chunked/i);
	}
	if (!$c->{chunked})
	{
		$c->{body} .= $c->{raw};
		$c->{raw} = '';
		return;
	}
	while ($c->{raw} =~ /^([0-9a-fA-F]+)\r\n/)
	{
		my $len = hex($1);
		my $hl = length($1) + 2;
		last if length($c->{raw}) < $hl + $len + 2;
		$c->{body} .= substr($c->{raw}, $hl, $len);
		$c->{raw} = substr($c->{raw}, $hl + $len + 2);
		$c->{ended} = 1 if $len == 0;
	}
}

# Reads what is available within $timeout seconds: true when bytes were
# read, false on timeout or at EOF ($c->{eof} tells which).
sub read_some
{
	my ($c, $timeout) = @_;
	return 0 if $c->{eof};
	my $sel = IO::Select->new($c->{sock});
	return 0 unless $sel->can_read($timeout);
	my $n = sysread($c->{sock}, my $buf, 262144);
	if (!$n)
	{
		$c->{eof} = 1;
		return 0;
	}
	$c->{raw} .= $buf;
	$c->_parse;
	return 1;
}

# Reads until the server closes the connection; true if it did within
# $timeout seconds.
sub read_to_eof
{
	my ($c, $timeout) = @_;
	my $deadline = time() + $timeout;
	$c->read_some(0.2) while !$c->{eof} && time() < $deadline;
	return $c->{eof};
}

# Reads until the decoded body matches $re (or EOF / timeout); returns the
# match.  Only the text that arrived since the last call is searched (plus
# some overlap), so reading a long stream stays linear.
sub read_until
{
	my ($c, $re, $timeout) = @_;
	my $deadline = time() + ($timeout // 10);
	my $from = $c->{scanned} // 0;
	while (1)
	{
		if (defined $c->{status})
		{
			my $start = $from > 65536 ? $from - 65536 : 0;
			if (substr($c->{body}, $start) =~ $re)
			{
				$c->{scanned} = length($c->{body});
				return 1;
			}
			$from = length($c->{body});
		}
		last if time() >= $deadline || $c->{eof};
		$c->read_some(0.2);
	}
	return 0;
}

# Reads the status line and headers, and the body of a non-streaming reply.
sub response
{
	my ($c, $timeout) = @_;
	my $deadline = time() + ($timeout // 10);
	while (time() < $deadline && !$c->{eof})
	{
		last if defined $c->{status} && ($c->{headers}{'content-type'} // '') =~ /event-stream/;
		last if defined $c->{status} && defined $c->{headers}{'content-length'}
		  && length($c->{body}) >= $c->{headers}{'content-length'};
		last if $c->{ended};
		$c->read_some(0.2);
	}
	return $c->{status};
}

sub events
{
	my ($c) = @_;
	my @ev;
	for my $block (split /\n\n/, $c->{body})
	{
		my %e;
		for my $line (split /\n/, $block)
		{
			next if $line =~ /^:/;
			my ($k, $v) = $line =~ /^([^:]+): ?(.*)$/ or next;
			if ($k eq 'data') { $e{data} = defined $e{data} ? "$e{data}\n$v" : $v; }
			else { $e{$k} = $v; }
		}
		push @ev, \%e if exists $e{data} || exists $e{event};
	}
	return @ev;
}

sub disconnect
{
	my ($c) = @_;
	CORE::close($c->{sock});
}

# A console (or ingest) key stored the way create_ingest_key stores it.
sub sse_add_key
{
	my ($node, $token, $role, $entity) = @_;
	$entity //= '*';
	$node->safe_psql('postgres', qq{
		INSERT INTO machpay.ingest_keys (token_sha256, entity_id, role)
		VALUES (sha256('$token'::bytea), '$entity', '$role')});
}

# Waits until the relay accepts $token (keys read, LISTEN done).
sub sse_wait_ready
{
	my ($node, $token) = @_;
	my $port = $node->{machpay_sse_port};
	for (1 .. 100)
	{
		my $c = eval { sse_open($port, "/v1/stream?access_token=$token") };
		if ($c)
		{
			my $st = $c->response(2) // 0;
			$c->disconnect;
			return sse_wait_listening($node) if $st == 200;
		}
		select(undef, undef, undef, 0.2);
	}
	return 0;
}

# The relay serves streams once it has read the keys, which can be before its
# LISTEN connection is up; what is published before that never reaches it.
# Ready for a test means both.
sub sse_wait_listening
{
	my ($node) = @_;
	return $node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		WHERE application_name = 'machpay_sse_listener' AND state = 'idle'
		  AND (query LIKE 'LISTEN %' OR query LIKE '%machpay.payment_intents%')});
}

1;
