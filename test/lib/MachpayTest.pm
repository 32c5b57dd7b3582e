# MachpayTest: helpers shared by the TAP tests of machpay_receiver.
#
# machpay_node() gives a started cluster that preloads the library, with
# free ports for the ingest and SSE servers, and the extension created in
# the workers' database (postgres).
#
# Every test file uses this module, so every test file has a deadline: an
# alarm that fails the file with a message instead of letting it stall the
# suite (MACHPAY_TEST_DEADLINE seconds, 600 by default; a file may ask for
# another with machpay_deadline($seconds)).
package MachpayTest;

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More ();
use Time::HiRes ();
use Exporter 'import';

our @EXPORT = qw(machpay_node machpay_create_extension machpay_deadline machpay_tool machpay_revoked_within);

# Arms (or re-arms) the file's deadline.
sub machpay_deadline
{
	my ($seconds) = @_;
	$SIG{ALRM} = sub {
		Test::More::diag("$0: deadline of $seconds s passed; the test file is stopped");
		die "$0: deadline of $seconds s passed\n";
	};
	alarm($seconds);
}

machpay_deadline($ENV{MACHPAY_TEST_DEADLINE} // 600);

# SPEC §6: a key stops working within $limit seconds of its revocation's
# commit, on every worker.  $t0 is a time (Time::HiRes) taken after the
# commit returned; $probe->() makes one request with the key on a new
# connection (so requests spread over the workers) and returns its status.
# Probes run back to back; every probe that starts later than $limit after
# $t0 must be refused (401), and 20 of them are made.  Returns (ok, what
# happened).
sub machpay_revoked_within
{
	my ($t0, $limit, $probe) = @_;
	my ($after, $first_refused) = (0, undef);
	while (1)
	{
		my $start = Time::HiRes::time() - $t0;
		my $st = $probe->() // 'no answer';
		$first_refused //= $start if $st eq '401';
		if ($start > $limit)
		{
			return (0, sprintf('a request %.3f s after the commit got %s', $start, $st))
			  if $st ne '401';
			return (1, sprintf('first refused %.3f s after the commit; the %d requests after %.1f s were all refused',
					$first_refused, $after, $limit))
			  if ++$after >= 20;
		}
		else
		{
			Time::HiRes::sleep(0.02);
		}
	}
}

# The path of a program some tests need (the first of @names found in
# PATH), or undef.  Under `make test` (MACHPAY_REQUIRE_TOOLS=1) a missing
# program is a failed test, not a silent skip: scripts/deps.sh installs it.
sub machpay_tool
{
	my (@names) = @_;
	for my $dir (split /:/, $ENV{PATH} // '')
	{
		for my $n (@names)
		{
			return "$dir/$n" if -x "$dir/$n";
		}
	}
	Test::More::fail("$names[0] is installed (scripts/deps.sh installs it)")
	  if $ENV{MACHPAY_REQUIRE_TOOLS};
	return undef;
}

# The supported setup (README): pg_partman in a schema of its own, which
# only superusers may create in, then the extension.
sub machpay_create_extension
{
	my ($node, $db) = @_;
	$node->safe_psql($db, q{
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS partman;
CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;
CREATE EXTENSION machpay_receiver;
});
}

# machpay_node($name, conf => "extra lines", create_extension => 1)
sub machpay_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opts{allows_streaming} // 0);
	my $http_port = PostgreSQL::Test::Cluster::get_free_port();
	my $sse_port = PostgreSQL::Test::Cluster::get_free_port();
	$node->append_conf('postgresql.conf', <<"EOC");
shared_preload_libraries = 'machpay_receiver'
machpay.database = 'postgres'
machpay.port = $http_port
machpay.sse_port = $sse_port
log_min_messages = info
# One telemetry writer whatever the machine's cores (tests that count or
# block "the flusher" rely on it); a test that wants more says so.
machpay.flush_workers = 1
EOC
	$node->append_conf('postgresql.conf', $opts{conf}) if $opts{conf};
	$node->start;
	if ($opts{create_extension} // 1)
	{
		machpay_create_extension($node, 'postgres');
	}
	$node->{machpay_http_port} = $http_port;
	$node->{machpay_sse_port} = $sse_port;
	return $node;
}

1;
