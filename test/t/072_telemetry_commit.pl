# How telemetry batches commit (issue 10, SPEC §7):
#  1. By default a telemetry batch commits as the server's synchronous_commit
#     says: with a synchronous standby that never connects, its commit waits
#     for it, and its rows stay invisible meanwhile.
#  2. Its notifications are not part of that commit: another notifying
#     transaction does not wait for it (a notifying commit holds
#     PostgreSQL's notify lock until it returns, and payment intents
#     notify).  Once the batch's commit returns, its `ingest` event is
#     published.
#  3. machpay.telemetry_synchronous_commit = off: telemetry batches commit
#     without waiting (here: without the standby), intents still wait.
use strict;
use warnings;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

# Synchronous replication needs WAL senders (allows_streaming).
my $node = machpay_node('telemetry_commit', allows_streaming => 1, conf => <<'EOC');
machpay.auth = off
machpay.flush_interval = '100ms'
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');

sub points
{
	return $node->safe_psql('postgres', 'SELECT count(*) FROM machpay.metric_points');
}

sub post_telemetry
{
	my ($n) = @_;
	my $end = int(time) - 1;
	my $r = http_req($port, method => 'POST',
		body => json_array(map { gateway_event($GATEWAY_ID, $end - $_) } 1 .. $n));
	return $r->{status};
}

sub writer_waits_for_standby
{
	return $node->poll_query_until('postgres', q{
		SELECT count(*) >= 1 FROM pg_stat_activity
		WHERE backend_type = 'machpay flusher' AND wait_event = 'SyncRep'});
}

sub set_conf
{
	my (%set) = @_;
	for my $k (sort keys %set)
	{
		$node->safe_psql('postgres',
			defined $set{$k} ? "ALTER SYSTEM SET $k = '$set{$k}'" : "ALTER SYSTEM RESET $k");
	}
	$node->reload;
}

is(post_telemetry(2), 202, 'telemetry accepted');
ok($node->poll_query_until('postgres', 'SELECT count(*) = 6 FROM machpay.metric_points'),
	'its rows land while no standby is required');
is($node->safe_psql('postgres', 'SHOW machpay.telemetry_synchronous_commit'), 'on',
	'telemetry commits follow the server by default');

# --- 1. the default: a telemetry commit waits for the synchronous standby
set_conf(synchronous_standby_names => 'never_connects');
is(post_telemetry(3), 202, 'telemetry accepted while the standby is required');
ok(writer_waits_for_standby(), 'the telemetry writer waits for the standby on its commit');
is(points(), 6, 'its rows are not visible meanwhile');

# --- 2. its notifications are not in that commit
my ($ret, $probe, $stderr) = $node->psql('postgres', q{
	SET synchronous_commit = local;
	SET lock_timeout = '20s';
	SELECT machpay.notify_event('{"type":"probe"}')});
is($probe, 1, 'a notifying transaction commits while the telemetry commit waits')
  or diag($stderr);

set_conf(synchronous_standby_names => undef);
ok($node->poll_query_until('postgres', 'SELECT count(*) = 15 FROM machpay.metric_points'),
	'the rows land once the standby is no longer required');

# --- 3. telemetry_synchronous_commit = off
set_conf('machpay.telemetry_synchronous_commit' => 'off',
	synchronous_standby_names => 'never_connects');
is($node->safe_psql('postgres', 'SHOW machpay.telemetry_synchronous_commit'), 'off',
	'telemetry_synchronous_commit off after a reload');
is(post_telemetry(4), 202, 'telemetry accepted');
ok($node->poll_query_until('postgres', 'SELECT count(*) = 27 FROM machpay.metric_points'),
	'with telemetry_synchronous_commit off its rows land without the standby');

# An intent meanwhile: its commit waits for the standby (curl in the background).
my ($out, $err) = ('', '');
my $curl = IPC::Run::start(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}',
	'--max-time', '60', '-H', 'Content-Type: application/json',
	'--data-binary', intent_event(9001), "http://127.0.0.1:$port/v1/ingest"],
	'>', \$out, '2>', \$err, IPC::Run::timeout(90));
ok($node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM pg_stat_activity
	WHERE backend_type = 'machpay intent writer' AND wait_event = 'SyncRep'}),
	'an intent still waits for the standby on its commit');
is($node->safe_psql('postgres',
	'SELECT count(*) FROM machpay.payment_intents WHERE nonce = 9001'), 0,
	'and is not visible meanwhile');

set_conf(synchronous_standby_names => undef);
$curl->finish;
is($out, '200', 'it is answered 200 once the standby is no longer required');
is($node->safe_psql('postgres',
	'SELECT count(*) FROM machpay.payment_intents WHERE nonce = 9001'), 1,
	'and stored once');

$node->stop;
done_testing();
