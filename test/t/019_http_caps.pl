# Defect: reject amplification.  An 8 KB gzip body of 4,000,000 NDJSON
# lines "1" made a worker build 4 million rejects (hundreds of MB).  The
# caps per request (machpay.max_events_per_request, max_rows_per_request,
# max_rejects_per_request, max_rows_per_body_byte) refuse such requests
# with 413/422 before the work is done: nothing of them is stored, the
# worker's peak memory does not follow the inflated size, and it keeps
# serving.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Compress::Gzip qw(gzip);
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('caps', conf => "machpay.auth = off\n");
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'ingest server ready');

my $pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'machpay ingest'");
like($pid, qr/^\d+$/, 'ingest worker found');

sub vm_kb
{
	my ($field) = @_;
	open(my $fh, '<', "/proc/$pid/status") or die "status of $pid: $!";
	while (<$fh>) { return $1 if /^$field:\s+(\d+) kB/; }
	return 0;
}

sub counter
{
	my ($name) = @_;
	return $node->safe_psql('postgres',
		"SELECT value FROM machpay.stat_receiver WHERE name = '$name'");
}

# A warm-up request so the baseline includes the worker's normal memory.
is(http_req($port, method => 'POST', body => log_event())->{status}, 202, 'a normal request');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
my $hwm0 = vm_kb('VmHWM');
my $rejects0 = $node->safe_psql('postgres', 'SELECT count(*) FROM machpay.ingest_rejects');

# --- the bomb: 4,000,000 lines "1", about 8 MB inflated, about 8 KB sent
my $plain = "1\n" x 4_000_000;
my $gz;
gzip(\$plain => \$gz) or die 'gzip failed';
diag sprintf('bomb: %d bytes inflated, %d sent', length($plain), length($gz));
my $r = http_req($port, method => 'POST', body => $plain, gzip => 1,
	type => 'application/x-ndjson');
is($r->{status}, 422, 'the reject flood is answered 422');
like($r->{body}, qr/"error":"too_many_rejects"/, 'as too_many_rejects');
like($r->{body}, qr/"rejected":1001,/, 'counting the rejects read before it stopped');
my @listed = $r->{body} =~ /"index":/g;
is(scalar(@listed), 100, 'listing at most 100 errors');
my $hwm1 = vm_kb('VmHWM');
diag "ingest worker VmHWM: $hwm0 kB before, $hwm1 kB after";
cmp_ok($hwm1 - $hwm0, '<', 64 * 1024,
	'the worker\'s peak memory grew by less than 64 MB (it was 400 MB)');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', 'SELECT count(*) FROM machpay.ingest_rejects'), $rejects0,
	'no dead letter of the refused request is stored');

# --- more events than machpay.max_events_per_request: 413
my $many = join("\n", map { log_event() } 1 .. 10_001);
$r = http_req($port, method => 'POST', body => $many, type => 'application/x-ndjson');
is($r->{status}, 413, '10,001 events in one request are answered 413');
like($r->{body}, qr/"error":"too_large".*max_events_per_request/, 'naming the setting');
$r = http_req($port, method => 'POST', body => join("\n", map { log_event() } 1 .. 10_000),
	type => 'application/x-ndjson');
is($r->{status}, 202, '10,000 events are one request');
like($r->{body}, qr/"accepted":10000/, 'all accepted');

# --- rows per byte as sent: a tiny gzip body that yields many rows
$node->safe_psql('postgres',
	"ALTER SYSTEM SET machpay.max_rows_per_body_byte = 1; SELECT pg_reload_conf()");
sleep 0.5;
my $same = join("\n", map { gateway_event() } 1 .. 2000);    # 6,000 rows
$r = http_req($port, method => 'POST', body => $same, gzip => 1,
	type => 'application/x-ndjson');
is($r->{status}, 413, 'a body yielding more rows than bytes sent is answered 413');
like($r->{body}, qr/max_rows_per_body_byte/, 'naming the setting');
$r = http_req($port, method => 'POST', body => $same, type => 'application/x-ndjson');
is($r->{status}, 202, 'the same events uncompressed are accepted');
$node->safe_psql('postgres',
	"ALTER SYSTEM RESET machpay.max_rows_per_body_byte; SELECT pg_reload_conf()");

# --- the worker still serves, and the refused requests are counted nowhere
is(http_req($port, method => 'POST', body => json_array(log_event(), intent_event(7)))->{status},
	200, 'the worker keeps serving');
$node->safe_psql('postgres', 'SELECT machpay.flush()');
is($node->safe_psql('postgres', 'SELECT count(*) FROM machpay.debug_logs'), 1 + 10_000 + 1,
	'exactly the accepted logs are stored');

$node->stop;
done_testing();
