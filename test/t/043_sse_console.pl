# SSE console page (GET /) in a real browser: Debian's chromium, headless,
# driven through the DevTools protocol.  The page connects with the
# access_token of its own URL, shows the events NOTIFYed afterwards, and
# reconnects by itself after a server restart.  A screenshot is kept as
# tmp_check/log/043_sse_console.png.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time);
use MachpayTest;
use SseTest;
use CdpClient;

my $chromium = machpay_tool('chromium', 'chromium-browser');
if (!$chromium)
{
	# Under make test machpay_tool has failed a test already.
	plan skip_all => 'chromium is not installed (scripts/deps.sh installs it)'
	  unless $ENV{MACHPAY_REQUIRE_TOOLS};
	done_testing();
	exit;
}

my $node = sse_node('sse_console');
my $port = $node->{machpay_sse_port};

my $tmp = PostgreSQL::Test::Utils::tempdir();
my $dbg = PostgreSQL::Test::Cluster::get_free_port();
my $url = "http://127.0.0.1:$port/?access_token=console-token";
my $browser = IPC::Run::start(
	[
		$chromium, '--headless', '--no-sandbox', '--disable-gpu',
		'--disable-background-networking', '--disable-component-update',
		'--disable-sync', '--no-first-run', "--user-data-dir=$tmp/profile",
		"--remote-debugging-port=$dbg", '--window-size=1400,1000', $url
	],
	'<', \undef, '>', "$tmp/chromium.out", '2>', "$tmp/chromium.err");

my $cdp = CdpClient->connect($dbg, qr/\Q127.0.0.1:$port\E/, 60);
ok($cdp, 'DevTools connected to the console page');

sub wait_js
{
	my ($expr, $timeout) = @_;
	my $deadline = time() + ($timeout // 30);
	while (time() < $deadline)
	{
		my $v = eval { $cdp->eval($expr) };
		return $v if $v;
		select(undef, undef, undef, 0.25);
	}
	return undef;
}

ok(wait_js(q{document.getElementById('status-text').textContent === 'live'}),
	'page connected to the stream with the access_token of its URL');

my $gw = '7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU';
my $agent = 'HN7cABqLq46Es1jh92dQQisAq662SmxELLLsHHe4YWrH';
$node->safe_psql('postgres', qq{
	SELECT machpay.notify_event(jsonb_build_object('type', 'payment_intent',
		'id', 'b3f1c1de-0000-4000-8000-00000000000' || g, 'gateway_id', '$gw', 'agent_id', '$agent',
		'nonce', g::text, 'amount', (123456789 * g)::text, 'token', 'So11111111111111111111111111111111111111112',
		'status', 'PENDING', 'created_at', now()))
	FROM generate_series(1, 3) g;
	SELECT machpay.notify_event('{"type":"ingest","origin":"http","rows":{"metrics":20,"debug_logs":2,"payment_intents":3,"ingest_rejects":1},"events":{"gateway":1,"sdk":0,"payment_intent":3,"log":2},"intents_duplicate":0}');
	SELECT machpay.notify_event('{"type":"job","job":"maintenance","status":"failed","rows":0,"error":"archive directory missing"}');
	SELECT machpay.notify_event('{"type":"gateway","entity_id":"GatewayTelemetry1111111111111111111111111"}');
});

ok(wait_js(q{document.getElementById('intents').tBodies[0].rows.length === 3}),
	'three payment intents shown');
my $intents = $cdp->eval(q{document.getElementById('intents').innerText});
like($intents, qr/370370367/, 'intent amount shown exactly');
like($cdp->eval(q{document.getElementById('jobs').innerText}), qr/maintenance\s+failed/,
	'job run shown with its status');
like($cdp->eval(q{document.getElementById('jobs').innerText}), qr/archive directory missing/,
	'job error shown');
# Tiles and the gateway list are redrawn once a second.
ok(wait_js(q{document.getElementById('total').textContent === '6'}, 10), 'event counter');
ok(wait_js(q{document.getElementById('gateways').tBodies[0].rows.length === 2}, 10),
	'two gateways seen in the last minute');
my $gws = $cdp->eval(q{document.getElementById('gateways').innerText});
like($gws, qr/\Q$gw\E/, 'gateway of the intents listed as seen in the last minute');
like($gws, qr/GatewayTelemetry1111/, 'gateway telemetry event listed');
# Rates are averaged over the last 5 s: a summary sent just before the
# check is inside that window however long the waits above took.
sub rate_shown
{
	my ($id) = @_;
	for (1 .. 10)
	{
		$node->safe_psql('postgres', q{
			SELECT machpay.notify_event('{"type":"ingest","origin":"http","rows":{"metrics":20,"debug_logs":2,"payment_intents":0,"ingest_rejects":0},"events":{"gateway":1,"sdk":0,"payment_intent":0,"log":2},"intents_duplicate":0}')});
		return 1 if wait_js(qq{Number(document.getElementById('$id').textContent) > 0}, 3);
	}
	return 0;
}
ok(rate_shown('rps'), 'rows/s computed from the ingest summary');
ok(rate_shown('eps'), 'events/s computed from the ingest summary');

my $shot = "$PostgreSQL::Test::Utils::log_path/043_sse_console.png";
ok($cdp->screenshot($shot) > 10000, "screenshot kept: $shot");

# The page reconnects by itself after the relay went away.
$node->restart;
ok(sse_wait_ready($node, 'console-token'), 'relay back after restart');
ok(wait_js(q{document.getElementById('status-text').textContent === 'live'}, 60),
	'page reconnected by itself');
$node->safe_psql('postgres', q{
	SELECT machpay.notify_event('{"type":"job","job":"rollup","status":"succeeded","rows":42}')});
ok(wait_js(q{document.getElementById('jobs').innerText.includes('rollup')}, 30),
	'events after the restart shown');
$cdp->screenshot("$PostgreSQL::Test::Utils::log_path/043_sse_console_after_restart.png");

$browser->kill_kill;
$node->stop;
done_testing();
