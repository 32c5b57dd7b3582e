# Shared by ha-demo.sh, ha-down.sh, the HA failover test and bench/ha_intents.sh:
# how to reach the pieces of a highly available deployment made by
# ha-demo.sh (a pg_auto_failover monitor, data nodes, HAProxy), from the
# settings it recorded in $HA_DIR/ha.env.  Needs scripts/common.sh first.

# ha_load DIR: read the recorded settings of the deployment under DIR.
ha_load() {
  HA_DIR=$1
  [ -f "$HA_DIR/ha.env" ] || { echo "ha: no deployment under $HA_DIR" >&2; return 1; }
  . "$HA_DIR/ha.env"
}

# pg_autoctl as the postgres OS user, with its configuration, state and pid
# files under the deployment directory (not in the home directory) and its
# local connections on the deployment's own socket directory.
# PG_REGRESS_SOCK_DIR is how pg_autoctl is told to start postgres with
# "-k <dir>": the only way to give the servers a socket directory of their own.
ha_autoctl() {
  as_postgres env PGHOST="$HA_SOCK" PG_REGRESS_SOCK_DIR="$HA_SOCK" \
    XDG_CONFIG_HOME="$HA_DIR/autoctl/config" XDG_DATA_HOME="$HA_DIR/autoctl/data" \
    XDG_RUNTIME_DIR="$HA_DIR/autoctl/run" PATH="$HA_BIN:$PATH" \
    pg_autoctl "$@"
}

# ha_psql PORT [psql args]: the local server on PORT, as postgres.
ha_psql() {
  local port=$1; shift
  as_postgres "$HA_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HA_SOCK" -p "$port" -U postgres "$@"
}

# ha_monitor_sql SQL: one query on the monitor, unaligned output.
ha_monitor_sql() {
  ha_psql "$HA_MONITOR_PORT" -d pg_auto_failover -tAc "$1"
}

# ha_start_keeper NAME PGDATA: "pg_autoctl run" in the background, in a
# session of its own; its pid goes to $HA_DIR/NAME.pid (the process tree of
# one node starts there).
ha_start_keeper() {
  local name=$1 pgdata=$2
  ha_autoctl run --pgdata "$pgdata" >> "$HA_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$HA_DIR/$name.pid"
}

# ha_tree PID: PID and all its descendants, parents first.
ha_tree() {
  local all=$1 frontier=$1 next p c
  while [ -n "$frontier" ]; do
    next=""
    for p in $frontier; do
      for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do next="$next $c"; done
    done
    all="$all$next"
    frontier=${next# }
  done
  echo "$all"
}

# ha_wait SECONDS WHAT COMMAND...: run COMMAND every 0.25 s until it
# succeeds; fail with a message naming WHAT after SECONDS.
ha_wait() {
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $end ]; then
      echo "ha: timed out after ${secs}s waiting for $what" >&2
      return 1
    fi
    sleep 0.25
  done
}

ha_ready() {  # PORT: the ingest server on PORT answers /readyz with 200
  curl -sf -m 2 -o /dev/null "http://127.0.0.1:$1/readyz"
}

# ha_node_state NAME: the state the node last reported to the monitor.
ha_node_state() {
  ha_monitor_sql "SELECT reportedstate FROM pgautofailover.node WHERE nodename = '$1'"
}

# ha_primary: name of the node the monitor has as (wait_)primary.
ha_primary() {
  ha_monitor_sql "SELECT nodename FROM pgautofailover.node
                  WHERE reportedstate IN ('primary', 'wait_primary', 'single')
                    AND goalstate IN ('primary', 'wait_primary', 'single')
                  ORDER BY nodeid LIMIT 1"
}

# ha_sync_ready: every data node settled as the primary or a secondary
# (a primary, not wait_primary, has its synchronous standby).
ha_sync_ready() {
  local want
  want=$(echo $HA_NODES | wc -w)
  [ "$(ha_monitor_sql "SELECT count(*) FROM pgautofailover.node
                       WHERE reportedstate = goalstate
                         AND reportedstate IN ('primary', 'secondary')")" = "$want" ]
}
