# Fault: the disk of the tables fills up under load.  Every machpay table
# and index is moved to a tablespace on a small tmpfs (scripts/test.sh
# mounts it as root and passes its path in MACHPAY_TEST_SMALLFS), filled
# with a ballast file until little is left; then telemetry and intents are
# posted until the tables cannot grow.  Expected (SPEC §7): intents get 503
# and are never half-stored (payment_intents and payment_intent_keys agree
# for every nonce), telemetry is kept until machpay.flush_retry_window and
# then dropped and counted, 429 + Retry-After once the buffer is full,
# /readyz says 503; once the ballast is removed everything recovers
# without a restart.  Exact accounting at the end: every 202'd event is
# stored or counted as dropped, every 200'd intent stored once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

my $fs = $ENV{MACHPAY_TEST_SMALLFS} // '';
die "MACHPAY_TEST_SMALLFS is not a mounted small file system: run this test through scripts/test.sh (make test), which mounts one as root\n"
  unless $fs ne '' && -d $fs && -w $fs;

my $node = machpay_node('diskfull', conf => <<EOC);
machpay.auth = off
machpay.buffer_size = '2MB'
machpay.flush_retry_window = '8s'
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub counter
{
	return sql("SELECT value FROM machpay.stat_receiver WHERE name = '$_[0]'");
}

sub avail_kb
{
	my @df = split /\n/, `df -Pk '$fs'`;
	my @f = split /\s+/, $df[1];
	return $f[3];
}

# --- every table and index of the schema onto the small file system
my $ts = "$fs/ts";
mkdir $ts or die "mkdir $ts: $!";
sql("CREATE TABLESPACE small LOCATION '$ts'");
# One relation per statement, each retried on a deadlock: the workers'
# first maintenance run takes its locks at the same moment.
for my $line (split /\n/, sql(q{SELECT c.oid::regclass, c.relkind
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'machpay' AND c.relkind IN ('r', 'p', 'i')
	ORDER BY c.relkind DESC}))
{
	my ($rel, $kind) = split /\|/, $line;
	my $stmt = sprintf('ALTER %s %s SET TABLESPACE small', $kind eq 'i' ? 'INDEX' : 'TABLE', $rel);
	my ($ret, $err) = (1, '');
	for my $try (1 .. 20)
	{
		($ret, undef, $err) = $node->psql('postgres', $stmt);
		# a partition the first maintenance run dropped meanwhile
		($ret, $err) = (0, '') if $err =~ /does not exist/;
		last if $ret == 0 || $err !~ /deadlock detected/;
		sleep 0.2;
	}
	die "$stmt: $err" if $ret != 0;
}
is(sql(q{SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'machpay' AND c.relkind IN ('r', 'i') AND c.reltablespace = 0}), 0,
	'every machpay table and index is on the small file system');

# A baseline that works.
my $nonce = 1000;
my (%intent_ok, %intent_failed);
my $r = http_req($port, method => 'POST', body => intent_event(++$nonce));
is($r->{status}, 200, 'an intent is committed before the disk fills');
$intent_ok{$nonce} = 1;

# --- the ballast: leave about 512 kB free
my $ballast = "$fs/ballast";
{
	my $kb = avail_kb() - 512;
	open(my $fh, '>', $ballast) or die "ballast: $!";
	my $mb = "\0" x (1024 * 1024);
	while ($kb >= 1024) { print $fh $mb or die "ballast: $!"; $kb -= 1024; }
	print $fh "\0" x ($kb * 1024) if $kb > 0;
	close $fh or die "ballast: $!";
}
diag 'free on the small file system: ' . avail_kb() . ' kB';

# --- telemetry until the buffer is full (the tables cannot take it)
my $tag = 0;
my ($accepted, $n429, $retry_after, %refused_tags) = (0, 0, '');
my $failures0 = counter('flush_failures');
my $dropped0 = counter('events_dropped');

sub telemetry_body
{
	my ($t) = @_;
	my $now = int(time) - 1;
	return json_array(map {
		my $pad = join('', map { ('a' .. 'z', 'A' .. 'Z', 0 .. 9)[ int(rand(62)) ] } 1 .. 700);
		qq({"source":"log","entity_id":"$AGENT_ID","time":$now,"level":"info","message":"df $t $_ $pad"})
	} 1 .. 20);
}

my $deadline = time + 120;
while (time < $deadline && $n429 == 0)
{
	$tag++;
	$r = http_req($port, method => 'POST', body => telemetry_body($tag));
	if ($r->{status} == 202) { $accepted += 20; }
	elsif ($r->{status} == 429)
	{
		$n429++;
		$retry_after = $r->{headers}{'retry-after'} // '';
		$refused_tags{$tag} = 1;
	}
	else { diag "unexpected $r->{status}: $r->{body}"; last; }
}
cmp_ok(counter('flush_failures'), '>', $failures0, 'flushes fail once the disk is full');
is($n429, 1, 'the buffer fills: telemetry is answered 429');
like($retry_after, qr/^\d+$/, 'with Retry-After');
diag "$accepted events accepted before the first 429";

# --- /readyz reports the database unwritable
my $ready503 = 0;
$deadline = time + 30;
while (time < $deadline)
{
	if (http_req($port, path => '/readyz')->{status} == 503) { $ready503 = 1; last; }
	sleep 0.2;
}
ok($ready503, '/readyz says 503 while the disk is full');

# --- intents: committed while their pages have room, then 503; never half-stored
$deadline = time + 120;
while (time < $deadline && !%intent_failed)
{
	$r = http_req($port, method => 'POST', body => intent_event(++$nonce));
	if ($r->{status} == 200) { $intent_ok{$nonce} = 1; }
	elsif ($r->{status} == 503) { $intent_failed{$nonce} = 1; }
	else { diag "intent: unexpected $r->{status}: $r->{body}"; last; }
}
is(scalar(keys %intent_failed), 1, 'an intent that cannot be committed is answered 503');
diag scalar(keys %intent_ok) . ' intents committed before that';

# --- kept until the retry window, then dropped and counted
ok($node->poll_query_until('postgres',
	"SELECT value > $dropped0 FROM machpay.stat_receiver WHERE name = 'events_dropped'"),
	'after the retry window buffered telemetry is dropped and counted');

# --- free the space: everything recovers without a restart
unlink $ballast or die "unlink: $!";
my $ready = 0;
$deadline = time + 60;
while (time < $deadline)
{
	if (http_req($port, path => '/readyz')->{status} == 200) { $ready = 1; last; }
	sleep 0.2;
}
ok($ready, '/readyz is 200 again once space is freed');
$r = http_req($port, method => 'POST', body => intent_event(++$nonce));
is($r->{status}, 200, 'intents are committed again');
$intent_ok{$nonce} = 1;
$r = http_req($port, method => 'POST', body => telemetry_body('after'));
is($r->{status}, 202, 'telemetry is accepted again');
$accepted += 20;
is(sql("SET statement_timeout = '60s'; SELECT machpay.flush() >= 0"), 't', 'flush() completes');
is(sql("SELECT count(*) FROM machpay.debug_logs WHERE message LIKE 'df after %'"), 20,
	'and lands');

# --- exact accounting
my $stored = sql("SELECT count(*) FROM machpay.debug_logs WHERE message LIKE 'df %'");
my $dropped = counter('events_dropped') - $dropped0;
diag "accepted $accepted, stored $stored, dropped $dropped";
cmp_ok($dropped, '>', 0, 'some telemetry was dropped');
is($stored + $dropped, $accepted, 'every 202\'d event is stored or counted as dropped, exactly');
is(sql("SELECT count(*) FROM machpay.debug_logs WHERE message ~ '^df ("
	. join('|', keys %refused_tags) . ") '"), 0, 'nothing of a 429\'d request is stored');
my $ok_list = join(',', sort keys %intent_ok);
my $failed_list = join(',', sort keys %intent_failed);
is(sql("SELECT count(*) FROM machpay.payment_intents WHERE nonce IN ($ok_list)"),
	scalar(keys %intent_ok), 'every 200\'d intent is stored once');
is(sql("SELECT count(*) FROM machpay.payment_intent_keys WHERE nonce IN ($ok_list)"),
	scalar(keys %intent_ok), 'with its key once');
is(sql("SELECT (SELECT count(*) FROM machpay.payment_intents WHERE nonce IN ($failed_list))
	+ (SELECT count(*) FROM machpay.payment_intent_keys WHERE nonce IN ($failed_list))"), 0,
	'nothing of a 503\'d intent is stored, in either table');
is(sql("SELECT count(*) FROM machpay.payment_intents"), scalar(keys %intent_ok),
	'no other intent is stored');

$node->stop;
done_testing();
