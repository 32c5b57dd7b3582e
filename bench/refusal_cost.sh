#!/usr/bin/env bash
# The ingest worker's CPU per refused request (issue 8: bar 10 us): an
# open-loop flood (bench/flood_load.c) of RATE requests/s with a key the
# server does not know, so every request is answered 401 at its headers,
# each carrying a body of BODY_KB kB that the client sends as far as the
# protocol lets it (HTTP/1.1: the whole request is written at once;
# HTTP/2: DATA within the stream window the server gave).  Per run: ingest
# worker utime + stime over a SECONDS window after WARMUP, divided by the
# requests answered in it, and the requests that were not answered 401.
# Runs alternate protocols REPEAT times, so a busy neighbour spreads over
# both.
# Usage: bench/refusal_cost.sh [RATE=5000] [SECONDS=10] [REPEAT=3] [PROTOS="h1 h2"] [BODY_KB=30]
#   env: WARMUP (2 s), CONNS (64, HTTP/1.1), H2_CONNS (8), WORKERS, BUFFER, BATCH;
#        PERF=1: perf record -g of the ingest worker in the first run of
#        each protocol, top symbols printed ($out/perf_<proto>.data).
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-5000}
secs=${2:-10}
repeat=${3:-3}
protos=${4:-"h1 h2"}
body_kb=${5:-30}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
H2_CONNS=${H2_CONNS:-8}
. bench/http_lib.sh
client="$out/flood_load"
cc -O2 -Wall -o "$client" bench/flood_load.c -lnghttp2 ||
  { echo "flood_load needs libnghttp2-dev" >&2; exit 1; }
http_setup 1
body="$out/body_${body_kb}k.json"
perl -e 'my $n = shift; my $s = "[" . ("{\"x\":1}," x int($n * 1024 / 8)); chop $s; print "$s]"' \
  "$body_kb" > "$body"
chmod a+r "$body"

echo "# refusal_cost: $rate req/s with an unknown key, $(wc -c < "$body")-byte bodies, ${secs}s (+${WARMUP}s warm-up) per run, h1: $CONNS connections, h2: $H2_CONNS, http_workers=$WORKERS, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
printf '%-5s %4s %9s %9s %8s %9s %7s %s\n' prot run answered not_401 ingest_s us/request c_clnt loadavg
for i in $(seq 1 "$repeat"); do
  for proto in $protos; do
    c=$CONNS; [ "$proto" = h2 ] && c=$H2_CONNS
    log="$out/refusal_${proto}_$i.log"
    "$client" "$proto" "$BENCH_HTTP_PORT" not-a-key "$body" "$rate" \
      "$((secs + WARMUP + 1))" "$c" "$log" > "$log.txt" &
    pid=$!
    sleep "$WARMUP"
    t0=$(now_us); cpu_snapshot > "$out/cpu.a"
    if [ "${PERF:-0}" = 1 ] && [ "$i" = 1 ]; then
      perf record -q -g -o "$out/perf_$proto.data" \
        -p "$(pg_procs | awk '$2 == "ingest" { print $1; exit }')" -- sleep "$secs" 2>/dev/null
    else
      sleep "$secs"
    fi
    t1=$(now_us); cpu_snapshot > "$out/cpu.b"
    wait "$pid" || true
    read -r ci _ _ _ <<< "$(cpu_diff "$out/cpu.a" "$out/cpu.b")"
    read -r total not401 <<< "$(awk -v f="$t0" -v t="$t1" '$1 >= f && $1 <= t { n++; if ($2 != 401) o++ }
      END { printf "%d %d", n, o }' "$log")"
    cc=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "in") t = $(i + 1); c = $(NF - 1) }
      END { printf "%.2f", (t > 0) ? c / t : 0 }' "$log.txt")
    printf '%-5s %4d %9d %9d %8.2f %9.1f %7s %s\n' "$proto" "$i" "$total" "$not401" "$ci" \
      "$(calc "1e6 * $ci / ($total > 0 ? $total : 1)" 1)" "$cc" "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
echo "# us/request = ingest worker CPU (utime + stime, /proc/<pid>/stat) / requests due in the window; not_401 = those not answered 401 (0 = connection lost, -1 = never sent)."
if [ "${PERF:-0}" = 1 ]; then
  for proto in $protos; do
    echo "# perf, ingest worker, $proto (self time):"
    perf report -q -i "$out/perf_$proto.data" --no-children --percent-limit 1.5 --stdio -g none 2>/dev/null |
      sed 's/^/#   /' | head -40
  done
fi
awk '/^machpay_http_connections_closed_total/ && $NF > 0' <(curl -s "http://127.0.0.1:$BENCH_HTTP_PORT/metrics") | sed 's/^/# /'
