# MachpayHttp: helpers for the TAP tests of the ingest workers.
#
# http_req() runs curl (HTTP/1.1, HTTP/2 prior knowledge or HTTPS; nghttp
# for an HTTP/2 request with a body, see h2_upload) and returns status,
# body and response headers; raw_exchange() writes bytes on
# a plain socket and returns what came back.  Events are built with their
# times set to now so the mapper accepts them.
package MachpayHttp;

use strict;
use warnings;
use File::Temp qw(tempfile);
use IO::Socket::INET;
use IO::Select;
use JSON::PP ();
use Time::HiRes qw(time sleep);
use Exporter 'import';

our @EXPORT = qw(http_req raw_exchange add_key wait_ready gateway_event sdk_event
  log_event intent_event json_array $GATEWAY_ID $AGENT_ID $OTHER_ID);

our $GATEWAY_ID = 'BqpHxUsR2K8Gao2LxYAN5ygTdM8rRMbMXx4hdtcPvLdp';
our $AGENT_ID = 'QZr7WFP3TaGaWWs96WTBQSMg8xTFs1c8H63HgwadTBg';
our $OTHER_ID = '4gHqsWe1Kqdjtmn7rKz7fAGjrZihBVGwcbXe4ysTv4U1';

# http_req($port, method => 'POST', path => '/v1/ingest', body => '...',
#   headers => [...], http2 => 1, tls => 1, token => 'x', gzip => 1,
#   type => 'application/json')
sub http_req
{
	my ($port, %o) = @_;
	return h2_upload($port, %o) if $o{http2} && !$o{tls} && defined $o{body};
	my $method = $o{method} // 'GET';
	my $path = $o{path} // '/v1/ingest';
	my $scheme = $o{tls} ? 'https' : 'http';
	my @cmd = ('curl', '-s', '-S', '-X', $method, '--max-time', '20',
		'-D', '-', '-o', '-', '-H', 'Expect:');
	push @cmd, '--http2-prior-knowledge' if $o{http2} && !$o{tls};
	push @cmd, '--http2', '-k' if $o{tls};
	push @cmd, '--http1.1' if !$o{http2} && !$o{tls};
	push @cmd, '-H', "Authorization: Bearer $o{token}" if defined $o{token};
	push @cmd, '-H', $_ for @{ $o{headers} // [] };
	if (defined $o{body})
	{
		my $body = $o{body};
		if ($o{gzip})
		{
			require IO::Compress::Gzip;
			my $z;
			IO::Compress::Gzip::gzip(\$body => \$z) or die 'gzip failed';
			$body = $z;
			push @cmd, '-H', 'Content-Encoding: gzip';
		}
		my ($fh, $file) = tempfile(UNLINK => 1);
		binmode $fh;
		print $fh $body;
		close $fh;
		push @cmd, '--data-binary', "\@$file";
		push @cmd, '-H', 'Content-Type: ' . ($o{type} // 'application/json');
	}
	push @cmd, "$scheme://127.0.0.1:$port$path";
	my $out;
	{
		open(my $ph, '-|', @cmd) or die "curl: $!";
		binmode $ph;
		local $/;
		$out = <$ph>;
		close $ph;
	}
	$out //= '';
	# Skip 100 Continue heads; the last head is the answer.
	my ($status, %headers, $version);
	while ($out =~ s/\A(HTTP\/(\S+) (\d+)[^\r\n]*\r\n((?:[^\r\n]+\r\n)*)\r\n)//s)
	{
		($version, $status) = ($2, $3);
		my $h = $4;
		%headers = ();
		for my $line (split /\r\n/, $h)
		{
			$headers{ lc $1 } = $2 if $line =~ /^([^:]+):\s*(.*)$/;
		}
		last if $status != 100;
	}
	return { status => $status // 0, body => $out, headers => \%headers,
		version => $version // '' };
}

# An HTTP/2 request with a body, sent by nghttp (nghttp2's client).  A
# request the server refuses at its headers is answered, then its stream is
# reset with NO_ERROR (RFC 9113 §8.1: stop sending, keep the answer); curl
# 7.88 fails such an upload when the reset arrives before it sent its last
# byte and drops the answer it had received, so the answer is read with a
# client that keeps it.  Status and headers come from its HAR log, the body
# from its output.
sub h2_upload
{
	my ($port, %o) = @_;
	my $body = $o{body};
	my @hdr;
	if ($o{gzip})
	{
		require IO::Compress::Gzip;
		my $z;
		IO::Compress::Gzip::gzip(\$body => \$z) or die 'gzip failed';
		$body = $z;
		push @hdr, 'content-encoding: gzip';
	}
	push @hdr, 'content-type: ' . ($o{type} // 'application/json');
	push @hdr, "authorization: Bearer $o{token}" if defined $o{token};
	for my $h (@{ $o{headers} // [] })
	{
		next if $h !~ /^([^:]+):\s*(.*)$/ || $2 eq '';
		my ($n, $v) = (lc $1, $2);
		@hdr = grep { !/^\Q$n\E:/ } @hdr;
		push @hdr, "$n: $v";
	}
	push @hdr, ":method: $o{method}" if defined $o{method} && $o{method} ne 'POST';
	my ($fh, $file) = tempfile(UNLINK => 1);
	binmode $fh;
	print $fh $body;
	close $fh;
	my (undef, $har) = tempfile(UNLINK => 1);
	my $path = $o{path} // '/v1/ingest';
	my @cmd = ('nghttp', '-t', '20', "--har=$har", '-d', $file,
		(map { ('-H', $_) } @hdr), "http://127.0.0.1:$port$path");
	my $out;
	{
		open(my $ph, '-|', @cmd) or die "nghttp: $!";
		binmode $ph;
		local $/;
		$out = <$ph>;
		close $ph;
	}
	my ($status, %headers) = (0);
	my $log = eval {
		open(my $hf, '<', $har) or die;
		local $/;
		JSON::PP::decode_json(<$hf>);
	};
	my $resp = $log && $log->{log}{entries}[0]{response};
	if ($resp && $resp->{status})
	{
		$status = $resp->{status};
		for my $h (@{ $resp->{headers} // [] })
		{
			$headers{ lc $h->{name} } = $h->{value} if $h->{name} !~ /^:/;
		}
	}
	return { status => $status, body => $status ? ($out // '') : '',
		headers => \%headers, version => $status ? '2' : '' };
}

# Write bytes on a plain connection; read until close or timeout seconds.
sub raw_exchange
{
	my ($port, $bytes, $timeout) = @_;
	$timeout //= 5;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp') or die "connect: $!";
	binmode $s;
	print $s $bytes;
	my $sel = IO::Select->new($s);
	my $got = '';
	my $end = time + $timeout;
	while (time < $end && $sel->can_read($end - time))
	{
		my $n = sysread($s, my $buf, 65536);
		last if !$n;
		$got .= $buf;
	}
	my $closed = (time < $end);
	close $s;
	return wantarray ? ($got, $closed) : $got;
}

# A key stored the way create_ingest_key stores it: only the token's hash.
sub add_key
{
	my ($node, $token, $entity, $role) = @_;
	$node->safe_psql('postgres', qq{
		INSERT INTO machpay.ingest_keys (token_sha256, entity_id, role)
		VALUES (sha256('$token'::bytea), '$entity', '$role')});
}

sub wait_ready
{
	my ($port, $timeout) = @_;
	my $end = time + ($timeout // 60);
	while (time < $end)
	{
		my $r = http_req($port, path => '/readyz');
		return 1 if $r->{status} == 200;
		sleep 0.2;
	}
	return 0;
}

sub gateway_event
{
	my ($id, $end) = @_;
	$id //= $GATEWAY_ID;
	$end //= int(time) - 1;
	my $start = $end - 60;
	return qq({"source":"gateway","gateway_id":"$id","period_start":$start,"period_end":$end,)
	  . q("system":{"cpu_usage_percent":12.5,"ram_usage_mb":256},"network":{"bytes_in":1048576}});
}

sub sdk_event
{
	my ($id) = @_;
	$id //= $AGENT_ID;
	my $end = int(time) - 1;
	my $start = $end - 60;
	return qq({"source":"sdk","agent_id":"$id","period_start":$start,"period_end":$end,)
	  . q("wallet":{"sol_balance_lamports":50000000}});
}

sub log_event
{
	my $t = int(time) - 1;
	return qq({"source":"log","entity_id":"$AGENT_ID","time":$t,"level":"warn","message":"hello","fields":{"attempt":3}});
}

sub intent_event
{
	my ($nonce) = @_;
	return qq({"source":"payment_intent","gateway_id":"$GATEWAY_ID","agent_id":"$AGENT_ID",)
	  . qq("nonce":"$nonce","amount":5000,"token":"$OTHER_ID",)
	  . q("signature":"3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt"});
}

sub json_array
{
	return '[' . join(',', @_) . ']';
}

1;
