#!/usr/bin/env bash
# Makes a private, relocated copy of the system PostgreSQL under DIR so
# that several checkouts can `make install` and test side by side without
# overwriting each other's machpay_receiver.so.  PostgreSQL finds its share
# and lib directories relative to its binaries, so a copied tree just works.
# The major is the release's (or PG_CONFIG's), see scripts/pg_major.sh.
# Usage: scripts/private-pg.sh DIR   then   export PG_CONFIG=DIR/usr/lib/postgresql/N/bin/pg_config
set -euo pipefail
. "$(dirname "$0")/pg_major.sh"
dir=${1:?usage: private-pg.sh DIR}
pg=$(machpay_pg_major)
mkdir -p "$dir/usr/lib/postgresql" "$dir/usr/share/postgresql" "$dir/usr/include/postgresql"
cp -a "/usr/lib/postgresql/$pg" "$dir/usr/lib/postgresql/"
cp -a "/usr/share/postgresql/$pg" "$dir/usr/share/postgresql/"
cp -a "/usr/include/postgresql/$pg" "$dir/usr/include/postgresql/"
chmod -R a+rX "$dir"
echo "export PG_CONFIG=$dir/usr/lib/postgresql/$pg/bin/pg_config"
