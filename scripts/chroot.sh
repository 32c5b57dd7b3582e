#!/usr/bin/env bash
# Throwaway Debian chroots for the release matrix (make test-debian13,
# make test-debian12, make test-deb-debian12, ...).
#
# A *base* is `debootstrap --variant=minbase RELEASE` plus git, make and
# ca-certificates, kept as a tarball under $MACHPAY_CHROOT_CACHE (default
# /var/tmp/machpay-chroot) and made once.  A *deps layer* is the base with
# scripts/deps.sh already run, kept beside it and keyed by the hash of
# deps.sh, so a second run unpacks it and installs nothing.  A *chroot* is
# one unpacked copy, used for one run and thrown away.
#
# Each command runs in its own mount and PID namespace: the mounts a chroot
# needs (/proc, a tmpfs on /dev/shm, /dev/pts) vanish with it, and so does
# every process it left running (a PostgreSQL server, a browser), even when
# the run is killed.  The EXIT trap of the caller still checks that nothing
# is mounted below the chroot before it removes the directory.
#
# Usage (sourced):  . scripts/chroot.sh
#   root=$(chroot_new trixie [SCRIPTS]) unpack a fresh chroot (with the deps layer
#                                       of SCRIPTS/deps.sh when given)
#   chroot_run "$root" CMD...          run CMD inside, as root
#   chroot_remove "$root"              unmount leftovers, delete
#   chroot_kill; chroot_remove_owned   in an EXIT trap: end the runs, delete
#                                      every chroot this script unpacked
# Run as root (debootstrap, chroot and mount need it).

MACHPAY_CHROOT_CACHE=${MACHPAY_CHROOT_CACHE:-/var/tmp/machpay-chroot}
MACHPAY_DEBIAN_MIRROR=${MACHPAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}

chroot_log() { echo "chroot: $*" >&2; }

# The tarball of the minbase system of RELEASE, made when absent.
chroot_base() {
  local release=$1 tar="$MACHPAY_CHROOT_CACHE/$1.tar" build
  if [ ! -s "$tar" ]; then
    if ! command -v debootstrap >/dev/null; then
      apt-get update -q >&2 && apt-get install -y -q --no-install-recommends debootstrap >&2
    fi
    mkdir -p "$MACHPAY_CHROOT_CACHE"
    build=$(mktemp -d "$MACHPAY_CHROOT_CACHE/$release.build.XXXXXX")
    chroot_log "debootstrap $release into $build (once; cached as $tar)"
    if ! debootstrap --variant=minbase --include=ca-certificates,git,make \
        "$release" "$build" "$MACHPAY_DEBIAN_MIRROR" > "$build.log" 2>&1; then
      tail -n 30 "$build.log" >&2
      chroot_unmount "$build" && rm -rf --one-file-system "$build"
      rm -f "$build.log"
      return 1
    fi
    rm -f "$build.log"
    # Services never start in a chroot; postgresql-common's default cluster
    # is never used (tests make their own).
    printf '#!/bin/sh\nexit 101\n' > "$build/usr/sbin/policy-rc.d"
    chmod 755 "$build/usr/sbin/policy-rc.d"
    mkdir -p "$build/etc/postgresql-common"
    echo "create_main_cluster = false" > "$build/etc/postgresql-common/createcluster.conf"
    rm -rf "$build"/var/cache/apt/archives/*.deb "$build"/var/lib/apt/lists/*
    tar -C "$build" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$build"
  fi
  echo "$tar"
}

# The tarball of the base with `deps.sh deb` run in it (what make test and
# make deb need), made when absent.  SCRIPTS is a directory holding deps.sh
# and pg_major.sh (those of the commit under test); the layer is keyed by
# their hash.
chroot_deps_layer() {
  local release=$1 scripts=$2 key tar root
  key=$(cat "$scripts/deps.sh" "$scripts/pg_major.sh" | sha256sum | cut -c1-16)
  tar="$MACHPAY_CHROOT_CACHE/$release-deps-$key.tar"
  if [ ! -s "$tar" ]; then
    root=$(chroot_base "$release") && root=$(chroot_unpack "$root") || return 1
    chroot_log "installing the packages of deps.sh into $release (once; cached as $tar)"
    mkdir -p "$root/tmp/machpay-deps"
    cp "$scripts/deps.sh" "$scripts/pg_major.sh" "$root/tmp/machpay-deps/"
    if ! chroot_run "$root" bash /tmp/machpay-deps/deps.sh deb > "$root.deps.log" 2>&1; then
      tail -n 30 "$root.deps.log" >&2
      rm -f "$root.deps.log"
      chroot_remove "$root"
      return 1
    fi
    rm -f "$root.deps.log"
    chroot_run "$root" apt-get clean >&2
    rm -rf "$root/tmp/machpay-deps"
    # Older layers of this release are stale once deps.sh changed.
    rm -f "$MACHPAY_CHROOT_CACHE/$release"-deps-*.tar
    tar -C "$root" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    chroot_remove "$root"
  fi
  echo "$tar"
}

# Each unpacked chroot records the script that owns it ($$, the same in
# its subshells) in run.XXXXXX.owner: chroot_remove_owned removes those of
# this script, including one a subshell was filling when a signal came;
# chroot_remove_stale those whose owner is gone (killed with SIGKILL).
chroot_unpack() {
  local tar=$1 root
  root=$(mktemp -d "$MACHPAY_CHROOT_CACHE/run.XXXXXX")
  echo $$ > "$root.owner"
  tar -C "$root" --numeric-owner -xf "$tar"
  chmod 755 "$root"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  echo "$root"
}

# The cached tarball of RELEASE (with SCRIPTS: its deps layer), made when
# absent.  One maker at a time per release: a run that finds another making
# it (make test prepares the matrix's while the host suite runs) waits for
# that and uses its tarball.
chroot_cached() {
  local release=$1 scripts=${2:-}
  mkdir -p "$MACHPAY_CHROOT_CACHE"
  (
    exec 9> "$MACHPAY_CHROOT_CACHE/.$release.lock"
    flock 9
    if [ -n "$scripts" ]; then chroot_deps_layer "$release" "$scripts"; else chroot_base "$release"; fi
  )
}

# chroot_new RELEASE [SCRIPTS]: a fresh chroot directory; with SCRIPTS
# (see chroot_deps_layer), one with the project's packages installed.
chroot_new() {
  local tar
  tar=$(chroot_cached "$@") || return 1
  chroot_unpack "$tar"
}

# In the background and waited for, so that a signal to the calling script
# runs its traps at once; chroot_kill then ends the run.
CHROOT_RUN_PIDS=()
chroot_run() {
  local root=$1 pid rc=0; shift
  unshare --mount --pid --fork --kill-child --propagation private -- \
    bash -c 'set -e; r=$1; shift
      mount -t proc proc "$r/proc"
      mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
      mount --bind /dev/pts "$r/dev/pts"
      exec chroot "$r" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"' \
    chroot_run "$root" "$@" &
  pid=$!
  CHROOT_RUN_PIDS+=("$pid")
  wait "$pid" || rc=$?
  return $rc
}

# Ends the runs this shell started that are still going: unshare ignores
# SIGTERM while it waits, so the run's first process, PID 1 of its PID
# namespace, gets SIGKILL, which ends every process in the namespace.
chroot_kill() {
  local pid init
  for pid in "${CHROOT_RUN_PIDS[@]}"; do
    for init in $(pgrep -P "$pid" 2>/dev/null); do
      kill -KILL "$init" 2>/dev/null || true
    done
  done
}

# Mounts still below ROOT (a namespace that did not go away cleanly).
chroot_mounts() {
  awk -v r="$1/" 'index($2 "/", r) == 1 { print $2 }' /proc/self/mounts | sort -r
}

# Unmounts what is left below ROOT; false when something stays mounted.
chroot_unmount() {
  local root=$1 m
  for m in $(chroot_mounts "$root"); do umount -l "$m" || true; done
  if [ -n "$(chroot_mounts "$root")" ]; then
    chroot_log "still mounted below $root; left in place"
    return 1
  fi
}

chroot_remove() {
  local root=$1
  [ -n "$root" ] && [ -d "$root" ] || return 0
  case $root in "$MACHPAY_CHROOT_CACHE"/run.*) ;; *) chroot_log "not removing $root"; return 1 ;; esac
  chroot_unmount "$root" && rm -rf --one-file-system "$root" && rm -f "$root.owner" "$root.deps.log"
}

chroot_remove_owned() {
  local owner rc=0
  for owner in "$MACHPAY_CHROOT_CACHE"/run.*.owner; do
    [ -f "$owner" ] && [ "$(cat "$owner")" = "$$" ] || continue
    chroot_remove "${owner%.owner}" || rc=1
  done
  return $rc
}

chroot_remove_stale() {
  local owner pid
  for owner in "$MACHPAY_CHROOT_CACHE"/run.*.owner; do
    [ -f "$owner" ] || continue
    pid=$(cat "$owner")
    kill -0 "$pid" 2>/dev/null && continue
    chroot_log "removing ${owner%.owner}, left by process $pid"
    chroot_remove "${owner%.owner}" || true
  done
}
