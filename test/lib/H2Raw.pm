# H2Raw: a minimal HTTP/2 client that speaks raw frames, for the tests
# that must send what no well-behaved client sends (floods, cancelled
# streams, endless CONTINUATION, a zero window).
#
# Cleartext with prior knowledge only.  Requests are HPACK-encoded by hand
# as literal header fields without indexing and without Huffman coding;
# answers are decoded with the static table only, so the client announces
# SETTINGS_HEADER_TABLE_SIZE = 0 and the server may not keep a dynamic
# table.  Huffman-coded strings are decoded for printable ASCII, which is
# all a status and the usual header values use.  Every read and write is
# non-blocking and bounded by a deadline; a write that cannot proceed reads
# what the server sent meanwhile, so neither side blocks the other.
package H2Raw;

use strict;
use warnings;
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use IO::Select;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP SOL_SOCKET SO_RCVBUF TCP_NODELAY);
use Time::HiRes qw(time);

# Frame types and flags (RFC 9113 §6).
our %TYPE = (DATA => 0, HEADERS => 1, PRIORITY => 2, RST_STREAM => 3,
	SETTINGS => 4, PUSH_PROMISE => 5, PING => 6, GOAWAY => 7,
	WINDOW_UPDATE => 8, CONTINUATION => 9);
our %TYPE_NAME = reverse %TYPE;
use constant { END_STREAM => 0x1, ACK => 0x1, END_HEADERS => 0x4,
	PADDED => 0x8, PRIORITY_FLAG => 0x20 };
# Settings identifiers and error codes used by the tests.
use constant { HEADER_TABLE_SIZE => 1, ENABLE_PUSH => 2,
	MAX_CONCURRENT_STREAMS => 3, INITIAL_WINDOW_SIZE => 4,
	MAX_FRAME_SIZE => 5, MAX_HEADER_LIST_SIZE => 6 };
use constant { NO_ERROR => 0, PROTOCOL_ERROR => 1, FLOW_CONTROL_ERROR => 3,
	STREAM_CLOSED => 5, FRAME_SIZE_ERROR => 6, REFUSED_STREAM => 7, CANCEL => 8,
	ENHANCE_YOUR_CALM => 0xb };

my $PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

# H2Raw->new($port, settings => { id => value, ... }, rcvbuf => bytes,
#   preface => 0 to send nothing yet)
sub new
{
	my ($class, $port, %o) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp', Blocking => 1) or die "connect to $port: $!";
	# A small receive buffer makes a client that does not read show at once.
	setsockopt($s, SOL_SOCKET, SO_RCVBUF, pack('i', $o{rcvbuf})) if $o{rcvbuf};
	# Frames go out as written: Nagle would hold a small frame behind an
	# unacknowledged one for the peer's delayed ACK (40 ms).
	setsockopt($s, IPPROTO_TCP, TCP_NODELAY, pack('i', 1));
	$s->blocking(0);
	binmode $s;
	my $self = bless { sock => $s, in => '', frames => [], closed => 0,
		no_auto_ack => $o{no_auto_ack}, data_sent => {},
		write_error => undef, server_settings => {}, goaway => undef,
		bytes_sent => 0 }, $class;
	if ($o{preface} // 1)
	{
		my %set = (HEADER_TABLE_SIZE, 0, ENABLE_PUSH, 0, %{ $o{settings} // {} });
		$self->send_raw($PREFACE . settings_frame(%set));
	}
	return $self;
}

# ---- encoding -------------------------------------------------------

sub frame
{
	my ($type, $flags, $stream, $payload) = @_;
	$payload //= '';
	my $len = length $payload;
	return pack('CnCCN', $len >> 16, $len & 0xffff, $type, $flags,
		$stream & 0x7fffffff) . $payload;
}

sub settings_frame
{
	my (%set) = @_;
	return frame($TYPE{SETTINGS}, 0, 0,
		join('', map { pack('nN', $_, $set{$_}) } sort { $a <=> $b } keys %set));
}

# HPACK integer with an N-bit prefix (RFC 7541 §5.1); $first holds the
# pattern bits above the prefix.
sub hpack_int
{
	my ($n, $bits, $first) = @_;
	my $max = (1 << $bits) - 1;
	return chr($first | $n) if $n < $max;
	my $out = chr($first | $max);
	$n -= $max;
	while ($n >= 128)
	{
		$out .= chr(($n & 0x7f) | 0x80);
		$n >>= 7;
	}
	return $out . chr($n);
}

sub hpack_string
{
	my ($s) = @_;
	return hpack_int(length $s, 7, 0) . $s;
}

# Literal header field without indexing, new name, no Huffman (§6.2.2).
sub hpack_literal
{
	my ($name, $value) = @_;
	return "\x00" . hpack_string($name) . hpack_string($value);
}

# A header block from [name => value, ...] in order.
sub header_block
{
	my (@h) = @_;
	my $out = '';
	while (@h)
	{
		my ($n, $v) = splice(@h, 0, 2);
		$out .= hpack_literal($n, $v);
	}
	return $out;
}

# The pseudo-headers of a request, then the others.
sub request_block
{
	my ($method, $path, @h) = @_;
	return header_block(':method' => $method, ':scheme' => 'http',
		':authority' => '127.0.0.1', ':path' => $path, @h);
}

# ---- sending --------------------------------------------------------

# Writes all of $bytes, reading whatever the server sends meanwhile.
# Returns 1, or 0 when the connection failed or $deadline passed.
sub send_raw
{
	my ($self, $bytes, $deadline) = @_;
	$deadline //= time + 30;
	my $off = 0;
	my $sel = IO::Select->new($self->{sock});
	while ($off < length $bytes)
	{
		return 0 if $self->{write_error} || $self->{closed};
		my $n = syswrite($self->{sock}, $bytes, length($bytes) - $off, $off);
		if (defined $n)
		{
			$off += $n;
			$self->{bytes_sent} += $n;
			next;
		}
		if ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR)
		{
			$self->{write_error} = "$!";
			return 0;
		}
		return 0 if time >= $deadline;
		my ($r, $w) = IO::Select->select($sel, $sel, undef, 0.05);
		$self->_read_some if $r && @$r;
	}
	return 1;
}

# Like send_raw but never reads: a client that does not read its answers.
sub send_noread
{
	my ($self, $bytes, $deadline) = @_;
	my $off = 0;
	my $sel = IO::Select->new($self->{sock});
	while ($off < length $bytes)
	{
		my $n = syswrite($self->{sock}, $bytes, length($bytes) - $off, $off);
		if (defined $n)
		{
			$off += $n;
			$self->{bytes_sent} += $n;
			next;
		}
		if ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR)
		{
			$self->{write_error} = "$!";
			return 0;
		}
		return 0 if time >= $deadline;
		$sel->can_write(0.05);
	}
	return 1;
}

sub send_frame
{
	my ($self, @f) = @_;
	return $self->send_raw(frame(@f));
}

sub settings
{
	my ($self, %set) = @_;
	return $self->send_raw(settings_frame(%set));
}

sub settings_ack { $_[0]->send_frame($TYPE{SETTINGS}, ACK, 0, '') }

# headers($stream, $block, end_stream => 0/1, end_headers => 0/1)
sub headers
{
	my ($self, $stream, $block, %o) = @_;
	my $flags = (($o{end_stream} // 0) ? END_STREAM : 0)
	  | (($o{end_headers} // 1) ? END_HEADERS : 0);
	return $self->send_frame($TYPE{HEADERS}, $flags, $stream, $block);
}

sub continuation
{
	my ($self, $stream, $block, $end_headers) = @_;
	return $self->send_frame($TYPE{CONTINUATION}, $end_headers ? END_HEADERS : 0,
		$stream, $block);
}

sub data
{
	my ($self, $stream, $payload, $end_stream) = @_;
	$self->{data_sent}{$stream} += length $payload;
	return $self->send_frame($TYPE{DATA}, $end_stream ? END_STREAM : 0, $stream, $payload);
}

# What the stream's flow-control window lets us send now: the server's
# initial window (65535 until its SETTINGS came, or while we do not
# acknowledge them: the server applies them from our ACK), its
# WINDOW_UPDATEs, less what we sent.
sub send_window
{
	my ($self, $stream) = @_;
	my $init = $self->{settings_seen} && !$self->{no_auto_ack}
	  ? $self->{server_settings}{ INITIAL_WINDOW_SIZE() } // 65535 : 65535;
	return $init + ($self->{window_updates}{$stream} // 0) - ($self->{data_sent}{$stream} // 0);
}

# DATA as a well-behaved client sends it: in frames of at most 16 kB
# within the stream's window, waiting (up to $timeout s) for the window to
# open.  Returns 1 once all is sent.
sub data_flow
{
	my ($self, $stream, $payload, $end_stream, $timeout) = @_;
	my $end = time + ($timeout // 10);
	my $off = 0;
	do
	{
		my $win = $self->wait_until(sub { my $w = $_[0]->send_window($stream); $w > 0 ? $w : 0 },
			$end - time);
		return 0 if !$win;
		my $k = length($payload) - $off;
		$k = $win if $k > $win;
		$k = 16384 if $k > 16384;
		my $last = $off + $k == length $payload;
		$self->data($stream, substr($payload, $off, $k), $end_stream && $last) or return 0;
		$off += $k;
	} while ($off < length $payload);
	$self->data($stream, '', 1) if $end_stream && length($payload) == 0;
	return 1;
}

sub rst_stream
{
	my ($self, $stream, $code) = @_;
	return $self->send_frame($TYPE{RST_STREAM}, 0, $stream, pack('N', $code // CANCEL));
}

sub ping
{
	my ($self, $opaque) = @_;
	return $self->send_frame($TYPE{PING}, 0, 0, substr(($opaque // '') . "\0" x 8, 0, 8));
}

sub window_update
{
	my ($self, $stream, $inc) = @_;
	return $self->send_frame($TYPE{WINDOW_UPDATE}, 0, $stream, pack('N', $inc));
}

# A whole request: HEADERS (+ DATA) with END_STREAM where it ends.
sub request
{
	my ($self, $stream, $method, $path, $headers, $body) = @_;
	my $block = request_block($method, $path, @{ $headers // [] });
	return $self->headers($stream, $block, end_stream => !defined $body)
	  && (!defined $body || $self->data_flow($stream, $body, 1));
}

# ---- receiving ------------------------------------------------------

sub _read_some
{
	my ($self) = @_;
	return 0 if $self->{closed};
	my $got = 0;
	while (1)
	{
		my $n = sysread($self->{sock}, my $buf, 262144);
		if (!defined $n)
		{
			last if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
			$self->{closed} = "read: $!";
			last;
		}
		if ($n == 0)
		{
			$self->{closed} = 'eof';
			last;
		}
		$self->{in} .= $buf;
		$got += $n;
	}
	$self->_parse;
	return $got;
}

sub _parse
{
	my ($self) = @_;
	while (length $self->{in} >= 9)
	{
		my ($l1, $l2, $type, $flags, $stream) = unpack('CnCCN', $self->{in});
		my $len = ($l1 << 16) | $l2;
		last if length $self->{in} < 9 + $len;
		my $payload = substr($self->{in}, 9, $len);
		substr($self->{in}, 0, 9 + $len) = '';
		my $f = { type => $type, name => $TYPE_NAME{$type} // "type$type",
			flags => $flags, stream => $stream & 0x7fffffff, payload => $payload };
		$self->_note($f);
		push @{ $self->{frames} }, $f;
	}
}

# Bookkeeping every frame gets: settings, GOAWAY, ACKs to keep the
# connection healthy (SETTINGS ACK only; PINGs are the tests' business).
sub _note
{
	my ($self, $f) = @_;
	if ($f->{type} == $TYPE{SETTINGS} && !($f->{flags} & ACK))
	{
		my $p = $f->{payload};
		while (length $p >= 6)
		{
			my ($id, $v) = unpack('nN', $p);
			$self->{server_settings}{$id} = $v;
			$p = substr($p, 6);
		}
		$self->{settings_seen}++;
		$self->{pending_out} .= frame($TYPE{SETTINGS}, ACK, 0, '') unless $self->{no_auto_ack};
	}
	elsif ($f->{type} == $TYPE{GOAWAY})
	{
		my ($last, $code) = unpack('NN', $f->{payload});
		$self->{goaway} = { last_stream => $last & 0x7fffffff, code => $code,
			debug => length($f->{payload}) > 8 ? substr($f->{payload}, 8) : '' };
	}
	elsif ($f->{type} == $TYPE{HEADERS} || $f->{type} == $TYPE{CONTINUATION})
	{
		my $st = ($self->{streams}{ $f->{stream} } //= { block => '', body => '' });
		my $block = $f->{payload};
		if ($f->{type} == $TYPE{HEADERS})
		{
			my $pad = 0;
			if ($f->{flags} & PADDED)
			{
				$pad = ord($block);
				$block = substr($block, 1);
			}
			$block = substr($block, 5) if $f->{flags} & PRIORITY_FLAG;
			$block = substr($block, 0, length($block) - $pad);
		}
		$st->{block} .= $block;
		$st->{end_stream} = 1 if $f->{flags} & END_STREAM;
		if ($f->{flags} & END_HEADERS)
		{
			my $h = hpack_decode($st->{block});
			$st->{block} = '';
			push @{ $st->{header_sets} }, $h;
			$st->{status} //= $h->{':status'} if $h;
			$st->{headers} //= $h;
		}
	}
	elsif ($f->{type} == $TYPE{DATA})
	{
		my $st = ($self->{streams}{ $f->{stream} } //= { block => '', body => '' });
		my $p = $f->{payload};
		if ($f->{flags} & PADDED)
		{
			my $pad = ord($p);
			$p = substr($p, 1, length($p) - 1 - $pad);
		}
		$st->{body} .= $p;
		$st->{end_stream} = 1 if $f->{flags} & END_STREAM;
	}
	elsif ($f->{type} == $TYPE{RST_STREAM})
	{
		my $st = ($self->{streams}{ $f->{stream} } //= { block => '', body => '' });
		$st->{rst} = unpack('N', $f->{payload});
	}
	elsif ($f->{type} == $TYPE{WINDOW_UPDATE})
	{
		$self->{window_updates}{ $f->{stream} } += unpack('N', $f->{payload}) & 0x7fffffff;
	}
}

# Reads until $cond->($self) is true, the connection closed or the deadline
# (seconds from now) passed.  Returns the condition's last value.
sub wait_until
{
	my ($self, $cond, $timeout) = @_;
	my $end = time + ($timeout // 10);
	my $sel = IO::Select->new($self->{sock});
	while (1)
	{
		$self->_flush_pending;
		my $v = $cond->($self);
		return $v if $v || $self->{closed};
		my $left = $end - time;
		return $v if $left <= 0;
		$self->_read_some if $sel->can_read($left < 0.05 ? $left : 0.05);
	}
}

sub _flush_pending
{
	my ($self) = @_;
	return if !$self->{pending_out} || $self->{closed} || $self->{write_error};
	my $out = $self->{pending_out};
	$self->{pending_out} = '';
	$self->send_raw($out, time + 5);
}

# Reads what is there now, without waiting.
sub poll
{
	my ($self) = @_;
	$self->_read_some;
	$self->_flush_pending;
}

sub stream { $_[0]->{streams}{ $_[1] } }

# The stream answered with END_STREAM, was reset, or the connection ended.
sub wait_stream_done
{
	my ($self, $id, $timeout) = @_;
	return $self->wait_until(sub {
		my $st = $_[0]->{streams}{$id};
		$st && ($st->{end_stream} || defined $st->{rst}) ? $st : undef;
	}, $timeout);
}

# Waits for the server to close the connection (EOF or reset); returns
# true when it did before the deadline.
sub wait_closed
{
	my ($self, $timeout) = @_;
	$self->wait_until(sub { 0 }, $timeout);
	return $self->{closed} ? 1 : 0;
}

# Sends a PING and waits for its ACK: everything the server sent before
# answering it has then been read.
sub ping_barrier
{
	my ($self, $timeout) = @_;
	my $opaque = pack('NN', int(rand(2**31)), int(rand(2**31)));
	$self->ping($opaque) or return 0;
	return $self->wait_until(sub {
		scalar grep { $_->{type} == $TYPE{PING} && ($_->{flags} & ACK)
			  && $_->{payload} eq $opaque } @{ $_[0]->{frames} };
	}, $timeout);
}

sub frames_of
{
	my ($self, $name, $stream) = @_;
	return grep { $_->{type} == $TYPE{$name}
		  && (!defined $stream || $_->{stream} == $stream) } @{ $self->{frames} };
}

sub close
{
	my ($self) = @_;
	close $self->{sock} if $self->{sock};
	$self->{sock} = undef;
}

# ---- HPACK decoding (static table only) -----------------------------

my @STATIC = (undef,
	[':authority', ''], [':method', 'GET'], [':method', 'POST'], [':path', '/'],
	[':path', '/index.html'], [':scheme', 'http'], [':scheme', 'https'],
	[':status', '200'], [':status', '204'], [':status', '206'], [':status', '304'],
	[':status', '400'], [':status', '404'], [':status', '500'],
	['accept-charset', ''], ['accept-encoding', 'gzip, deflate'], ['accept-language', ''],
	['accept-ranges', ''], ['accept', ''], ['access-control-allow-origin', ''],
	['age', ''], ['allow', ''], ['authorization', ''], ['cache-control', ''],
	['content-disposition', ''], ['content-encoding', ''], ['content-language', ''],
	['content-length', ''], ['content-location', ''], ['content-range', ''],
	['content-type', ''], ['cookie', ''], ['date', ''], ['etag', ''], ['expect', ''],
	['expires', ''], ['from', ''], ['host', ''], ['if-match', ''],
	['if-modified-since', ''], ['if-none-match', ''], ['if-range', ''],
	['if-unmodified-since', ''], ['last-modified', ''], ['link', ''], ['location', ''],
	['max-forwards', ''], ['proxy-authenticate', ''], ['proxy-authorization', ''],
	['range', ''], ['referer', ''], ['refresh', ''], ['retry-after', ''], ['server', ''],
	['set-cookie', ''], ['strict-transport-security', ''], ['transfer-encoding', ''],
	['user-agent', ''], ['vary', ''], ['via', ''], ['www-authenticate', '']);

# The Huffman code of RFC 7541 Appendix B is canonical: symbols sorted by
# code length, then by value, take consecutive codes.  Printable ASCII is
# listed here by length; anything else in an answer decodes to undef.
my @HUFF_BY_LENGTH = (
	[5, '012aceiost'],
	[6, ' %-./3456789=A_bdfghlmnpru'],
	[7, ':BCDEFGHIJKLMNOPQRSTUVWYjkqvwxyz'],
	[8, '&*,;XZ'],
	[10, '!"()?'],
	[11, "'+|"],
	[12, '#>'],
	[13, "\0\$\@[]~"],
	[14, '^}'],
	[15, '<`{'],
);
my %HUFF;
{
	my ($code, $len) = (0, 5);
	for my $row (@HUFF_BY_LENGTH)
	{
		my ($l, $chars) = @$row;
		$code <<= ($l - $len);
		$len = $l;
		for my $c (split //, $chars)
		{
			$HUFF{ sprintf('%0*b', $l, $code) } = $c;
			$code++;
		}
	}
}

sub huffman_decode
{
	my ($bytes) = @_;
	my $bits = unpack('B*', $bytes);
	my ($out, $cur) = ('', '');
	for my $b (split //, $bits)
	{
		$cur .= $b;
		if (exists $HUFF{$cur})
		{
			$out .= $HUFF{$cur};
			$cur = '';
		}
		elsif (length $cur > 15)
		{
			return undef;
		}
	}
	# Padding: at most 7 bits, all ones.
	return undef if length $cur > 7 || $cur =~ /0/;
	return $out;
}

sub _int
{
	my ($ref, $bits) = @_;
	my $max = (1 << $bits) - 1;
	my $n = ord(substr($$ref, 0, 1)) & $max;
	substr($$ref, 0, 1) = '';
	return $n if $n < $max;
	my $shift = 0;
	while (length $$ref)
	{
		my $b = ord(substr($$ref, 0, 1));
		substr($$ref, 0, 1) = '';
		$n += ($b & 0x7f) << $shift;
		$shift += 7;
		last if !($b & 0x80);
	}
	return $n;
}

sub _str
{
	my ($ref) = @_;
	my $huff = ord(substr($$ref, 0, 1)) & 0x80;
	my $len = _int($ref, 7);
	my $s = substr($$ref, 0, $len);
	substr($$ref, 0, $len) = '';
	return $huff ? huffman_decode($s) : $s;
}

# Returns { name => value } (lower-case names; repeated names joined with
# ", "), or undef when the block uses the dynamic table.
sub hpack_decode
{
	my ($block) = @_;
	my %h;
	while (length $block)
	{
		my $b = ord($block);
		my ($name, $value);
		if ($b & 0x80)
		{
			my $i = _int(\$block, 7);
			return undef if !$i || $i > $#STATIC;
			($name, $value) = @{ $STATIC[$i] };
		}
		elsif (($b & 0xe0) == 0x20)
		{
			_int(\$block, 5);	# dynamic table size update
			next;
		}
		else
		{
			my $bits = ($b & 0x40) ? 6 : 4;
			my $i = _int(\$block, $bits);
			if ($i)
			{
				return undef if $i > $#STATIC;
				$name = $STATIC[$i][0];
			}
			else
			{
				$name = _str(\$block);
			}
			$value = _str(\$block);
		}
		$name //= '?';
		$value //= '?';
		$h{$name} = exists $h{$name} ? "$h{$name}, $value" : $value;
	}
	return \%h;
}

1;
