# Two sessions writing the same new series and the same payment intent at
# once: the second waits for the first, then reuses its series ids and gets
# its intent id back as a duplicate (no error, no double series, no orphan
# points).
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;

my $node = machpay_node('writer_concurrency');

my $gw  = 'Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT';
my $ag  = 'DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi';
my $sig = '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK';
my $payload = qq{jsonb_build_array(
	jsonb_build_object('source', 'gateway', 'gateway_id', '$gw',
		'period_start', extract(epoch FROM now())::bigint - 60, 'period_end', extract(epoch FROM now())::bigint,
		'system', jsonb_build_object('cpu_usage_percent', 1, 'ram_usage_mb', 2, 'goroutines', 3)),
	jsonb_build_object('source', 'payment_intent', 'gateway_id', '$gw', 'agent_id', '$ag',
		'token', '$ag', 'signature', '$sig', 'nonce', 42, 'amount', 7))::jsonb};

my $s1 = $node->background_psql('postgres');
my $s2 = $node->background_psql('postgres');

$s1->query_safe('BEGIN');
my $r1 = decode_json($s1->query_safe("SELECT machpay.ingest($payload)::text"));
is($r1->{intents}[0]{duplicate}, JSON::PP::false, 'first session: new intent');

# The second session blocks on the first one's uncommitted series.
$s2->query_until(qr/started\n/, "\\echo started\nSELECT machpay.ingest($payload)::text;\n");
$node->poll_query_until('postgres',
	"SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%machpay.ingest%'")
  or die 'second session never waited';
$s1->query_safe('COMMIT');

my $out = $s2->query_safe("SELECT 'done'");
my ($json) = $out =~ /^(\{.*\})$/m;
my $r2 = decode_json($json);
is($r2->{accepted}, 2, 'second session: both events accepted');
is($r2->{intents}[0]{duplicate}, JSON::PP::true, 'second session: duplicate intent');
is($r2->{intents}[0]{id}, $r1->{intents}[0]{id}, 'second session: the first id');

is($node->safe_psql('postgres', "SELECT count(*) FROM machpay.metric_series WHERE entity_id = '$gw'"),
	'3', 'one series per metric');
is($node->safe_psql('postgres', "SELECT count(*) FROM machpay.metrics WHERE entity_id = '$gw'"),
	'6', 'both sessions stored their points');
is($node->safe_psql('postgres', "SELECT count(*) FROM machpay.payment_intents WHERE gateway_id = '$gw'"),
	'1', 'the intent is stored once');

$s1->quit;
$s2->quit;
$node->stop;
done_testing();
