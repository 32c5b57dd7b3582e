#!/usr/bin/env bash
# Prints what `make ha-demo` prints: one line per data node, the HAProxy
# entries and the keys.  Usage: scripts/ha-describe.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
. scripts/ha-lib.sh
ha_load "${1:-${MACHPAY_HA_DIR:-$(pwd)/.run/ha}}"
for n in $HA_NODES; do
  eval "echo \"node $n: pg \$HA_PG_$n http \$HA_HTTP_$n sse \$HA_SSE_$n data $HA_DIR/$n/pgdata\""
done
echo "entry: http://127.0.0.1:$HA_ENTRY_PORT"
echo "entry-sse: http://127.0.0.1:$HA_ENTRY_SSE_PORT"
echo "key: $INGEST_KEY"
echo "console-key: $CONSOLE_KEY"
