# HaLoad: an open-loop client that posts payment intents at a fixed rate
# through an HTTP entry, in a child process, for the HA failover tests.
#
# Request k is due at start + k / rate and carries one payment intent of
# its own (nonce = nonce_base + k) for the given gateway and agent.  It goes
# out on an idle keep-alive HTTP/1.1 connection (a new one is opened when
# none is idle, up to `conns`).  Every request ends in one line of the log
# file, written as soon as it ends:
#	k  nonce  status  sent  done  id
# status is the HTTP status, 0 for a connection that broke before an
# answer, -1 for a connection refused, -2 for no answer within `timeout`
# seconds; sent and done are epoch seconds; id is the intent id of a 200.
# stop() asks the child to send nothing more and to wait for the answers
# still due (at most `timeout` seconds), then reaps it.
package HaLoad;

use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);

our $SIGNATURE = '3S7Mu29NXDvhACZm3yoTTn4iwPXnQw6pyyrnN2gXoxVzJvPFHDDf329X35Kjg4VYo22XYiRip8Dr9CpMNeezfXVt';

# HaLoad->start(port =>, token =>, gateway =>, agent =>, token_id =>,
#   nonce_base =>, log =>, rate => 200, conns => 32, timeout => 40,
#   max_seconds => 300)
sub start
{
	my ($class, %o) = @_;
	my $self = bless { rate => 200, conns => 32, timeout => 40,
		max_seconds => 300, %o }, $class;
	open(my $fh, '>', $self->{log}) or die "$self->{log}: $!";
	close $fh;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my $ok = eval { $self->_run; 1 };
		print STDERR "HaLoad: $@" unless $ok;
		POSIX::_exit($ok ? 0 : 1);
	}
	$self->{pid} = $pid;
	return $self;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	my $end = time + $self->{timeout} + 10;
	while (time < $end)
	{
		last if waitpid($self->{pid}, POSIX::WNOHANG()) != 0;
		sleep 0.1;
	}
	if (kill 0, $self->{pid})
	{
		kill 'KILL', $self->{pid};
		waitpid($self->{pid}, 0);
	}
	delete $self->{pid};
}

# The requests that ended so far: a list of hashes.
sub results
{
	my ($self) = @_;
	my @r;
	open(my $fh, '<', $self->{log}) or return ();
	while (my $line = <$fh>)
	{
		next unless $line =~ /\n\z/;
		chomp $line;
		my ($k, $nonce, $status, $sent, $done, $id) = split /\t/, $line;
		push @r, { k => $k, nonce => $nonce, status => $status,
			sent => $sent, done => $done, id => $id };
	}
	close $fh;
	return @r;
}

sub _body
{
	my ($self, $nonce) = @_;
	return qq({"source":"payment_intent","gateway_id":"$self->{gateway}",)
	  . qq("agent_id":"$self->{agent}","nonce":"$nonce","amount":5000,)
	  . qq("token":"$self->{token_id}","signature":"$SIGNATURE"});
}

sub _run
{
	my ($self) = @_;
	my $stopping = 0;
	local $SIG{TERM} = sub { $stopping = 1 };
	local $SIG{PIPE} = 'IGNORE';
	open(my $log, '>>', $self->{log}) or die "$self->{log}: $!";
	$log->autoflush(1);
	my @conns;
	my $start = time;
	my $k = 0;
	my $stop_at;

	my $finish = sub {
		my ($c, $status, $id) = @_;
		printf $log "%d\t%s\t%d\t%.6f\t%.6f\t%s\n", $c->{k}, $c->{nonce}, $status,
		  $c->{sent}, time, $id // '';
		$c->{busy} = 0;
		$c->{buf} = '';
	};
	my $drop = sub {
		my ($c) = @_;
		close $c->{sock} if $c->{sock};
		$c->{sock} = undef;
	};

	while (1)
	{
		my $now = time;
		$stopping = 1 if $now - $start > $self->{max_seconds};
		$stop_at //= $now if $stopping;
		# Send every request that is due.
		while (!$stopping && $start + $k / $self->{rate} <= $now)
		{
			my ($c) = grep { !$_->{busy} && $_->{sock} } @conns;
			($c) = grep { !$_->{busy} } @conns unless $c;
			if (!$c && @conns < $self->{conns})
			{
				$c = { busy => 0, buf => '' };
				push @conns, $c;
			}
			last unless $c;
			$c->{k} = $k;
			$c->{nonce} = $self->{nonce_base} + $k;
			$c->{sent} = time;
			$k++;
			if (!$c->{sock})
			{
				$c->{sock} = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
					PeerPort => $self->{port}, Proto => 'tcp', Timeout => 2);
				if (!$c->{sock})
				{
					$finish->($c, -1);
					next;
				}
				binmode $c->{sock};
			}
			my $body = $self->_body($c->{nonce});
			my $req = "POST /v1/ingest HTTP/1.1\r\nHost: 127.0.0.1\r\n"
			  . "Authorization: Bearer $self->{token}\r\n"
			  . "Content-Type: application/json\r\nContent-Length: "
			  . length($body) . "\r\n\r\n$body";
			my $n = syswrite($c->{sock}, $req);
			if (!defined $n || $n != length($req))
			{
				$drop->($c);
				$finish->($c, 0);
				next;
			}
			$c->{busy} = 1;
		}
		my @busy = grep { $_->{busy} } @conns;
		last if $stopping && (!@busy || time - $stop_at > $self->{timeout});
		my $next_due = $start + $k / $self->{rate};
		my $wait = $stopping ? 0.05 : $next_due - time;
		$wait = 0 if $wait < 0;
		$wait = 0.05 if $wait > 0.05;
		my $sel = IO::Select->new(map { $_->{sock} } @busy);
		my @ready = @busy ? $sel->can_read($wait) : ();
		sleep $wait if !@busy && $wait > 0;
		for my $c (@busy)
		{
			next unless grep { $_ == $c->{sock} } @ready;
			my $r = sysread($c->{sock}, my $chunk, 65536);
			if (!$r)
			{
				$drop->($c);
				$finish->($c, 0);
				next;
			}
			$c->{buf} .= $chunk;
			my $hend = index($c->{buf}, "\r\n\r\n");
			next if $hend < 0;
			my $head = substr($c->{buf}, 0, $hend);
			my $body = substr($c->{buf}, $hend + 4);
			my ($status) = $head =~ m{^HTTP/1\.\d (\d+)};
			if ($head =~ /^content-length:\s*(\d+)/mi)
			{
				next if length($body) < $1;
			}
			elsif ($head =~ /^transfer-encoding:\s*chunked/mi)
			{
				next unless $body =~ /(?:^|\r\n)0\r\n\r\n\z/;
			}
			else
			{
				next;	# no length: ends at close (handled above)
			}
			my ($id) = $body =~ /"id":"([0-9a-f-]{36})"/;
			my $close = $head =~ /^connection:\s*close/mi;
			$finish->($c, $status // 0, $status && $status == 200 ? $id : undef);
			$drop->($c) if $close;
		}
		for my $c (grep { $_->{busy} } @conns)
		{
			next if time - $c->{sent} <= $self->{timeout};
			$drop->($c);
			$finish->($c, -2);
		}
	}
	for my $c (grep { $_->{busy} } @conns)
	{
		$finish->($c, -2);
	}
	close $log;
}

1;
