#!/usr/bin/env bash
# Where the time goes at peak (issue 3): h2load offers RATE events/s
# (0 = unlimited, 32 connections), and after WARMUP seconds `perf record -g`
# samples the ingest workers and the flusher for SECONDS.  Prints for each
# the top symbols by self time (flat) and by time including callees.
# Usage: bench/http_profile.sh [RATE=0] [SECONDS=20] [EVENTS=10] [PROTO=h1]
#   env: WARMUP (default 5), TOP (lines per table, default 25), WORKERS, BUFFER, BATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-0}
secs=${2:-20}
n=${3:-10}
proto=${4:-h1}
WARMUP=${WARMUP:-5}
TOP=${TOP:-25}
. bench/http_lib.sh
command -v perf >/dev/null || { echo "perf missing" >&2; exit 1; }
http_setup "$n"

rps=0; [ "$rate" != 0 ] && rps=$(calc "$rate / $n / 32" 3)
log="$out/profile.log"
h2load_start "$proto" "$n" "$((secs + WARMUP + 2))" 32 "$rps" "$log"
sleep "$WARMUP"
ingest=$(pg_procs | awk '$2 == "ingest" { print $1 }' | paste -sd,)
flusher=$(pg_procs | awk '$2 == "flusher" { print $1 }' | paste -sd,)
perf record -q -g -o "$out/perf.ingest" -p "$ingest" -- sleep "$secs" 2>/dev/null &
p1=$!
perf record -q -g -o "$out/perf.flusher" -p "$flusher" -- sleep "$secs" 2>/dev/null &
p2=$!
wait "$p1" "$p2" || true
wait "$h2pid" || true
read -r n202 n429 nother p50 p99 <<< "$(log_stats "$log")"
echo "# http_profile: $proto $n events/request, offered $([ "$rate" = 0 ] && echo unlimited || echo "$rate events/s"), perf ${secs}s after ${WARMUP}s, http_workers=$WORKERS, $(date -u +%FT%TZ)"
echo "# h2load: $n202 x 202, $n429 x 429, $nother other over $((secs + WARMUP + 2))s"
for who in ingest flusher; do
  echo "## $who: top symbols, self time"
  perf report -i "$out/perf.$who" --stdio --no-children -g none --sort dso,symbol --percent-limit 0.5 2>/dev/null |
    grep -v "^#" | grep -v "^$" | sed "s/ *- *- *$//" | head -"$TOP"
  echo "## $who: top symbols, including callees"
  perf report -i "$out/perf.$who" --stdio --children -g none --sort symbol --percent-limit 2 2>/dev/null |
    grep -v "^#" | grep -v "^$" | sed "s/ *- *- *$//" |
    grep -v -e '\] 0x[0-9a-f]*$' -e '\] 0*$' -e '__restore_rt$' -e 'StartBackgroundWorker$' | head -"$TOP"
done
