# Writer notifications on channel machpay_events: what machpay.ingest()
# queues is delivered at commit (a rolled-back call sends nothing), one
# payment_intent per new intent (none for a duplicate), config per changed
# profile, gateway/sdk per telemetry event with machpay.notify_telemetry,
# and the ingest summary.
use strict;
use warnings;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use MachpayTest;

my $node = machpay_node('writer_notify', conf => "machpay.notify_telemetry = on\n");

my $gw    = 'Assy4a4FcPBBhE7UkmjzJbsgAYWqFYvDgUzpvKfd67tT';
my $agent = 'DqemgU22PhGicxi7VPsiHbsFhsUPjUnGhoGeckbuzuNi';
my $token = 'AkWxNPcPofjeyBnJqaBBUtYT8asTwFtPvwYBeWHLd3W7';
my $sig   = '2ro26FjiEKN3FbWG7smxwsEDFo15CQGEiyNH6CiWYgrQHNLLVMmAB89VKxDpjnFkwaNkzeacnMje21YaBxdGjzEK';

$node->safe_psql('postgres', "INSERT INTO machpay.users (wallet_address) VALUES ('$gw')");

# Runs $sql after LISTEN in one session; returns the decoded payloads.
sub notifications
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	$node->psql('postgres', "LISTEN machpay_events;\n$sql\n", stdout => \$out, stderr => \$err);
	my @payloads;
	for my $line (split /\n/, $out . "\n" . $err)
	{
		next unless $line =~ /^Asynchronous notification "machpay_events" with payload "(.*)" received from server process/;
		cmp_ok(length($1), '<', 8000, 'payload under the NOTIFY limit');
		push @payloads, decode_json($1);
	}
	return @payloads;
}

my $intent = qq{jsonb_build_object('source', 'payment_intent', 'gateway_id', '$gw', 'agent_id', '$agent',
	'token', '$token', 'signature', '$sig', 'nonce', '18446744073709551615', 'amount', 5000)};

# A rolled-back call notifies nothing.
my @n = notifications("BEGIN; SELECT machpay.ingest($intent); ROLLBACK;");
is(scalar(@n), 0, 'rolled back: no notification');

# Two of the same intent in one call: one payment_intent notification.
my ($resp, @rest) = ('');
{
	my ($out, $err) = ('', '');
	$node->psql('postgres', "LISTEN machpay_events;\nSELECT machpay.ingest(jsonb_build_array($intent, $intent));\n",
		stdout => \$out, stderr => \$err);
	($resp) = $out =~ /^(\{.*\})$/m;
	@n = map { /with payload "(.*)" received/ ? decode_json($1) : () } split /\n/, $out;
}
my $body = decode_json($resp);
my @pi = grep { $_->{type} eq 'payment_intent' } @n;
is(scalar(@pi), 1, 'one payment_intent notification for a new intent and its duplicate');
is($pi[0]{id}, $body->{intents}[0]{id}, 'notification carries the stored id');
is($pi[0]{nonce}, '18446744073709551615', 'nonce exact');
is($pi[0]{amount}, '5000', 'amount');
is($pi[0]{gateway_id}, $gw, 'gateway_id');
is($pi[0]{agent_id}, $agent, 'agent_id');
is($pi[0]{token}, $token, 'token');
is($pi[0]{status}, 'PENDING', 'status');
like($pi[0]{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/, 'created_at is ISO 8601');
my ($ing) = grep { $_->{type} eq 'ingest' } @n;
is($ing->{origin}, 'sql', 'ingest summary origin');
is($ing->{rows}{payment_intents}, 1, 'summary: one intent row');
is($ing->{events}{payment_intent}, 2, 'summary: two intent events');
is($ing->{intents_duplicate}, 1, 'summary: one duplicate');

# A retry in a later call: no payment_intent notification.
@n = notifications("SELECT machpay.ingest($intent);");
is(scalar(grep { $_->{type} eq 'payment_intent' } @n), 0, 'retry: no payment_intent notification');

# Telemetry and config.
my $now = "extract(epoch FROM now())::bigint";
@n = notifications(qq{SELECT machpay.ingest(jsonb_build_object('source', 'gateway', 'gateway_id', '$gw',
	'period_start', $now - 60, 'period_end', $now,
	'config', jsonb_build_object('price_per_unit', 7000, 'version', 'v9'),
	'system', jsonb_build_object('cpu_usage_percent', 1, 'ram_usage_mb', 2)));});
my ($tel) = grep { $_->{type} eq 'gateway' } @n;
is($tel->{entity_id}, $gw, 'gateway notification entity');
is($tel->{rows}, 2, 'gateway notification rows');
my ($cfg) = grep { $_->{type} eq 'config' } @n;
is($cfg->{gateway_id}, $gw, 'config notification gateway');
is_deeply($cfg->{changed}, { base_price_atomic => '7000', config_version => 'v9' }, 'config notification changed fields');
($ing) = grep { $_->{type} eq 'ingest' } @n;
is($ing->{rows}{metrics}, 2, 'summary: metric rows');
is($ing->{events}{gateway}, 1, 'summary: gateway events');

# The same config again changes nothing: no config notification.
@n = notifications(qq{SELECT machpay.ingest(jsonb_build_object('source', 'gateway', 'gateway_id', '$gw',
	'period_start', $now - 30, 'period_end', $now + 1,
	'config', jsonb_build_object('price_per_unit', 7000, 'version', 'v9')));});
is(scalar(grep { $_->{type} eq 'config' } @n), 0, 'unchanged config: no notification');

# A changed value too large for NOTIFY: the field names and a reference.
@n = notifications(qq{SELECT machpay.ingest(jsonb_build_object('source', 'gateway', 'gateway_id', '$gw',
	'period_start', $now - 20, 'period_end', $now + 2,
	'config', jsonb_build_object('version', repeat('v', 9000))));});
($cfg) = grep { $_->{type} eq 'config' } @n;
is_deeply($cfg->{changed}, ['config_version'], 'oversized config change: names only');
is($cfg->{ref}, 'machpay.vendor_profiles', 'oversized config change: a reference to the row');
is($node->safe_psql('postgres', qq{SELECT length(config_version) FROM machpay.vendor_profiles p
	JOIN machpay.users u ON u.id = p.user_id WHERE u.wallet_address = '$gw'}), '9000', 'the value itself is stored whole');

# Without machpay.notify_telemetry: no gateway notification.
$node->safe_psql('postgres', 'ALTER SYSTEM SET machpay.notify_telemetry = off; SELECT pg_reload_conf()');
$node->poll_query_until('postgres', "SELECT current_setting('machpay.notify_telemetry') = 'off'");
@n = notifications(qq{SELECT machpay.ingest(jsonb_build_object('source', 'gateway', 'gateway_id', '$gw',
	'period_start', $now - 60, 'period_end', $now,
	'system', jsonb_build_object('cpu_usage_percent', 1)));});
is(scalar(grep { $_->{type} eq 'gateway' } @n), 0, 'notify_telemetry off: no gateway notification');
is(scalar(grep { $_->{type} eq 'ingest' } @n), 1, 'notify_telemetry off: the ingest summary still');

$node->stop;
done_testing();
