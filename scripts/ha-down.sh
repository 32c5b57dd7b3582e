#!/usr/bin/env bash
# `make ha-down`: stop everything `make ha-demo` started (HAProxy, the
# pg_autoctl keepers and their servers, the monitor) and remove its
# directory.  Whatever does not stop within 30 s is killed, by the process
# trees recorded in the directory only.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
. scripts/ha-lib.sh
dir=${MACHPAY_HA_DIR:-}
if [ -z "$dir" ]; then
  # Where ha-demo.sh put it: .run/ha, or its fallback for a checkout the
  # postgres user cannot write to.
  dir=$(pwd)/.run/ha
  [ -d "$dir" ] || dir=/var/tmp/machpay_receiver-ha
fi
[ -d "$dir" ] || exit 0
if ha_load "$dir" 2>/dev/null; then
  [ -f "$dir/haproxy.pid" ] && kill "$(cat "$dir/haproxy.pid")" 2>/dev/null
  # Data nodes first (a standby stopped before its primary), then the monitor.
  for n in $(echo "$HA_NODES" | tr ' ' '\n' | tac) monitor; do
    pgdata="$dir/$n/pgdata"
    [ "$n" = monitor ] && pgdata="$dir/monitor"
    [ -f "$dir/$n.pid" ] || continue
    pid=$(cat "$dir/$n.pid")
    kill -0 "$pid" 2>/dev/null || continue
    ha_autoctl stop --pgdata "$pgdata" --fast > /dev/null 2>&1 || kill "$pid" 2>/dev/null
    end=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
  done
  # Whatever is left of the recorded process trees (a server whose keeper
  # was killed keeps running on its own).  A recorded pid counts only if its
  # command line names this directory: pids are reused.
  roots=""
  for f in "$dir"/*.pid; do
    [ -f "$f" ] && roots="$roots $(cat "$f")"
  done
  for d in "$dir"/*/pgdata "$dir/monitor"; do
    [ -f "$d/postmaster.pid" ] && roots="$roots $(head -1 "$d/postmaster.pid")"
  done
  for r in $roots; do
    { tr '\0' ' ' < "/proc/$r/cmdline"; } 2>/dev/null | grep -qF "$dir" || continue
    kill -KILL $(ha_tree "$r") 2>/dev/null
  done
  [ "$HA_SOCK" != "$dir/sock" ] && rm -rf "$HA_SOCK"
fi
rm -rf "$dir"
exit 0
