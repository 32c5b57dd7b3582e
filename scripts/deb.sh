#!/usr/bin/env bash
# `make deb`: the Debian package of this checkout for the PostgreSQL major
# of this Debian release (postgresql-15-machpay-receiver on Debian 12,
# postgresql-17-machpay-receiver on Debian 13), built by dpkg-buildpackage
# with pg_buildext (debian/).  Built from a copy of the tracked and new
# files, so the checkout stays clean; the packages land in dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bash scripts/deps.sh deb

version=$(dpkg-parsechangelog -S Version)
work=$(mktemp -d /tmp/machpay-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
src="$work/machpay-receiver-$version"
mkdir "$src"
if git rev-parse --git-dir >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - | tar -C "$src" -xf -
else
  tar --exclude=./.run --exclude=./dist -cf - . | tar -C "$src" -xf -
fi

# debian/control for the majors this machine supports, then the build.
(cd "$src" && pg_buildext updatecontrol && dpkg-buildpackage -us -uc -b)

mkdir -p dist
cp "$work"/*.deb dist/
for f in "$work"/*.deb; do
  echo "built dist/$(basename "$f")"
  dpkg-deb -f "$f" Package Version Depends | sed 's/^/  /'
done
