# Payment intents and synchronous replication (README, "Running it highly
# available").
#  1. The flusher commits intents with synchronous_commit at least "on",
#     even when the server's setting is "off": a request with intents is
#     answered only once a synchronous standby has the commit.
#  2. /readyz answers 503 while default_transaction_read_only is on (how
#     pg_auto_failover holds a promoted standby until the old primary is
#     known demoted), so a load balancer sends nothing there meanwhile.
#  3. A commit that waits for a synchronous standby returns, as if done,
#     when the postmaster dies (PostgreSQL stops waiting, the transaction
#     being committed locally).  Its intents must not be answered 200: the
#     standby may never get them, and the failover that follows the death of
#     a primary would lose them.
# The standby named here never connects, so the commit waits until the
# postmaster is SIGKILLed.
use strict;
use warnings;
use IPC::Run ();
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

# Synchronous replication needs WAL senders (allows_streaming).
my $node = machpay_node('syncdeath', allows_streaming => 1);
my $port = $node->{machpay_http_port};
add_key($node, 'ingest-token', '*', 'ingest');
ok(wait_ready($port), 'ingest server ready');
my $r = http_req($port, method => 'POST', token => 'ingest-token', body => intent_event(1));
is($r->{status}, 200, 'an intent is answered 200 while no standby is required');

$node->safe_psql('postgres', q{ALTER SYSTEM SET default_transaction_read_only = on});
$node->reload;
my $rz;
for (1 .. 50)
{
	$rz = http_req($port, path => '/readyz');
	last if $rz->{status} == 503;
	sleep 0.1;
}
is($rz->{status}, 503, '/readyz 503 while default_transaction_read_only is on');
like($rz->{body}, qr/default_transaction_read_only/, 'and says why');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET default_transaction_read_only});
$node->reload;
ok(wait_ready($port, 10), '/readyz 200 again once it is off');

# ALTER SYSTEM writes no transaction: it does not wait itself.
$node->safe_psql('postgres', q{ALTER SYSTEM SET synchronous_standby_names = 'never_connects'});
$node->safe_psql('postgres', q{ALTER SYSTEM SET synchronous_commit = off});
$node->reload;
my $waiting = sub {
	$node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity
		WHERE wait_event = 'SyncRep'
		  AND application_name IN ('machpay flusher', 'machpay intent writer')});
};

my $body = intent_event(2);
my ($out, $err) = ('', '');
my $curl = IPC::Run::start(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}',
	'--max-time', '60', '-H', 'Authorization: Bearer ingest-token',
	'-H', 'Content-Type: application/json', '--data-binary', $body,
	"http://127.0.0.1:$port/v1/ingest"], '>', \$out, '2>', \$err,
	IPC::Run::timeout(90));
my $end = time + 30;
sleep 0.1 while time < $end && $waiting->() eq '0';
is($waiting->(), '1', 'with synchronous_commit off in the server, the writer of intents waits for the synchronous standby on their commit');

$node->kill9;
$curl->finish;
isnt($out, '200', "no 200 for an intent whose commit the standby never confirmed (got '$out')");

done_testing();
