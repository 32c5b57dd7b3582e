# Shared by run.sh, stop.sh, test.sh and the benchmarks: where PostgreSQL
# is (PG_CONFIG, PG_BINDIR) and how to run as the postgres OS user (initdb
# refuses root).  The major is PG_CONFIG's when given (or PG_BINDIR's),
# else the one the Debian release ships (scripts/pg_major.sh).
. "$(dirname "${BASH_SOURCE[0]}")/pg_major.sh"

if [ -z "${PG_CONFIG:-}" ] && [ -n "${PG_BINDIR:-}" ]; then
  PG_CONFIG=$PG_BINDIR/pg_config
fi
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$(machpay_pg_major)/bin/pg_config}
PG_BINDIR=${PG_BINDIR:-$("$PG_CONFIG" --bindir 2>/dev/null || dirname "$PG_CONFIG")}
export PG_CONFIG PG_BINDIR

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

build_and_install() {
  make -s PG_CONFIG="$PG_CONFIG" all
  if [ "$(id -u)" -eq 0 ] || [ -w "$($PG_CONFIG --pkglibdir)" ]; then
    make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
  else
    sudo make -s PG_CONFIG="$PG_CONFIG" install >/dev/null
  fi
}
