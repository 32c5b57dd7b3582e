#!/usr/bin/env bash
# Runs one benchmark script against several installed builds, one after the
# other in the same session, so "before" and "after" see the same machine.
# Each build is a PostgreSQL bin directory into which that build of the
# extension was installed (make install with its PG_CONFIG), with a label and
# optional extra postgresql.conf lines.  The load average is printed before
# and after each run.
# Usage: bench/compare_builds.sh SCRIPT "ARGS" LABEL=BINDIR[:CONF] ...
#   e.g. bench/compare_builds.sh bench/http_peak.sh "30 32 10" \
#          before=/opt/pg-before/bin after=/opt/pg-after/bin \
#          "after-2w=/opt/pg-after/bin:machpay.flush_workers = 2"
set -euo pipefail
cd "$(dirname "$0")/.."
script=${1:?usage: compare_builds.sh SCRIPT "ARGS" LABEL=BINDIR[:CONF] ...}
args=$2
shift 2
for spec in "$@"; do
  label=${spec%%=*}
  rest=${spec#*=}
  bindir=${rest%%:*}
  conf=""
  [ "$rest" != "$bindir" ] && conf=${rest#*:}
  echo "## $label: $script $args (bin $bindir${conf:+, conf: $conf}); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  # shellcheck disable=SC2086
  PG_BINDIR=$bindir PG_CONFIG=$bindir/pg_config BENCH_EXTRA_CONF="$conf" \
    BENCH_OUT=${BENCH_OUT:-bench/out}/$label bash "$script" $args
  echo "## $label: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
done
