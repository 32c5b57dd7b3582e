#!/usr/bin/env bash
# Memory of the ingest workers and the flusher under steady load (issue 3):
# h2load offers RATE events/s (about 80% of the peak) for SECONDS; every
# INTERVAL seconds VmRSS and RssAnon of each ingest worker and of the
# flusher are read from /proc/<pid>/status.  VmRSS includes the shared
# memory a process has touched (shared_buffers, the row buffer), which
# grows until every page was touched once; RssAnon is private memory, where
# a leak would show.  Prints every sample, then first (after the first
# interval, when the load runs), last and max per process, and the change
# last vs first.  Bar: within +-5%.
# Usage: bench/http_rss.sh RATE_EVENTS_PER_S [SECONDS=600] [INTERVAL=10] [EVENTS=10] [PROTO=h1]
#   env: WORKERS, BUFFER, BATCH.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:?usage: http_rss.sh RATE_EVENTS_PER_S [SECONDS] [INTERVAL] [EVENTS] [PROTO]}
secs=${2:-600}
interval=${3:-10}
n=${4:-10}
proto=${5:-h1}
conns=32
. bench/http_lib.sh
http_setup "$n"

mapfile -t procs < <(pg_procs | awk '$2 == "ingest" || $2 == "flusher"')
kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
echo "# http_rss: $proto $n events/request at $rate events/s for ${secs}s, sampled every ${interval}s, http_workers=$WORKERS buffer_size=$BUFFER batch_size=$BATCH, $(nproc) cores, $(date -u +%FT%TZ)"
printf '%6s' t_s
for p in "${procs[@]}"; do set -- $p; printf ' %22s %22s' "$2:$1:VmRSS_kB" "$2:$1:RssAnon_kB"; done; echo
log="$out/rss.log"
h2load_start "$proto" "$n" "$secs" "$conns" "$(calc "$rate / $n / $conns" 3)" "$log"
: > "$out/rss.samples"
t0=$(date +%s)
while kill -0 "$h2pid" 2>/dev/null; do
  line=$(( $(date +%s) - t0 ))
  for p in "${procs[@]}"; do set -- $p; line+=" $(kb "$1" VmRSS) $(kb "$1" RssAnon)"; done
  echo "$line" >> "$out/rss.samples"
  set -- $line; printf '%6s' "$1"; shift; printf ' %22s' "$@"; echo
  sleep "$interval"
done
wait "$h2pid" || true
read -r n202 n429 nother p50 p99 <<< "$(log_stats "$log")"
echo "# requests: ${n202} x 202 ($(calc "$n202 * $n / $secs") events/s), $n429 x 429, $nother other; p50 ${p50} ms, p99 ${p99} ms"
# Column 1 is time; then rss, anon per process.  Row 2 = first sample under load.
printf '%-24s %10s %10s %10s %8s %10s %10s %10s %8s\n' process rss_first rss_last rss_max change anon_first anon_last anon_max change
i=0
for p in "${procs[@]}"; do
  set -- $p
  awk -v c=$((2 + 2 * i)) -v name="$2 $1" 'NR == 2 { f = $c; fa = $(c + 1) }
    NR >= 2 { l = $c; la = $(c + 1); if ($c > m) m = $c; if ($(c + 1) > ma) ma = $(c + 1) }
    END { printf "%-24s %10d %10d %10d %7.1f%% %10d %10d %10d %7.1f%%\n", name, f, l, m, 100 * (l - f) / f, fa, la, ma, 100 * (la - fa) / fa }' "$out/rss.samples"
  i=$((i + 1))
done
