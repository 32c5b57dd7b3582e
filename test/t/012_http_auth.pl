# Keys on the ingest port: 401 without, with an unknown or a revoked key;
# 403 for a console key; a key bound to an entity rejects other entities'
# events; a revocation is in force within a second on every worker (two
# here), new keys reach the workers; machpay.auth = off applies on reload.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);
use MachpayTest;
use MachpayHttp;

my $node = machpay_node('http_auth', conf => "machpay.http_workers = 2\n");
my $port = $node->{machpay_http_port};
ok(wait_ready($port), 'server ready');
ok($node->poll_query_until('postgres',
	q{SELECT count(*) = 2 FROM pg_stat_activity WHERE backend_type = 'machpay ingest'}),
	'two ingest workers');

# Keys through the SQL API only.
sub new_key
{
	my ($entity, $role) = @_;
	return $node->safe_psql('postgres', "SELECT machpay.create_ingest_key('$entity', '$role')");
}
sub revoke_key
{
	my ($token) = @_;
	is($node->safe_psql('postgres', "SELECT machpay.revoke_ingest_key('$token')"), 't',
		'revoke_ingest_key finds the key');
}

# Poll until the answer has the wanted status; returns seconds taken or undef.
sub poll_status
{
	my ($want, %o) = @_;
	my $t0 = time;
	while (time - $t0 < 10)
	{
		return time - $t0 if http_req($port, method => 'POST', %o)->{status} == $want;
		sleep 0.05;
	}
	return undef;
}

my $any = new_key('*', 'ingest');
my $bound = new_key($GATEWAY_ID, 'ingest');
my $console = new_key('*', 'console');

my $took = poll_status(202, token => $any, body => gateway_event());
ok(defined $took, 'a new key is accepted');
# Created last: once it is known, so are the keys made before it.
ok(defined poll_status(403, token => $console, body => gateway_event()), 'a new console key is known');

for my $h2 (0, 1)
{
	my $p = $h2 ? 'h2' : 'h1';
	my %o = (http2 => $h2, method => 'POST');
	is(http_req($port, %o, body => gateway_event())->{status}, 401, "$p: no key 401");
	is(http_req($port, %o, headers => ['Authorization: Basic Zm9vOmJhcg=='],
		body => gateway_event())->{status}, 401, "$p: not a bearer token 401");
	is(http_req($port, %o, token => 'not-a-key', body => gateway_event())->{status},
		401, "$p: unknown key 401");
	my $r = http_req($port, %o, token => $console, body => gateway_event());
	is($r->{status}, 403, "$p: console key 403");
	like($r->{body}, qr/"error":"forbidden"/, "$p: 403 body is JSON");
	is(http_req($port, %o, token => $any, body => gateway_event())->{status}, 202,
		"$p: wildcard key 202");
	is(http_req($port, %o, token => $bound, body => gateway_event($GATEWAY_ID))->{status}, 202,
		"$p: bound key, own entity 202");
	$r = http_req($port, %o, token => $bound, body => gateway_event($OTHER_ID));
	is($r->{status}, 422, "$p: bound key, other entity 422");
	like($r->{body}, qr/"code":"entity_not_allowed"/, "$p: entity_not_allowed listed");
	$r = http_req($port, %o, token => $bound,
		body => json_array(gateway_event($GATEWAY_ID), gateway_event($OTHER_ID)));
	is($r->{status}, 202, "$p: mixed entities 202");
	like($r->{body}, qr/"accepted":1,"rejected":1/, "$p: the other entity's event rejected");
}

# Revocation: poll until the worker refuses the key.
is(http_req($port, method => 'POST', token => $bound, body => gateway_event())->{status}, 202,
	'bound key works before revocation');
revoke_key($bound);
{
	my ($ok, $what) = machpay_revoked_within(time, 1.0,
		sub { http_req($port, method => 'POST', token => $bound, body => gateway_event())->{status} });
	ok($ok, "a revoked key is refused within 1 s on every worker ($what)");
}
is(http_req($port, method => 'POST', http2 => 1, token => $bound, body => gateway_event())->{status},
	401, 'revoked over HTTP/2 too');
is(http_req($port, method => 'POST', token => $any, body => gateway_event())->{status}, 202,
	'other keys still work');

# machpay.auth = off on reload.
$node->safe_psql('postgres', 'ALTER SYSTEM SET machpay.auth = off; SELECT pg_reload_conf()');
ok(defined poll_status(202, body => gateway_event()), 'auth off: no key needed after reload');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET machpay.auth; SELECT pg_reload_conf()');
ok(defined poll_status(401, body => gateway_event()), 'auth back on after reload');

# The ops endpoints need no key.
is(http_req($port, path => '/metrics')->{status}, 200, 'metrics without a key');
is(http_req($port, path => '/readyz')->{status}, 200, 'readyz without a key');

$node->stop;
done_testing();
