#!/usr/bin/perl
# Generates realistic MachPay telemetry: gateway reports (4 routes, the
# seed's sections) and SDK reports (3 vendors), with valid base58 ids.
# Usage: gen_events.pl EVENTS [GATEWAYS] [AGENTS] [PER_LINE] > out
#   Writes one JSON array of PER_LINE events per line (PER_LINE=1: NDJSON).
#   Times are the last minutes before now, so they pass validation.
use strict;
use warnings;

my ($events, $ngw, $nag, $per_line) = @ARGV;
$events //= 10000; $ngw //= 200; $nag //= 200; $per_line //= 100;
srand(42);

my @alphabet = split //, '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';
sub base58_32 {
	my @bytes = map { int(rand(256)) } 1 .. 32;
	$bytes[0] ||= 1;
	my @digits = (0);
	for my $b (@bytes) {
		my $carry = $b;
		for my $i (0 .. $#digits) {
			$carry += $digits[$i] * 256;
			$digits[$i] = $carry % 58;
			$carry = int($carry / 58);
		}
		while ($carry) { push @digits, $carry % 58; $carry = int($carry / 58); }
	}
	return join '', map { $alphabet[$_] } reverse @digits;
}

my @gateways = map { base58_32() } 1 .. $ngw;
my @agents = map { base58_32() } 1 .. $nag;
my @routes = ('/chat', '/image', '/embed', '/search');
my @vendors = ('Vendor_A', 'Vendor_B', 'Vendor_C');
my $now = time();

sub gateway_event {
	my ($i) = @_;
	my $end = $now - 60 * int($i / @gateways) % 3600 - 1;
	my $routes = join ',', map {
		sprintf('"%s":{"200":%d,"402":%d,"500":%d,"latency_p99":%d}', $_,
			int(rand(1000)), int(rand(100)), int(rand(5)), int(rand(500)))
	} @routes;
	return sprintf('{"source":"gateway","gateway_id":"%s","period_start":%d,"period_end":%d,'
		. '"system":{"cpu_usage_percent":%.1f,"ram_usage_mb":%d,"goroutines":%d,"gc_pause_ns":%d,"uptime_seconds":%d},'
		. '"network":{"bytes_in":%d,"bytes_out":%d,"active_connections":%d},'
		. '"business":{"total_revenue":%d,"routes":{%s},"solvency_rejects":%d,"replay_attacks_blocked":%d,"signature_failures":%d}}',
		$gateways[$i % @gateways], $end - 60, $end, rand(100), int(rand(4096)), int(rand(1000)),
		int(rand(100000)), int(rand(1e6)), int(rand(1e9)), int(rand(1e9)), int(rand(500)),
		int(rand(1e6)), $routes, int(rand(20)), int(rand(10)), int(rand(5)));
}

sub sdk_event {
	my ($i) = @_;
	my $end = $now - 60 * int($i / @agents) % 3600 - 1;
	my $inter = join ',', map {
		sprintf('"%s":{"attempts":%d,"success":%d,"payment_latency_p99":%d,"vendor_latency_p99":%d,'
			. '"errors":{"timeout":%d,"402_loop_failed":%d},"spend_atomic":%d}', $_,
			int(rand(100)), int(rand(100)), int(rand(300)), int(rand(600)), int(rand(3)), int(rand(3)), int(rand(1e5)))
	} @vendors;
	return sprintf('{"source":"sdk","agent_id":"%s","period_start":%d,"period_end":%d,'
		. '"wallet":{"sol_balance_lamports":%d,"usdc_balance_atomic":%d,"low_balance_warnings":%d},'
		. '"interactions":{%s}}',
		$agents[$i % @agents], $end - 60, $end, int(rand(1e9)), int(rand(1e7)), int(rand(2)), $inter);
}

my @line;
for my $i (0 .. $events - 1) {
	push @line, ($i % 2 == 0) ? gateway_event($i / 2) : sdk_event(($i - 1) / 2);
	if (@line == $per_line || $i == $events - 1) {
		print $per_line == 1 ? "$line[0]\n" : '[' . join(',', @line) . "]\n";
		@line = ();
	}
}
