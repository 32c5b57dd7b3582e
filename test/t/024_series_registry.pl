# machpay.max_series_per_entity decided at admission (the shared series
# registry): an event whose new series would take its entity past the limit
# gets a per-event too_large error in the 202/422 body, nothing of it is
# stored, and no row answered 202 is dropped at flush time any more
# (rows_dropped_series_limit stays 0; before, such rows were answered 202
# and then dropped).  Known series keep being accepted, other entities are
# unaffected, concurrent requests over several ingest workers never pass the
# limit together, the registry is loaded again after a restart, series
# pruned by maintenance give their room back, and the reservations of a
# rolled-back ingest() are dropped after their lifetime.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('series_registry', conf => <<'EOC');
machpay.auth = off
machpay.http_workers = 2
machpay.max_series_per_entity = 4
machpay.flush_retry_window = 1s
EOC
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');

my ($A, $B, $C) = ($GATEWAY_ID, $AGENT_ID, $OTHER_ID);
my $D = 'HG3a8ztWhHHPeUFjf1XhkB4f5HwhUqYoyqyfkVD1w1RF';

# A gateway report of entity $id with the series custom.m<i> for each i.
sub report
{
	my ($id, @i) = @_;
	my $end = int(time) - 1;
	my $start = $end - 60;
	my $fields = join(',', map { sprintf('"m%03d":%d', $_, $_) } @i);
	return qq({"source":"gateway","gateway_id":"$id","period_start":$start,)
	  . qq("period_end":$end,"custom":{$fields}});
}

sub post { return http_req($port, method => 'POST', body => $_[0]); }

sub sql { return $node->safe_psql('postgres', $_[0]); }

sub counter
{
	return sql("SELECT value FROM machpay.stat_receiver WHERE name = '$_[0]'");
}

sub series_of
{
	my ($id) = @_;
	sql('SELECT machpay.flush()');
	return sql("SELECT coalesce(string_agg(metric_name, ',' ORDER BY metric_name), '')"
		  . " FROM machpay.metric_series WHERE entity_id = '$id'");
}

my $limit_error =
  qr/"code":"too_large","message":"entity \w+ has \d+ metric series; the \d+ new series of this event would pass machpay.max_series_per_entity \(4\)"/;

# --- within the limit
my $r = post(report($A, 1, 2, 3));
is($r->{status}, 202, '3 new series of A: 202');
like($r->{body}, qr/^\{"accepted":1,"rejected":0,"errors":\[\]\}$/, 'accepted');

# --- one request: A's known series, A past the limit, another entity
$r = post('[' . join(',', report($A, 1, 2, 3), report($A, 4, 5), report($B, 1, 2)) . ']');
is($r->{status}, 202, 'a request with one event past the limit: 202');
like($r->{body}, qr/^\{"accepted":2,"rejected":1,"errors":\[\{"index":1,$limit_error\}\]\}$/,
	'the event past the limit is rejected in the body, naming the setting');
like($r->{body}, qr/entity $A has 3 metric series; the 2 new series/, 'with the counts');

# --- a request of that event alone: 422
$r = post(report($A, 4, 5));
is($r->{status}, 422, 'alone, the event past the limit is answered 422');
like($r->{body}, qr/^\{"accepted":0,"rejected":1,"errors":\[\{"index":0,$limit_error\}\]\}$/,
	'with the same error');

is(series_of($A), 'custom.m001,custom.m002,custom.m003', 'nothing of the rejected events stored');
is(series_of($B), 'custom.m001,custom.m002', 'the other entity\'s event stored');
is(sql("SELECT count(*) FROM machpay.metric_points p JOIN machpay.metric_series s USING (series_id)"
	  . " WHERE s.entity_id = '$A'"), '6', 'A\'s known series took both reports');
is(counter('rows_dropped_series_limit'), '0', 'no row dropped after its 202');
is(counter('events_rejected_series_limit'), '2', 'two events rejected at admission');
is(sql("SELECT count(*) FROM machpay.ingest_rejects WHERE reason = 'too_large' AND excerpt = '$A'"),
	'2', 'each left a dead letter');

# --- up to the limit exactly, then one more
is(post(report($A, 4))->{status}, 202, 'a 4th series of A: 202');
is(post(report($A, 5))->{status}, 422, 'a 5th: 422');
is(post(report($A, 1, 2, 3, 4))->{status}, 202, 'known series still accepted at the limit');

# --- concurrency: 8 requests at once, each with a new series of D, over 2 workers
my @kids;
for my $i (1 .. 8)
{
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my $st = post(report($D, 100 + $i))->{status};
		POSIX::_exit($st == 202 ? 0 : $st == 422 ? 1 : 2);
	}
	push @kids, $pid;
}
my %by;
for my $pid (@kids)
{
	waitpid($pid, 0);
	$by{ $? >> 8 }++;
}
is($by{0} // 0, 4, 'of 8 concurrent new series of one entity, 4 answered 202');
is($by{1} // 0, 4, 'and 4 answered 422');
is(scalar(split(/,/, series_of($D))), 4, '4 series of D stored');

# --- restart: the registry is loaded from the table again
$node->restart;
ok(wait_ready($port), 'ingest server ready after a restart');
my ($st, $deadline) = (0, time + 30);
do { $st = post(report($A, 5))->{status}; sleep 0.2 if $st == 503 } while ($st == 503 && time < $deadline);
is($st, 422, 'after the restart, a 5th series of A is still refused');
is(post(report($A, 1, 2, 3, 4))->{status}, 202, 'and its known series accepted');
is(post(report($C, 1, 2, 3, 4))->{status}, 202, 'a new entity has its room');
is(series_of($A), 'custom.m001,custom.m002,custom.m003,custom.m004', 'A still has 4 series');

# --- maintenance prunes a series no point refers to: its room is free again
sql("DELETE FROM machpay.metric_points WHERE series_id IN (SELECT series_id FROM machpay.metric_series"
	  . " WHERE entity_id = '$A' AND metric_name = 'custom.m004')");
is(sql("SELECT detail FROM machpay.run_maintenance() WHERE action = 'prune'"),
	'1 series without points removed', 'maintenance pruned the series');
$deadline = time + 10;
do { $st = post(report($A, 5))->{status}; sleep 0.2 if $st != 202 } while ($st != 202 && time < $deadline);
is($st, 202, 'after the prune, a new series of A is accepted');
is(series_of($A), 'custom.m001,custom.m002,custom.m003,custom.m005', 'and stored');

# --- a rolled-back ingest() holds its reservations only for their lifetime
my $E = 'J1yoaErCNfgQyMDDCUyj5dRWRPRAk5wGVd2bx2DMGEWe';
sql("BEGIN; SELECT machpay.ingest('" . report($E, 1, 2, 3, 4) . "'::jsonb); ROLLBACK;");
is(series_of($E), '', 'the rolled-back series are not stored');
is(post(report($E, 5))->{status}, 422,
	'meanwhile their reservations still count (the check errs on refusal)');
# lifetime: machpay.flush_retry_window (1 s) + 30 s
$deadline = time + 90;
do { $st = post(report($E, 5))->{status}; sleep 1 if $st != 202 } while ($st != 202 && time < $deadline);
is($st, 202, 'after their lifetime, the entity has its room back');
is(series_of($E), 'custom.m005', 'and the new series is stored');

is(counter('rows_dropped_series_limit'), '0', 'still no row dropped after its 202');

# --- a registry too small for the table: what it cannot count is refused
$node->append_conf('postgresql.conf', "machpay.series_registry_size = 6\n");
my $log_offset = -s $node->logfile;
$node->restart;
ok(wait_ready($port), 'ingest server ready with a small registry');
my $F = '4wBqpZM9xaSheZzJSMawUKKwhdpChKbZ5eu5ky4Vigw';
$deadline = time + 30;
do { $r = post(report($F, 1)); sleep 0.2 if $r->{status} == 503 } while ($r->{status} == 503 && time < $deadline);
is($r->{status}, 422, 'a new series the full registry cannot count: 422');
like($r->{body}, qr/"code":"too_large","message":"the series registry is full: .*raise machpay.series_registry_size"/,
	'naming machpay.series_registry_size');
ok($node->log_contains(qr/series registry holds fewer series than machpay.metric_series/, $log_offset),
	'the start said so in the log');
is(series_of($F), '', 'nothing of it stored');
is(counter('rows_dropped_series_limit'), '0', 'and nothing dropped after a 202');

$node->stop;
done_testing();
