# Defect: workers and the schema's functions ran SQL with the database's
# search_path, so a function a less privileged role defines in public (here
# with the database's path putting public first, the worst case a DBA can
# set) captured their unqualified calls and ran with superuser rights.
# Every worker pins its search_path, the relay's libpq session too, and
# every function of the schema carries SET search_path: the attacker's
# functions are never called, the attacker stays powerless, and the rows
# still land.  And the workers act as machpay_worker, a role without
# superuser rights, so a bug in them is not a superuser's.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;
use SseTest;
use JSON::PP;

my $node = machpay_node('search_path');
my $port = $node->{machpay_http_port};

# The attacker: a login role with CREATE on public, nothing else.  Each
# trap records its call and tries to make its owner a superuser, then does
# what the real function does, so nothing visibly breaks.
$node->safe_psql('postgres', q{
CREATE ROLE regress_attacker LOGIN;
GRANT CREATE, USAGE ON SCHEMA public TO regress_attacker;
SET ROLE regress_attacker;
CREATE TABLE public.captured (fn text, by_user text, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON public.captured TO PUBLIC;
CREATE FUNCTION public.escalate(fn text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.captured (fn, by_user) VALUES (fn, current_user);
    BEGIN
        EXECUTE 'ALTER ROLE regress_attacker SUPERUSER';
    EXCEPTION WHEN others THEN NULL;
    END;
END $$;
CREATE FUNCTION public.unnest(timestamptz[]) RETURNS SETOF timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate('unnest(timestamptz[])'); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION public.unnest(text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate('unnest(text[])'); RETURN QUERY SELECT pg_catalog.unnest($1); END $$;
CREATE FUNCTION public.format(text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate('format(text,text)'); RETURN pg_catalog.format($1, $2); END $$;
CREATE FUNCTION public.encode(bytea, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate('encode(bytea,text)'); RETURN pg_catalog.encode($1, $2); END $$;
CREATE FUNCTION public.date_trunc(text, timestamptz) RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate('date_trunc(text,timestamptz)'); RETURN pg_catalog.date_trunc($1, $2); END $$;
RESET ROLE;
ALTER DATABASE postgres SET search_path = public, pg_catalog;
});
# Workers and the relay start again with the database's new setting.
$node->restart;
ok(wait_ready($port), 'server ready');

my $key = $node->safe_psql('postgres', q{SELECT machpay.create_ingest_key('*')});
my $r;
my $deadline = time + 10;
do
{
	$r = http_req($port, method => 'POST', token => $key,
		body => json_array(gateway_event(), sdk_event(), log_event()));
} while ($r->{status} == 401 && time < $deadline && sleep 0.1);
is($r->{status}, 202, 'telemetry accepted');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', 'SELECT count(*) > 0 FROM machpay.metrics'), 't',
	'metric rows stored by the flusher');

# The jobs, run by the superuser from a session with the database's path.
$node->safe_psql('postgres', 'SELECT machpay.run_rollup(); SELECT count(*) FROM machpay.run_maintenance()');
# The relay reads keys and LISTENs: give it a few turns.
sleep 1.5;

is($node->safe_psql('postgres', 'SELECT count(*) FROM public.captured'), '0',
	'no worker and no function of the schema called a function of public')
  or diag($node->safe_psql('postgres', 'SELECT fn, by_user, count(*) FROM public.captured GROUP BY 1, 2'));
is($node->safe_psql('postgres',
	q{SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_attacker'}), 'f',
	'the attacker did not become a superuser');

# The workers act as machpay_worker (machpay.worker_role), not as a
# superuser: an intent's de-duplication key is inserted by the flusher
# with that role as current and session user.
$node->safe_psql('postgres', q{
CREATE TABLE public.writer_seen (cur text, sess text, super boolean);
CREATE FUNCTION public.note_writer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.writer_seen
    SELECT current_user, session_user, rolsuper FROM pg_catalog.pg_roles WHERE rolname = session_user;
    RETURN NULL;
END $$;
GRANT INSERT ON public.writer_seen TO machpay_worker;
CREATE TRIGGER note_writer AFTER INSERT ON machpay.payment_intent_keys
    FOR EACH STATEMENT EXECUTE FUNCTION public.note_writer();
});
$r = http_req($port, method => 'POST', token => $key, body => intent_event(4242));
is($r->{status}, 200, 'intent stored by the flusher');
is($node->safe_psql('postgres', 'SELECT cur, sess, super FROM public.writer_seen'),
	'machpay_worker|machpay_worker|f', 'the flusher wrote as machpay_worker, not a superuser');

# A session of the attacker's own is still captured: the pin is the
# workers' and the functions', not a change of the database's setting.
is($node->safe_psql('postgres', q{SELECT date_trunc('hour', now()) IS NOT NULL},
	extra_params => [ '-U', 'regress_attacker' ]), 't', 'attacker session works');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.captured'), '1',
	'the trap works where the path is not pinned');

# ---- pg_partman's schema made unsafe --------------------------------------

is($node->safe_psql('postgres', q{SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_partman'}),
	'partman', 'pg_partman is in a schema of its own');
sub counter
{
	return $node->safe_psql('postgres',
		"SELECT value FROM machpay.stat_receiver WHERE name = '$_[0]'");
}
is(counter('partman_calls_refused'), '0', 'no call into pg_partman refused so far');
is($node->safe_psql('postgres', q{SELECT count(*) FROM machpay.job_runs WHERE job = 'maintenance' AND status <> 'succeeded'}),
	'0', 'every maintenance run succeeded (the worker at start-up, the manual one)');

# A partition pg_partman would make again: the hourly log partition a day
# ahead.  While it is missing, pg_partman was not called.  (Named now, with
# the path pinned: pg_partman's functions are themselves bait for traps.)
my $ahead = $node->safe_psql('postgres', q{SET search_path = pg_catalog;
	SELECT n.partition_schema || '.' || n.partition_table
	  FROM partman.show_partition_name('machpay.debug_logs', (now() + interval '1 day')::text) n});
my $ahead_exists = "SELECT to_regclass('$ahead') IS NOT NULL";
$node->safe_psql('postgres', "ALTER EXTENSION machpay_receiver DROP TABLE $ahead; DROP TABLE $ahead");
is($node->safe_psql('postgres', $ahead_exists), 'f', 'a partition ahead is dropped');

# The attacker may now create in pg_partman's schema, and plants the same
# traps there.
$node->safe_psql('postgres', q{
GRANT CREATE ON SCHEMA partman TO regress_attacker;
SET ROLE regress_attacker;
CREATE FUNCTION partman.format(text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate('partman.format(text,text)'); RETURN pg_catalog.format($1, $2); END $$;
CREATE FUNCTION partman.format(text, text, text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate('partman.format(text,text,text)'); RETURN pg_catalog.format($1, $2, $3); END $$;
CREATE FUNCTION partman.date_trunc(text, timestamptz) RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM public.escalate('partman.date_trunc(text,timestamptz)'); RETURN pg_catalog.date_trunc($1, $2); END $$;
RESET ROLE;
});

# A manual run is refused before pg_partman is called.
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM machpay.run_maintenance(now())');
isnt($rc, 0, 'a manual maintenance run fails');
like($err, qr/refusing to call pg_partman: its schema "partman" is not safe/, 'refused: the schema is not safe');
like($err, qr/DETAIL:  Role "regress_attacker", not a superuser, may create objects in it/,
	'the detail names the role');
like($err, qr/HINT:  Install pg_partman in a schema of its own/, 'the hint says what to do');
ok(counter('partman_calls_refused') >= 1, 'the refusal is counted');

# The worker's runs are refused too: a failed run in job_runs, announced
# with its error to SSE clients, counted.
sse_add_key($node, 'console-token', 'console');
ok(sse_wait_ready($node, 'console-token'), 'relay accepts a console key');
my $jobs = sse_open($node->{machpay_sse_port}, '/v1/stream?access_token=console-token&types=job');
is($jobs->response(5), 200, 'job stream opened');
my $last_run = $node->safe_psql('postgres', 'SELECT coalesce(max(run_id), 0) FROM machpay.job_runs');
# The worker runs maintenance at start-up, then retries it after 1 s, 2 s, ...
$node->restart;
ok($node->poll_query_until('postgres', qq{
	SELECT count(*) > 0 FROM machpay.job_runs
	 WHERE job = 'maintenance' AND NOT manual AND run_id > $last_run AND status = 'failed'}),
	'the worker ran maintenance after the restart');
is($node->safe_psql('postgres', qq{
	SELECT DISTINCT sqlstate || ' ' || error FROM machpay.job_runs
	 WHERE job = 'maintenance' AND NOT manual AND run_id > $last_run}),
	'42501 refusing to call pg_partman: its schema "partman" is not safe',
	'every run of the worker failed, refused (insufficient_privilege)');
ok(counter('partman_calls_refused') >= 1, 'the worker\'s refusals are counted (since the restart)');
ok($node->wait_for_log(qr/failed \(failure \d+ in a row\): refusing to call pg_partman.*\n.*DETAIL:  Role "regress_attacker"/),
	'the worker logs the refusal with its detail');
ok(sse_wait_ready($node, 'console-token'), 'relay back after the restart');
$jobs = sse_open($node->{machpay_sse_port}, '/v1/stream?access_token=console-token&types=job');
is($jobs->response(5), 200, 'job stream opened again');
ok($jobs->read_until(qr/event: job\n/, 60), 'a job event for the next retry');
my ($job) = map { decode_json($_->{data}) } $jobs->events;
is(join(' ', @$job{qw(job status sqlstate)}, $job->{manual} ? 'manual' : 'scheduled'),
	'maintenance failed 42501 scheduled',
	'the job event: maintenance failed, insufficient_privilege');
like($job->{error}, qr/refusing to call pg_partman/, 'the job event carries the error');
$jobs->disconnect;

is($node->safe_psql('postgres', $ahead_exists), 'f', 'pg_partman was never called: the partition is still missing');
is($node->safe_psql('postgres', q{SELECT count(*) FROM public.captured WHERE fn LIKE 'partman.%'}), '0',
	'no trap in pg_partman\'s schema ran');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.captured'), '1', 'nor any other');
is($node->safe_psql('postgres',
	q{SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_attacker'}), 'f',
	'the attacker is still not a superuser');

# The privilege taken away, the attacker's functions there still refuse.
$node->safe_psql('postgres', 'REVOKE CREATE ON SCHEMA partman FROM regress_attacker');
($rc, $out, $err) = $node->psql('postgres', 'SELECT count(*) FROM machpay.run_maintenance(now())');
like($err, qr/DETAIL:  Role "regress_attacker", not a superuser, owns a function in it/,
	'a function the attacker left in the schema is refused too');

# Cleaned: maintenance works again and makes the missing partition.
$node->safe_psql('postgres', q{
DROP FUNCTION partman.format(text, text), partman.format(text, text, text),
              partman.date_trunc(text, timestamptz)});
$node->safe_psql('postgres', 'SELECT count(*) FROM machpay.run_maintenance(now())');
is($node->safe_psql('postgres', $ahead_exists), 't', 'maintenance made the missing partition');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.captured'), '1',
	'and called no function of the attacker');

$node->stop;
done_testing();
