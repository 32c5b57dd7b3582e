# Shared by the HTTP benchmark scripts (http_peak, http_overload,
# http_latency, http_rss): a bench cluster with the ingest server, an ingest
# key, gateway bodies of N events, h2load runs, CPU accounting per process
# class from /proc/<pid>/stat, and per-status latency figures from h2load's
# request log.
# Words: "class" = ingest (the ingest workers), flusher (its writers: telemetry
# and intents), pg_other (every other
# postmaster child: walwriter, checkpointer, psql backends, ...), client
# (h2load / intent_load).
# Settings (environment): WORKERS (machpay.http_workers, default 1),
# BUFFER (machpay.buffer_size, default 64MB), BATCH (machpay.batch_size,
# default 1000), BENCH_EXTRA_CONF (more postgresql.conf lines).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
WORKERS=${WORKERS:-1}
BUFFER=${BUFFER:-64MB}
BATCH=${BATCH:-1000}
out=${BENCH_OUT:-bench/out}; mkdir -p "$out"; chmod a+rwx "$out"
CLK_TCK=$(getconf CLK_TCK)
url="http://127.0.0.1:$BENCH_HTTP_PORT/v1/ingest"

# Starts the cluster, creates the key ($token) and gateway bodies
# $out/body_<n>.json for every n in "$@".
http_setup() {
  BENCH_EXTRA_CONF="machpay.http_workers = $WORKERS
machpay.buffer_size = '$BUFFER'
machpay.batch_size = $BATCH
${BENCH_EXTRA_CONF:-}" bench_start_cluster
  trap 'http_cleanup' EXIT
  token=$(bench_psql -tAc "SELECT machpay.create_ingest_key('*', 'ingest')")
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$BENCH_HTTP_PORT/readyz" && break
    sleep 0.1
  done
  # Gateway events only: the seed's sections plus 4 routes, 28 rows each.
  perl bench/gen_events.pl 400 200 200 1 | grep '"source":"gateway"' > "$out/gateway.ndjson"
  for n in "$@"; do
    head -n "$n" "$out/gateway.ndjson" | paste -sd, | sed 's/^/[/; s/$/]/' > "$out/body_$n.json"
  done
  chmod a+r "$out"/*
  # Rows per event: one event posted, flushed and counted.
  # (The workers may not know the new key yet: post again until it lands.)
  head -n 1 "$out/gateway.ndjson" > "$out/calib.json"
  rows_per_event=0
  for _ in $(seq 1 50); do
    curl -s -o /dev/null -H "authorization: Bearer $token" -H 'content-type: application/json' \
      --data-binary @"$out/calib.json" "$url" || true
    bench_psql -tAc "SELECT machpay.flush()" >/dev/null
    rows_per_event=$(bench_psql -tAc "SELECT count(*) FROM machpay.metric_points")
    [ "$rows_per_event" -gt 0 ] && break
    sleep 0.2
  done
  [ "$rows_per_event" -gt 0 ] || { echo "http_setup: the calibration event never landed" >&2; exit 1; }
  bench_psql -c "TRUNCATE machpay.metric_points"
}

http_cleanup() {
  local p
  for p in ${bg_pids:-}; do kill "$p" 2>/dev/null || true; done
  bench_stop_cluster
}

postmaster_pid() { head -1 "$BENCH_DIR/data/postmaster.pid"; }

# pids of the postmaster's children with their class, one "pid class" a line.
pg_procs() {
  local pm pid title
  pm=$(postmaster_pid)
  echo "$pm pg_other"
  for pid in $(ps --ppid "$pm" -o pid=); do
    title=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
    case "$title" in
      *"machpay ingest worker"*) echo "$pid ingest" ;;
      *"machpay flusher"*|*"machpay intent writer"*) echo "$pid flusher" ;;
      *) echo "$pid pg_other" ;;
    esac
  done
}

# Snapshot "pid class ticks" of the cluster, plus the clients: the CPU of
# this shell's reaped children (cutime + cstime), so take the second
# snapshot after `wait` for the load generators.
cpu_snapshot() {
  local pid class
  pg_procs | while read -r pid class; do
    # utime + stime: fields 14 and 15; the comm field may hold spaces.
    sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null |
      awk -v p="$pid" -v c="$class" '{ print p, c, $12 + $13 }'
  done
  sed 's/^.*) //' "/proc/$$/stat" | awk '{ print "self client", $14 + $15 }'
}

# CPU seconds per class between two snapshots: "ingest flusher pg_other client".
# A process born in between counts all its ticks (it started from 0).
cpu_diff() {
  awk -v hz="$CLK_TCK" 'NR == FNR { a[$1] = $3; next }
    { s[$2] += $3 - (($1 in a) ? a[$1] : 0) }
    END { printf "%.2f %.2f %.2f %.2f\n", s["ingest"] / hz, s["flusher"] / hz,
      s["pg_other"] / hz, s["client"] / hz }' "$1" "$2"
}

# From h2load logs (start_us status latency_us): "n202 n429 nother p50_ms p99_ms"
# where the percentiles are those of the 202 (or 200) answers only.
# LOG_FROM_US / LOG_TO_US (epoch microseconds) keep requests started in between.
log_stats() {
  cat "$@" | awk -v f="${LOG_FROM_US:-0}" -v t="${LOG_TO_US:-0}" '
    $1 < f || (t > 0 && $1 > t) { next }
    $2 == 202 || $2 == 200 { ok++; print $3 > "/dev/stderr"; next }
    $2 == 429 { busy++; next } { other++ }
    END { printf "%d %d %d", ok, busy, other }' 2> "$out/.lat"
  sort -n "$out/.lat" | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print " - -"; exit }
    i50 = int(NR * 0.50); if (i50 < 1) i50 = 1
    i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
    printf " %.2f %.2f\n", v[i50] / 1000, v[i99] / 1000 }'
  rm -f "$out/.lat"
}
now_us() { date +%s%6N; }

points() { bench_psql -tAc "SELECT count(*) FROM machpay.metric_points"; }
flush_all() { bench_psql -tAc "SELECT machpay.flush()" >/dev/null; }
reset_points() { bench_psql -c "TRUNCATE machpay.metric_points" -c "CHECKPOINT"; }
calc() { awk "BEGIN { printf \"%.${2:-0}f\", $1 }"; }

# h2load PROTO EVENTS SECONDS CONNECTIONS RPS_PER_CONNECTION(0 = unlimited) LOG
# runs in the background; its pid is in $h2pid.
h2load_start() {
  local flags=(-D "$3" -c "$4" -m 1 -t 1)
  rm -f "$6"   # h2load appends to an existing log
  [ "$1" = h1 ] && flags+=(--h1)
  [ "$5" != 0 ] && flags+=(--rps="$5")
  h2load "${flags[@]}" -H "authorization: Bearer $token" -H 'content-type: application/json' \
    -d "$out/body_$2.json" --log-file="$6" "$url" > "$6.txt" 2>&1 &
  h2pid=$!
}
