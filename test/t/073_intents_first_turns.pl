# Payment intents are mapped before waiting telemetry (issue 10): an
# ingest worker maps telemetry bodies for a bounded time per turn of its
# loop and lets the rest wait, so a body with a payment intent that arrives
# behind a burst of telemetry is mapped, committed and answered while most
# of that telemetry still waits.  Measured as an order, not a time: a burst
# of large telemetry requests is written on many connections, then one
# intent on another; most telemetry answers must come after the intent's
# 200.  (Before, the worker mapped every body ready in its turn, in the
# order the sockets became ready, and the intent came last.)  Nothing is
# lost: every telemetry request is answered 202 and its rows land.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);
use MachpayTest;
use MachpayHttp;

my $nconns = 100;
my $nevents = 500;

my $node = machpay_node('intents_first_turns', conf => <<'EOC');
machpay.auth = off
machpay.http_workers = 1
machpay.flush_interval = '100ms'
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');

sub metric
{
	my ($name) = @_;
	my $r = http_req($port, path => '/metrics');
	return $r->{body} =~ /^\Q$name\E (\d+)$/m ? $1 : undef;
}

sub request
{
	my ($body) = @_;
	return "POST /v1/ingest HTTP/1.1\r\nHost: localhost\r\n"
	  . "Content-Type: application/json\r\nContent-Length: "
	  . length($body) . "\r\n\r\n" . $body;
}

sub connect_to
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp') or die "connect: $!";
	$s->autoflush(1);
	return $s;
}

sub write_all
{
	my ($s, $bytes) = @_;
	my $off = 0;
	while ($off < length($bytes))
	{
		my $n = syswrite($s, $bytes, length($bytes) - $off, $off);
		die "write: $!" unless defined $n;
		$off += $n;
	}
}

# Rows per gateway event, from one event.
is(http_req($port, method => 'POST', body => json_array(gateway_event()))->{status}, 202,
	'one event to count its rows');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
my $per_event = $node->safe_psql('postgres', 'SELECT count(*) FROM machpay.metric_points');
cmp_ok($per_event, '>', 0, 'it landed');

my $deferred_before = metric('machpay_http_bodies_deferred_total');
ok(defined $deferred_before, '/metrics counts deferred telemetry bodies');

my $end = int(time) - 1;
my $telemetry = request(json_array(map { gateway_event($GATEWAY_ID, $end - $_) } 1 .. $nevents));
my $intent = request(intent_event(73001));

# Connect first, so the burst is only bodies.
my @socks = map { connect_to() } 1 .. $nconns;
my $isock = connect_to();
write_all($_, $telemetry) for @socks;
write_all($isock, $intent);

# Read every answer; note the order in which they complete.
my %buf;
my %done;
my @order;
my $sel = IO::Select->new(@socks, $isock);
my $deadline = time + 120;
while ($sel->count > 0 && time < $deadline)
{
	for my $s ($sel->can_read(1))
	{
		my $n = sysread($s, my $chunk, 65536);
		if (!$n)
		{
			$sel->remove($s);
			next;
		}
		$buf{$s} .= $chunk;
		if ($buf{$s} =~ /\r\n\r\n/ && $buf{$s} =~ /Content-Length: (\d+)/i
			&& length($buf{$s}) >= index($buf{$s}, "\r\n\r\n") + 4 + $1)
		{
			$done{$s} = $buf{$s};
			push @order, $s;
			$sel->remove($s);
		}
	}
}

is(scalar(@order), $nconns + 1, 'every request was answered');
like($done{$isock} // '', qr{^HTTP/1\.1 200 }, 'the intent is answered 200');
my ($pos) = grep { $order[$_] == $isock } 0 .. $#order;
my $after = defined $pos ? scalar(@order) - 1 - $pos : 0;
cmp_ok($after, '>=', $nconns / 3,
	"most telemetry answers come after the intent's 200 ($after of $nconns)");
is(scalar(grep { ($done{$_} // '') =~ m{^HTTP/1\.1 202 } } @socks), $nconns,
	'every telemetry request is answered 202');
cmp_ok(metric('machpay_http_bodies_deferred_total'), '>', $deferred_before,
	'telemetry bodies waited for later turns');

$node->safe_psql('postgres', 'SELECT machpay.flush()');
my $rows = $node->safe_psql('postgres', 'SELECT count(*) FROM machpay.metric_points');
is($rows, $per_event * (1 + $nevents * $nconns), 'every telemetry row answered 202 landed');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM machpay.payment_intents WHERE nonce = 73001}), 1,
	'the intent is stored once');

$_->close for @socks, $isock;
$node->stop;
done_testing();
