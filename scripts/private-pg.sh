#!/usr/bin/env bash
# Makes a private, relocated copy of the system PostgreSQL 15 under DIR so
# that several checkouts can `make install` and test side by side without
# overwriting each other's machpay_receiver.so.  PostgreSQL finds its share
# and lib directories relative to its binaries, so a copied tree just works.
# Usage: scripts/private-pg.sh DIR   then   export PG_CONFIG=DIR/usr/lib/postgresql/15/bin/pg_config
set -euo pipefail
dir=${1:?usage: private-pg.sh DIR}
mkdir -p "$dir/usr/lib/postgresql" "$dir/usr/share/postgresql" "$dir/usr/include/postgresql"
cp -a /usr/lib/postgresql/15 "$dir/usr/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$dir/usr/share/postgresql/"
cp -a /usr/include/postgresql/15 "$dir/usr/include/postgresql/"
chmod -R a+rX "$dir"
echo "export PG_CONFIG=$dir/usr/lib/postgresql/15/bin/pg_config"
