# CdpClient: just enough of the Chrome DevTools protocol (over a WebSocket,
# with core Perl only) for the console page test: evaluate JavaScript in a
# page and take a screenshot.
#
#   my $cdp = CdpClient->connect($debug_port, qr/page url/);
#   my $v = $cdp->eval('document.title');
#   $cdp->screenshot('/path/shot.png');
package CdpClient;

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use JSON::PP;
use MIME::Base64;
use Time::HiRes qw(time);

sub _http_get
{
	my ($port, $path) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5)
	  or return undef;
	print $s "GET $path HTTP/1.1\r\nHost: 127.0.0.1:$port\r\n\r\n";
	# The DevTools server keeps the connection open: read by Content-Length.
	my $r = '';
	my $sel = IO::Select->new($s);
	my $deadline = time() + 5;
	while (time() < $deadline && $sel->can_read(1))
	{
		sysread($s, my $b, 65536) or last;
		$r .= $b;
		if ($r =~ /\r\n\r\n/ && $r =~ /content-length:\s*(\d+)/i)
		{
			my $len = $1;
			my $body_at = index($r, "\r\n\r\n") + 4;
			last if length($r) - $body_at >= $len;
		}
	}
	close $s;
	return undef unless $r =~ /\r\n\r\n(.*)$/s;
	return $1;
}

# Waits for a page target whose url matches $url_re and opens its socket.
sub connect
{
	my ($class, $port, $url_re, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	my $ws;
	while (time() < $deadline)
	{
		my $body = _http_get($port, '/json/list');
		if ($body)
		{
			my $list = eval { decode_json($body) } || [];
			for my $t (@$list)
			{
				next unless ($t->{type} // '') eq 'page' && ($t->{url} // '') =~ $url_re;
				$ws = $t->{webSocketDebuggerUrl};
				last;
			}
		}
		last if $ws;
		select(undef, undef, undef, 0.2);
	}
	die "no DevTools page target matching $url_re" unless $ws;
	my ($host, $wport, $path) = $ws =~ m{^ws://([^:/]+):(\d+)(/.*)$} or die "bad ws url $ws";
	my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $wport, Timeout => 5)
	  or die "ws connect: $!";
	my $key = encode_base64(join('', map { chr(int(rand(256))) } 1 .. 16), '');
	print $s "GET $path HTTP/1.1\r\nHost: $host:$wport\r\nUpgrade: websocket\r\n"
	  . "Connection: Upgrade\r\nSec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n\r\n";
	my $head = '';
	while ($head !~ /\r\n\r\n/)
	{
		sysread($s, my $b, 1) or die "ws handshake: EOF";
		$head .= $b;
	}
	die "ws handshake refused: $head" unless $head =~ m{^HTTP/1\.1 101};
	return bless { sock => $s, id => 0, buf => '' }, $class;
}

sub _send
{
	my ($self, $text) = @_;
	my $len = length($text);
	my $hdr = chr(0x81);
	if ($len < 126) { $hdr .= chr(0x80 | $len); }
	elsif ($len < 65536) { $hdr .= chr(0x80 | 126) . pack('n', $len); }
	else { $hdr .= chr(0x80 | 127) . pack('Q>', $len); }
	my $mask = join('', map { chr(int(rand(256))) } 1 .. 4);
	my $masked = $text ^ (substr($mask x (int($len / 4) + 1), 0, $len));
	my $s = $self->{sock};
	print $s $hdr . $mask . $masked;
}

sub _need
{
	my ($self, $n, $deadline) = @_;
	my $sel = IO::Select->new($self->{sock});
	while (length($self->{buf}) < $n)
	{
		die "DevTools: timeout" if time() > $deadline;
		next unless $sel->can_read(0.5);
		my $r = sysread($self->{sock}, my $b, 1 << 20);
		die "DevTools: connection closed" unless $r;
		$self->{buf} .= $b;
	}
	my $out = substr($self->{buf}, 0, $n);
	$self->{buf} = substr($self->{buf}, $n);
	return $out;
}

sub _recv
{
	my ($self, $deadline) = @_;
	my $msg = '';
	while (1)
	{
		my ($b0, $b1) = unpack('CC', $self->_need(2, $deadline));
		my $len = $b1 & 0x7f;
		$len = unpack('n', $self->_need(2, $deadline)) if $len == 126;
		$len = unpack('Q>', $self->_need(8, $deadline)) if $len == 127;
		my $payload = $len ? $self->_need($len, $deadline) : '';
		my $op = $b0 & 0x0f;
		next if $op == 9 || $op == 10;    # ping/pong
		$msg .= $payload;
		return $msg if $b0 & 0x80;
	}
}

# Sends a command and returns its result (events in between are skipped).
sub call
{
	my ($self, $method, $params, $timeout) = @_;
	my $id = ++$self->{id};
	$self->_send(encode_json({ id => $id, method => $method, params => $params // {} }));
	my $deadline = time() + ($timeout // 30);
	while (1)
	{
		my $m = decode_json($self->_recv($deadline));
		next unless defined $m->{id} && $m->{id} == $id;
		die "DevTools $method: $m->{error}{message}" if $m->{error};
		return $m->{result};
	}
}

sub eval
{
	my ($self, $expr) = @_;
	my $r = $self->call('Runtime.evaluate', { expression => $expr, returnByValue => JSON::PP::true });
	return $r->{result}{value};
}

sub screenshot
{
	my ($self, $file) = @_;
	my $r = $self->call('Page.captureScreenshot', { format => 'png' });
	open(my $fh, '>:raw', $file) or die "$file: $!";
	print $fh decode_base64($r->{data});
	close $fh;
	return -s $file;
}

1;
