#!/usr/bin/env bash
# Soak (issue 9): MINUTES of mixed load on one cluster, then the books.
# Telemetry at 80% of the knee (h2load, gateway bodies of 10 events),
# payment intents at INTENT_RATE/s (intent_load, one nonce each), SSE_CLIENTS
# console clients on the stream, rollup and maintenance every minute, and
# every KILL_EVERY seconds a kill -9 of one machpay worker picked at random
# (ingest, telemetry or intent writer, SSE relay or maintenance: the postmaster restarts the
# cluster, so the unflushed buffer is lost, as SPEC §7 allows after a crash).
# The load generators do not reconnect after a crash restart, so they run
# in segments of SEGMENT seconds.  VmRSS and RssAnon of every machpay worker
# are sampled every INTERVAL seconds.  At the end it prints:
#   - intents: answered 200, stored, 200'd but not stored, stored twice;
#   - telemetry events: 202'd, stored, counted as dropped (events_dropped,
#     summed over the restarts), and the rest (lost in the crash restarts);
#   - job runs by job and status, SSE clients connected and events received;
#   - per worker process: RssAnon first (after its first minute) / mid / last /
#     max and whether it stayed flat (last within 5% or 2 MB of mid-life).
# Usage: bench/soak.sh [MINUTES=30]   (make soak; SOAK_MINUTES=3 make soak)
#   env: KNEE (events/s, default 21112, bench/README.md), INTENT_RATE (500),
#   SSE_CLIENTS (200), KILL_EVERY (300), SEGMENT (60), INTERVAL (10),
#   WORKERS, BUFFER, BATCH (bench/http_lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-${SOAK_MINUTES:-30}}
KNEE=${KNEE:-21112}
INTENT_RATE=${INTENT_RATE:-500}
SSE_CLIENTS=${SSE_CLIENTS:-200}
KILL_EVERY=${KILL_EVERY:-300}
SEGMENT=${SEGMENT:-60}
INTERVAL=${INTERVAL:-10}
EVENTS=10
CONNS=16
tel_rate=$(( KNEE * 8 / 10 ))
BENCH_EXTRA_CONF="machpay.rollup_interval = '1min'
machpay.maintenance_interval = '1min'
restart_after_crash = on
${BENCH_EXTRA_CONF:-}"
. bench/http_lib.sh
http_setup "$EVENTS"
console=$(bench_psql -tAc "SELECT machpay.create_ingest_key('*', 'console')")
gcc -O2 -Wall -o "$out/intent_load" bench/intent_load.c
gcc -O2 -Wall -o "$out/sse_bench_client" bench/sse_bench_client.c
rm -f "$out"/soak_*
echo "# soak: ${minutes} min, telemetry $tel_rate events/s (80% of $KNEE), intents $INTENT_RATE/s, $SSE_CLIENTS SSE clients, kill -9 every ${KILL_EVERY}s, rollup+maintenance every minute, http_workers=$WORKERS buffer_size=$BUFFER, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"

# machpay workers: "pid class", class from the process title.
workers() {
  local pm pid title
  pm=$(postmaster_pid)
  for pid in $(ps --ppid "$pm" -o pid=); do
    title=$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline") || continue
    case "$title" in
      *"machpay ingest"*) echo "$pid ingest" ;;
      *"machpay flusher"*) echo "$pid flusher" ;;
      *"machpay intent writer"*) echo "$pid intent_writer" ;;
      *"machpay sse"*|*"machpay SSE"*) echo "$pid sse" ;;
      *"machpay maintenance"*) echo "$pid maintenance" ;;
    esac
  done
}
kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status" 2>/dev/null; }
counter() { bench_psql -tAc "SELECT value FROM machpay.stat_receiver WHERE name = '$1'" 2>/dev/null || echo; }
wait_ready() {
  for _ in $(seq 1 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$BENCH_HTTP_PORT/readyz" && return 0
    sleep 0.2
  done
  return 1
}

# events_dropped lives in shared memory: a crash restart resets it.
dropped_sum=0; dropped_last=0
sample_dropped() {
  local v; v=$(counter events_dropped)
  [ -z "$v" ] && return 0
  if [ "$v" -lt "$dropped_last" ]; then dropped_sum=$(( dropped_sum + dropped_last )); fi
  dropped_last=$v
}

t_start=$(date +%s)
t_end=$(( t_start + minutes * 60 ))
next_kill=$(( t_start + KILL_EVERY ))
kills=0; seg=0
while [ "$(date +%s)" -lt "$t_end" ]; do
  seg=$((seg + 1))
  left=$(( t_end - $(date +%s) )); len=$(( left < SEGMENT ? left : SEGMENT ))
  wait_ready || { echo "server not ready" >&2; exit 1; }
  h2load_start h1 "$EVENTS" "$len" "$CONNS" "$(calc "$tel_rate / $EVENTS / $CONNS" 3)" "$out/soak_tel_$seg.log"
  bg_pids="$h2pid"
  "$out/intent_load" "$BENCH_HTTP_PORT" "$token" "$INTENT_RATE" "$len" 16 "$out/soak_int_$seg.log" \
    "$(( seg * 1000000000 ))" > "$out/soak_int_$seg.txt" 2>&1 &
  bg_pids+=" $!"
  TYPES= "$out/sse_bench_client" "$BENCH_SSE_PORT" "$console" "$SSE_CLIENTS" "$len" \
    > "$out/soak_sse_$seg.txt" 2> /dev/null &
  bg_pids+=" $!"
  seg_end=$(( $(date +%s) + len ))
  while [ "$(date +%s)" -lt "$seg_end" ]; do
    now=$(date +%s)
    while read -r pid class; do
      echo "$(( now - t_start )) $class $pid $(kb "$pid" VmRSS) $(kb "$pid" RssAnon)" >> "$out/soak_rss.samples"
    done < <(workers)
    sample_dropped
    if [ "$now" -ge "$next_kill" ] && [ "$now" -lt $(( seg_end - 10 )) ]; then
      mapfile -t ws < <(workers)
      victim=${ws[$(( RANDOM % ${#ws[@]} ))]}
      set -- $victim
      echo "# $(( now - t_start ))s: kill -9 $2 worker $1"
      kill -9 "$1"; kills=$((kills + 1))
      next_kill=$(( next_kill + KILL_EVERY ))
    fi
    sleep "$INTERVAL"
  done
  for p in $bg_pids; do wait "$p" 2>/dev/null || true; done
  bg_pids=""
done

# --- the books
wait_ready || { echo "server not ready at the end" >&2; exit 1; }
sample_dropped
bench_psql -tAc "SET statement_timeout = '120s'; SELECT machpay.flush()" >/dev/null
sample_dropped
dropped=$(( dropped_sum + dropped_last ))

acc_req=$(cat "$out"/soak_tel_*.log | awk '$2 == 202 { n++ } END { print n + 0 }')
acc_ev=$(( acc_req * EVENTS ))
tel_429=$(cat "$out"/soak_tel_*.log | awk '$2 == 429 { n++ } END { print n + 0 }')
tel_other=$(cat "$out"/soak_tel_*.log | awk '$2 != 202 && $2 != 429 { n++ } END { print n + 0 }')
stored_rows=$(points)
stored_ev=$(( stored_rows / rows_per_event ))

cat "$out"/soak_int_*.log | awk '$2 == 200 { print $4 }' > "$out/soak_ok_nonces"
int_ok=$(wc -l < "$out/soak_ok_nonces")
int_other=$(cat "$out"/soak_int_*.log | awk '$2 != 200 { s[$2]++ } END { for (k in s) printf "%s:%d ", k, s[k] }')
chmod a+r "$out/soak_ok_nonces"
read -r int_stored int_missing int_dup < <(bench_psql -tA -F' ' <<SQL
CREATE TEMP TABLE ok(nonce numeric);
\copy ok FROM '$out/soak_ok_nonces'
SELECT (SELECT count(*) FROM machpay.payment_intents),
       (SELECT count(*) FROM ok WHERE NOT EXISTS
          (SELECT 1 FROM machpay.payment_intents p WHERE p.nonce = ok.nonce)),
       (SELECT count(*) - count(DISTINCT nonce) FROM machpay.payment_intents);
SQL
)
echo
echo "# intents: $int_ok answered 200, $int_stored stored; 200'd but not stored: $int_missing; stored twice: $int_dup; other answers: ${int_other:-none}"
echo "# telemetry events: $acc_ev answered 202 ($acc_req requests; $tel_429 answered 429, $tel_other failed or cut by a restart);"
echo "#   stored $stored_ev ($stored_rows rows / $rows_per_event), counted as dropped $dropped, lost in $kills crash restarts $(( acc_ev - stored_ev - dropped ))"
echo "# kills: $kills; job runs:"
bench_psql -tA -F' ' -c "SELECT job, status, count(*) FROM machpay.job_runs GROUP BY 1, 2 ORDER BY 1, 2" | sed 's/^/#   /'
echo "# SSE segments (clients connected / events received):"
for f in "$out"/soak_sse_*.txt; do
  printf '#   %s: %s\n' "$(basename "$f" .txt)" "$(grep -v '^events' "$f" | tr '\n' ' ')"
done
echo "# RSS per worker process (kB): class pid  samples  RssAnon first/mid/last/max  VmRSS first/last/max  flat"
echo "#   (first: after a minute of its life; mid: at half its life; flat: RssAnon last within 5% or 2 MB of"
echo "#   mid, so a warm-up that levels off (caches, the SSE replay window) is flat and a leak is not)"
awk '{ k = $2 " " $3; n[k]++; if (!(k in t0)) { t0[k] = $1; f1[k] = $5; fv1[k] = $4 }; a[k, n[k]] = $5
       if ($1 - t0[k] >= 60 && !(k in f)) { f[k] = $5; fv[k] = $4 }
       l[k] = $5; lv[k] = $4; if ($5 > m[k]) m[k] = $5; if ($4 > mv[k]) mv[k] = $4 }
     END { for (k in n) {
       if (n[k] < 4) { printf "#   %-22s %3d  (lived < 40 s)\n", k, n[k]; continue }
       mid = a[k, int((n[k] + 1) / 2)]
       d = l[k] - mid; if (d < 0) d = -d
       flat = (d <= 2048 || d <= mid * 0.05) ? "flat" : "NOT flat"
       if (!(k in f)) { f[k] = f1[k]; fv[k] = fv1[k] }
       printf "#   %-22s %3d  %7d/%7d/%7d/%7d  %7d/%7d/%7d  %s\n", k, n[k], f[k], mid, l[k], m[k], fv[k], lv[k], mv[k], flat } }' \
  "$out/soak_rss.samples" | sort
