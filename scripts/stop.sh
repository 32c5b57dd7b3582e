#!/usr/bin/env bash
# `make stop`: stop the cluster started by `make run`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
for d in "${MACHPAY_RUN_DIR:-$(pwd)/.run}/data" /var/tmp/machpay_receiver-run/data; do
  [ -f "$d/postmaster.pid" ] && as_postgres "$PG_BINDIR/pg_ctl" -D "$d" stop -m fast
done
exit 0
