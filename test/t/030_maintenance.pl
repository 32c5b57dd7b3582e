# The maintenance worker: runs both jobs on short intervals, records every
# run in job_runs, marks a run interrupted by kill -9 failed and succeeds
# afterwards, retries a failing job with exponential backoff, announces
# manual runs with NOTIFY, and applies a reloaded interval.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;

my $node = machpay_node('maintenance', conf => <<'EOC');
machpay.rollup_interval = 2s
machpay.maintenance_interval = 3s
restart_after_crash = on
EOC

# Both jobs run on their own.
ok( $node->poll_query_until('postgres', q{
	SELECT count(DISTINCT job) = 2 FROM machpay.job_runs
	 WHERE status = 'succeeded' AND NOT manual}),
	'worker ran rollup and maintenance');
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) >= 2 FROM machpay.job_runs
	 WHERE job = 'rollup' AND status = 'succeeded' AND NOT manual}),
	'rollup runs again on its interval');

# Data marked the way the writer marks it is rolled up by the worker.
$node->safe_psql('postgres', q{
	INSERT INTO machpay.metric_series (entity_id, metric_name) VALUES ('tap-e1', 'cpu');
	INSERT INTO machpay.metric_points (time, series_id, value)
	SELECT date_trunc('hour', now()) - interval '1 hour' + interval '10 min' * g, series_id, g
	  FROM machpay.metric_series, generate_series(1, 3) g WHERE entity_id = 'tap-e1';
	INSERT INTO machpay.rollup_invalidations (bucket) VALUES (date_trunc('hour', now()) - interval '1 hour')
	    ON CONFLICT (bucket) DO UPDATE SET version = machpay.rollup_invalidations.version + 1});
ok( $node->poll_query_until('postgres', q{
	SELECT samples = 3 AND sum = 6 AND last = 3 FROM machpay.stats_1h WHERE entity_id = 'tap-e1'}),
	'worker rolled up the marked hour');

# A manual run is recorded and announced like a scheduled one.
my $out = $node->safe_psql('postgres', q{
	LISTEN machpay_events;
	SELECT machpay.run_rollup(now() - interval '3 hours', now() - interval '2 hours');});
like($out, qr/"type":"job","job":"rollup","run_id":\d+,"status":"succeeded","rows":0,"manual":true/,
	'manual run emits a job event');

# While a manual run holds the rollup's lock (the same advisory lock a DBA
# can take by hand), the worker does not start a rollup run; it postpones.
my $log_offset = -s $node->logfile;
my $bg = $node->background_psql('postgres');
$bg->query_safe('SELECT pg_advisory_lock(1835098984, 0)');
ok(wait_for_log($node, qr/rollup run postponed by \d+ ms: a manual run holds the job's lock/, $log_offset),
	'worker postpones the rollup while the lock is held');
is($node->safe_psql('postgres', q{SELECT count(*) FROM machpay.job_runs WHERE job = 'rollup' AND status = 'running'}),
	'0', 'no run started meanwhile');
my $before = $node->safe_psql('postgres', q{SELECT max(run_id) FROM machpay.job_runs});
$bg->query_safe('SELECT pg_advisory_unlock(1835098984, 0)');
$bg->quit;
ok( $node->poll_query_until('postgres', qq{
	SELECT count(*) > 0 FROM machpay.job_runs
	 WHERE job = 'rollup' AND status = 'succeeded' AND run_id > $before}),
	'rollup runs once the lock is free');

# kill -9 during a run: hold the rollup inside its run with a trigger that
# waits while tap_block has a row, then kill the worker.  The worker runs
# as machpay_worker with search_path pg_catalog, pg_temp: the table is
# named with its schema and readable by that role.
$node->safe_psql('postgres', q{
	CREATE TABLE public.tap_block (x int);
	GRANT SELECT ON public.tap_block TO machpay_worker;
	INSERT INTO public.tap_block VALUES (1);
	CREATE FUNCTION tap_wait() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    WHILE EXISTS (SELECT 1 FROM public.tap_block) LOOP
	        PERFORM pg_sleep(0.1);
	    END LOOP;
	    RETURN NEW;
	END $$;
	CREATE TRIGGER tap_wait BEFORE UPDATE ON machpay.rollup_state
	    FOR EACH ROW EXECUTE FUNCTION tap_wait();});
ok( $node->poll_query_until('postgres', q{
	SELECT count(*) = 1 FROM machpay.job_runs WHERE job = 'rollup' AND status = 'running'}),
	'a rollup run is in progress');
my $run_id = $node->safe_psql('postgres',
	q{SELECT run_id FROM machpay.job_runs WHERE job = 'rollup' AND status = 'running'});
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay maintenance'});
ok($pid =~ /^\d+$/, 'maintenance worker found');
my $kill_offset = -s $node->logfile;
kill 'KILL', $pid;

# The postmaster restarts everything; the new worker marks the run failed.
# A new maintenance worker means the restart is over (before it, a query
# may still reach the server that is about to be reinitialised).
ok(wait_for_log($node, qr/all server processes terminated; reinitializing/, $kill_offset),
	'kill -9 of the worker restarts the server');
ok( $node->poll_query_until('postgres', qq{
	SELECT count(*) = 1 FROM pg_stat_activity
	 WHERE backend_type = 'machpay maintenance' AND pid <> $pid}),
	'server back after kill -9, with a new maintenance worker');
$node->safe_psql('postgres', 'DELETE FROM tap_block');
ok( $node->poll_query_until('postgres', qq{
	SELECT status = 'failed' AND error LIKE 'run interrupted%' FROM machpay.job_runs WHERE run_id = $run_id}),
	'interrupted run marked failed');
ok( $node->poll_query_until('postgres', qq{
	SELECT count(*) > 0 FROM machpay.job_runs
	 WHERE job = 'rollup' AND status = 'succeeded' AND run_id > $run_id}),
	'next rollup run succeeds');
$node->safe_psql('postgres', 'DROP TRIGGER tap_wait ON machpay.rollup_state');

# A failing job is retried with exponential backoff, each failure recorded
# with its error and SQLSTATE.
$log_offset = -s $node->logfile;
my $last_ok = $node->safe_psql('postgres', q{SELECT max(run_id) FROM machpay.job_runs});
$node->safe_psql('postgres', q{
	CREATE FUNCTION tap_fail() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	    RAISE EXCEPTION 'tap: rollup made to fail' USING ERRCODE = 'P0042';
	END $$;
	CREATE TRIGGER tap_fail BEFORE UPDATE ON machpay.rollup_state
	    FOR EACH ROW EXECUTE FUNCTION tap_fail();});
ok( $node->poll_query_until('postgres', qq{
	SELECT count(*) >= 3 FROM machpay.job_runs
	 WHERE job = 'rollup' AND status = 'failed' AND run_id > $last_ok
	   AND error = 'tap: rollup made to fail' AND sqlstate = 'P0042'}),
	'failures recorded with error and sqlstate');
my $log = slurp_file($node->logfile, $log_offset);
my %delay;
while ($log =~ /retrying rollup job in (\d+) ms \(retry (\d+)\)/g)
{
	$delay{$2} //= $1;
}
ok(defined $delay{1} && defined $delay{2} && defined $delay{3}, 'three retries logged');
ok( $delay{1} >= 1000 && $delay{1} <= 1250
	  && $delay{2} >= 2000 && $delay{2} <= 2500
	  && $delay{3} >= 4000 && $delay{3} <= 5000,
	"backoff doubles with bounded jitter ($delay{1}, $delay{2}, $delay{3} ms)");
$node->safe_psql('postgres', 'DROP TRIGGER tap_fail ON machpay.rollup_state');
my $last_failed = $node->safe_psql('postgres',
	q{SELECT max(run_id) FROM machpay.job_runs WHERE job = 'rollup' AND status = 'failed'});
ok( $node->poll_query_until('postgres', qq{
	SELECT count(*) > 0 FROM machpay.job_runs
	 WHERE job = 'rollup' AND status = 'succeeded' AND run_id > $last_failed}),
	'rollup succeeds again once the cause is gone');
is($node->safe_psql('postgres', q{SELECT count(*) > 0 FROM machpay.job_errors WHERE sqlstate = 'P0042'}),
	't', 'job_errors lists the failures');

# SIGHUP: disabling the rollup takes effect without a restart.
$log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{ALTER SYSTEM SET machpay.rollup_interval = 0; SELECT pg_reload_conf()});
ok(wait_for_log($node, qr/rollup job disabled/, $log_offset),
	'reload disables the rollup job');

$node->stop;
done_testing();

sub wait_for_log
{
	my ($n, $re, $offset) = @_;
	for (1 .. 300)
	{
		return 1 if slurp_file($n->logfile, $offset) =~ $re;
		select(undef, undef, undef, 0.1);
	}
	return 0;
}
