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

$node->stop;
done_testing();
