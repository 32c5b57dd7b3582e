# SSE relay: it survives pg_terminate_backend of its LISTEN connection and
# a restart of the server; ids keep growing across both.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Select;
use IO::Socket::INET;
use MachpayTest;
use SseTest;

my $node = sse_node('sse_reconnect');
my $port = $node->{machpay_sse_port};

my $listener_q = q{SELECT pid FROM pg_stat_activity WHERE application_name = 'machpay_sse_listener'};

my $c = sse_open($port, '/v1/stream?access_token=console-token');
is($c->response(5), 200, 'client connected');
$node->safe_psql('postgres', q{SELECT machpay.notify_event('{"type":"before"}')});
ok($c->read_until(qr/event: before\n/), 'event before the terminate');
my ($before) = $c->events;

my $old = $node->safe_psql('postgres', $listener_q);
ok($old, "LISTEN connection found (pid $old)");
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old)");
# A new pid whose last statement is LISTEN is listening.
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE application_name = 'machpay_sse_listener' AND pid <> $old
	  AND state = 'idle' AND (query LIKE 'LISTEN %' OR query LIKE '%machpay.payment_intents%')}),
	'relay reconnected with a new LISTEN connection');
$node->safe_psql('postgres', q{SELECT machpay.notify_event('{"type":"after_terminate"}')});
ok($c->read_until(qr/event: after_terminate\n/), 'the same client receives events after the reconnect');
my ($b, $after) = $c->events;
cmp_ok($after->{id}, '>', $before->{id}, 'ids keep growing');
ok($node->log_contains('sse relay reconnected'), 'reconnect logged');

# Restart: the relay restarts with the server, clients reconnect; an id of
# the earlier run is outside the new window: event: reset.  On its way
# down the relay ends its streams normally (the last chunk, then the
# close) and closes idle keep-alive connections without an answer.
my $idle = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
  or die "connect: $!";
binmode $idle;
$idle->autoflush(1);
print $idle "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
my $page = '';
{
	my $sel = IO::Select->new($idle);
	my $end = time + 10;
	while (time < $end && $sel->can_read($end - time))
	{
		last if !sysread($idle, my $buf, 65536);
		$page .= $buf;
		last if $page =~ /\r\n\r\n/ && $page =~ /content-length: (\d+)/i
		  && length($page) >= index($page, "\r\n\r\n") + 4 + $1;
	}
}
like($page, qr{^HTTP/1\.1 200 }, 'a keep-alive connection to the relay: console page 200');
unlike($page, qr/^connection: close/mi, 'and the connection kept open');
$node->restart;
ok($c->read_to_eof(60), 'old connection closed by the restart');
ok($c->{ended}, 'the stream ended with its last chunk before the close');
{
	my $sel = IO::Select->new($idle);
	my ($after, $eof) = ('', 0);
	my $end = time + 10;
	while (time < $end && $sel->can_read($end - time))
	{
		my $k = sysread($idle, my $buf, 65536);
		if (!$k)
		{
			$eof = 1;
			last;
		}
		$after .= $buf;
	}
	ok($eof && $after eq '', 'the idle keep-alive connection closed without an answer');
}
close $idle;
ok(sse_wait_ready($node, 'console-token'), 'relay back after restart');
my $r = sse_open($port, '/v1/stream?access_token=console-token',
	headers => { 'Last-Event-ID' => $after->{id} });
is($r->response(5), 200, 'client reconnected after restart');
ok($r->read_until(qr/event: reset\n/), 'Last-Event-ID of the earlier run: event: reset');
$node->safe_psql('postgres', q{SELECT machpay.notify_event('{"type":"after_restart"}')});
ok($r->read_until(qr/event: after_restart\n/), 'events flow after the restart');
my ($new) = grep { ($_->{event} // '') eq 'after_restart' } $r->events;
cmp_ok($new->{id}, '>', $after->{id}, 'ids keep growing across a restart');

# Refused by pg_hba.conf: one clear log line with the hint, retries, and
# it is back once the line is fixed.  The test itself talks to template1.
my $hba = $node->data_dir . '/pg_hba.conf';
my $orig = PostgreSQL::Test::Utils::slurp_file($hba);
open(my $fh, '>', $hba) or die $!;
print $fh "local postgres all reject\n$orig";
close $fh;
$node->reload;
my $pid = $node->safe_psql('template1', $listener_q);
$node->safe_psql('template1', "SELECT pg_terminate_backend($pid)");
my $refused = 0;
for (1 .. 100)
{
	$refused = 1 if $node->log_contains('sse relay could not connect to its database: .*pg_hba.conf rejects');
	last if $refused;
	select(undef, undef, undef, 0.2);
}
ok($refused, 'refused connection logged');
ok($node->log_contains('HINT:  The relay LISTENs through a libpq connection over the local socket'),
	'with the pg_hba.conf hint');
open($fh, '>', $hba) or die $!;
print $fh $orig;
close $fh;
$node->reload;
ok($node->poll_query_until('template1', qq{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE application_name = 'machpay_sse_listener' AND state = 'idle'
	  AND (query LIKE 'LISTEN %' OR query LIKE '%machpay.payment_intents%')}),
	'relay connects again once pg_hba.conf lets it in');
$node->safe_psql('postgres', q{SELECT machpay.notify_event('{"type":"after_hba"}')});
ok($r->read_until(qr/event: after_hba\n/), 'the connected client receives events again');

$r->disconnect;
$node->stop;
done_testing();
