# Which PostgreSQL major to build and test against, shared by deps.sh and
# common.sh (sourced; defines functions only, needs no PostgreSQL yet).
#
# PG_CONFIG, when given, decides: its --version, or the major in its path
# (/usr/lib/postgresql/N/bin/pg_config) before that PostgreSQL is installed.
# Otherwise the major that this Debian release ships: 15 on Debian 12
# (bookworm), 17 on Debian 13 (trixie), else whatever the `postgresql`
# package of the release depends on.

debian_codename() {
  (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-unknown}")
}

machpay_pg_major() {
  local v
  if [ -n "${PG_CONFIG:-}" ]; then
    if v=$("$PG_CONFIG" --version 2>/dev/null); then
      v=${v#PostgreSQL }; echo "${v%%[!0-9]*}"; return 0
    fi
    case $PG_CONFIG in
      */postgresql/[0-9]*/bin/pg_config)
        v=${PG_CONFIG%/bin/pg_config}; echo "${v##*/}"; return 0 ;;
    esac
    echo "pg_major: cannot run PG_CONFIG=$PG_CONFIG" >&2
    return 1
  fi
  case $(debian_codename) in
    bookworm) echo 15 ;;
    trixie) echo 17 ;;
    *)
      v=$(apt-cache depends postgresql 2>/dev/null | sed -n 's/.*Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -1)
      [ -n "$v" ] || { echo "pg_major: unknown release; set PG_CONFIG" >&2; return 1; }
      echo "$v" ;;
  esac
}
