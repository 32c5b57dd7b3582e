# The maintenance worker runs for months: its memory must not grow with its
# runs nor with the size of metric_points.  Each round here gives it series
# without points, which its next scheduled run prunes and after which it
# loads the series registry again, over a metric_points whose parent has no
# planner statistics (nobody analyzes a partitioned parent).  Asserted:
#  - the prune's scans probe the points' index per series: the worker
#    writes no temporary file (log_temp_files = 0, a small work_mem), where
#    a hash of metric_points spills in batches every run;
#  - the worker's memory contexts (pg_log_backend_memory_contexts, taken
#    between runs), outside PostgreSQL's caches of the catalog and of
#    plans, hold no more after the last round than after the warm-up:
#    nothing of a run or a load stays behind.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MachpayTest;

# Measured after the warm-up: by then the caches are filled and the plans
# of the prune's statements are generic (the plan cache tries five custom
# plans first).
my $ROUNDS = 19;
my $WARMUP = 7;
# A real leak of a run or a load (the load alone reads a 1 MB array of the
# registry's series) leaves well over this after 12 more rounds; what
# varies between two dumps taken between runs is a few kB.
my $BOUND_BYTES = 256 * 1024;

my $node = machpay_node('maintenance_memory', conf => <<'EOC');
machpay.rollup_interval = 0
machpay.maintenance_interval = 2s
log_temp_files = 0
work_mem = 64kB
EOC

sub sql { return $node->safe_psql('postgres', $_[0]); }

my $pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay maintenance'});
like($pid, qr/^\d+$/, 'the maintenance worker runs');

# Points for 400 series in today's partition; the parent is never analyzed.
sql(q{
	INSERT INTO machpay.metric_series (entity_id, metric_name)
	SELECT 'mem-e' || (g % 20), 'm' || g FROM generate_series(1, 400) g;
	INSERT INTO machpay.metric_points (time, series_id, value)
	SELECT now() - interval '1 second' * g, s.series_id, g
	  FROM machpay.metric_series s, generate_series(1, 250) g
	 WHERE s.entity_id LIKE 'mem-e%'});
is(sql(q{SELECT count(*) FROM pg_statistic WHERE starelid = 'machpay.metric_points'::regclass}),
	'0', 'metric_points (the parent) has no planner statistics');

# One round: series without points, pruned by the worker's next run, then
# the registry loaded again by the worker (its removal counter moved).
sub round
{
	my ($i) = @_;
	my $offset = -s $node->logfile;
	sql(qq{
		INSERT INTO machpay.metric_series (entity_id, metric_name, labels)
		SELECT 'mem-orphan' || (g % 10), 'orphan', jsonb_build_object('round', $i, 'g', g)
		  FROM generate_series(1, 500) g});
	my $deadline = time + 60;
	while (time < $deadline)
	{
		my $log = slurp_file($node->logfile, $offset);
		return 1
		  if $log =~ /\[$pid\] LOG:  machpay maintenance: prune machpay\.metric_series: \d+ series without points removed/
		  && $log =~ /\[$pid\] LOG:  machpay series registry loaded/
		  && sql(q{SELECT count(*) FROM machpay.metric_series WHERE entity_id LIKE 'mem-orphan%'}) eq '0';
		sleep(0.1);
	}
	return 0;
}

# The worker's memory context dump, taken between runs (no SPI context
# open: neither a run nor a load under way): [ total bytes, text ].
sub context_dump
{
	my $deadline = time + 60;
	while (time < $deadline)
	{
		my $offset = -s $node->logfile;
		sql("SELECT pg_log_backend_memory_contexts($pid)");
		my $dump;
		while (time < $deadline)
		{
			my $log = slurp_file($node->logfile, $offset);
			if ($log =~ /(\[$pid\] LOG:  logging memory contexts of PID $pid\n.*?\[$pid\] LOG:  Grand total: (\d+) bytes)/s)
			{
				$dump = [ $1, $2 ];
				last;
			}
			sleep(0.1);
		}
		return undef unless $dump;
		return [ $dump->[1], $dump->[0] ] unless $dump->[0] =~ /SPI Proc/;
		sleep(0.3);
	}
	return undef;
}

my $log_start = -s $node->logfile;
my ($warm, $last);
for my $i (1 .. $ROUNDS)
{
	ok(round($i), "round $i: the worker pruned the series and loaded the registry again")
	  or last;
	$warm = context_dump() if $i == $WARMUP;
	$last = context_dump() if $i == $ROUNDS;
}
ok(defined $warm && defined $last, 'memory contexts dumped between runs');
$warm //= [ 0, '' ];
$last //= [ 1e12, '' ];
note("memory context total after round $WARMUP: $warm->[0] bytes, after round $ROUNDS: $last->[0]; changed:\n"
	  . context_growth($warm->[1], $last->[1]));
cmp_ok(outside_caches($last->[1]), '<=', outside_caches($warm->[1]) + $BOUND_BYTES,
	"no growth of the worker's memory contexts over " . ($ROUNDS - $WARMUP) . ' rounds')
  or diag(context_growth($warm->[1], $last->[1]));

# What a dump holds outside PostgreSQL's caches of the catalog and of plans
# (relcache, catcache, compiled PL/pgSQL, cached plans, the WAL record
# buffer's high-water mark): those follow the tables and the statements,
# which change as partitions come and go, not the number of runs.
sub outside_caches
{
	my ($text) = @_;
	my $sum = 0;
	my $skip_below;
	for my $line (split /\n/, $text)
	{
		next unless $line =~ /level: (\d+); ([^:\n]+?): (\d+) total/;
		my ($level, $name, $bytes) = ($1, $2, $3);
		undef $skip_below if defined $skip_below && $level <= $skip_below;
		next if defined $skip_below;
		if ($name =~ /^(CacheMemoryContext|PL\/pgSQL function|CachedPlan|CachedPlanSource|CachedPlanQuery|CachedExpression|SPI Plan|WAL record construction|Operator lookup cache|Event ?Trigger ?Cache|Record information cache|Type information cache|PLpgSQL cast cache|PL\/pgSQL function cache)$/)
		{
			$skip_below = $level;
			next;
		}
		$sum += $bytes;
	}
	return $sum;
}

# The contexts whose total changed between two dumps, by level and name.
sub context_growth
{
	my ($before, $after) = @_;
	my %t;
	for ([ 0, $before ], [ 1, $after ])
	{
		my ($k, $text) = @$_;
		$t{"$1 $2"}[$k] += $3 while $text =~ /level: (\d+); ([^:\n]+?): (\d+) total/g;
	}
	return join("\n", map { "$_: " . ($t{$_}[0] // 0) . ' -> ' . ($t{$_}[1] // 0) }
		  grep { ($t{$_}[0] // 0) != ($t{$_}[1] // 0) } sort keys %t);
}

# Any process: a parallel plan's workers write batches of their own.
my @temp = slurp_file($node->logfile, $log_start) =~ /^.*LOG:  temporary file: .*$/mg;
is(scalar(@temp), 0, 'the prune reads no temporary file: metric_points is probed, not hashed')
  or diag(join("\n", @temp[ 0 .. ($#temp < 4 ? $#temp : 4) ]));
is(sql(q{SELECT count(*) FROM machpay.metric_points}), '100000', 'the points are all there');
is(sql(q{SELECT count(*) FROM machpay.metric_series WHERE entity_id LIKE 'mem-e%'}), '400',
	'series with points were not pruned');

$node->stop;
done_testing();
