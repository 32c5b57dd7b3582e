# Shared by run.sh and test.sh: where PostgreSQL 15 is and how to run as
# the postgres OS user (initdb refuses root).
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PG_BINDIR/pg_config}
export PG_CONFIG

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
