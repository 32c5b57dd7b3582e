# Defect: an acknowledged payment intent depended on synchronous_commit.
# With it off for the server (or the database, or the role), the flusher's
# commit returned before its WAL was flushed, the 200 went out, and a crash
# right after lost the intent.  Transactions that store intents now commit
# with synchronous_commit = on.
#
# The WAL writer is slowed to 10 s and nothing else flushes WAL (no
# autovacuum, no background writes, no checkpoint), then every process of
# the cluster is killed with SIGKILL right after the answers: what was
# acknowledged must be there after crash recovery.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('intent_durability', conf => <<'EOC');
machpay.sse_port = 0
machpay.rollup_interval = 0
machpay.maintenance_interval = 0
autovacuum = off
bgwriter_lru_maxpages = 0
wal_writer_delay = 10s
wal_writer_flush_after = 1GB
checkpoint_timeout = 1h
EOC
my $port = $node->{machpay_http_port};
my $key = $node->safe_psql('postgres', q{SELECT machpay.create_ingest_key('*')});
$node->safe_psql('postgres', 'ALTER SYSTEM SET synchronous_commit = off');
$node->safe_psql('postgres', 'ALTER DATABASE postgres SET synchronous_commit = off');
$node->restart;
ok(wait_ready($port), 'server ready');
is($node->safe_psql('postgres', 'SHOW synchronous_commit'), 'off', 'synchronous_commit is off');
# Every process of the cluster at once, before the WAL writer wakes; then
# crash recovery.
sub crash_and_restart
{
	my $pm = $node->{_pid};
	my @children = split /\n/, `ps -o pid= --ppid $pm`;
	s/\s+//g for @children;
	kill 'KILL', grep { /^\d+$/ } @children;
	$node->kill9;
	my $gone = 0;
	for (1 .. 100) { if (!kill(0, $pm)) { $gone = 1; last; } sleep 0.1; }
	ok($gone, 'postmaster killed');
	$node->start;
}

# Settle what start-up wrote, so the intent's commit record is not flushed
# by a flush of something else.
sub settle
{
	$node->safe_psql('postgres', 'CHECKPOINT');
	sleep 0.5;
}

# Over HTTP: the flusher's commit, acknowledged with 200.
settle();
my $r;
my $deadline = time + 10;
do
{
	$r = http_req($port, method => 'POST', token => $key, body => intent_event(7001));
} while ($r->{status} == 401 && time < $deadline && sleep 0.1);
is($r->{status}, 200, 'intent acknowledged over HTTP');
my ($http_id) = $r->{body} =~ /"id":"([0-9a-f-]{36})"/;
ok($http_id, "intent id $http_id");
crash_and_restart();
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.payment_intents WHERE id = '$http_id'"), '1',
	'the intent acknowledged over HTTP survived the crash');
ok(wait_ready($port), 'server ready again');

# Through SQL: the caller's commit is the acknowledgement.
settle();
my $sql_out = $node->safe_psql('postgres', q{SET synchronous_commit = off; SELECT machpay.ingest('}
	. intent_event(7002) . q{') ->> 'intents'});
my ($sql_id) = $sql_out =~ /"id": ?"([0-9a-f-]{36})"/;
ok($sql_id, "intent stored by machpay.ingest(): $sql_id");
crash_and_restart();
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.payment_intents WHERE id = '$sql_id'"), '1',
	'the intent committed through machpay.ingest() survived the crash');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM machpay.payment_intent_keys WHERE id IN ('$http_id', '$sql_id')"), '2',
	'their de-duplication keys too');

$node->stop;
done_testing();
