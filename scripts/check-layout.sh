#!/usr/bin/env bash
# The layout of src/ as the build enforces it (run by `make check-layout`,
# part of `make test`):
#  1. Includes between folders go one way, down the flow's layers:
#       http, sse      (network: the two servers)
#       jobs, flusher  (database writers), net (the HTTP engine of both)
#       ingest         (the one ingest path: options, answer, SQL front ends)
#       buffer         (shared memory between network and writers)
#       mapper, notify (bytes to rows, fuzzed on its own; the signed NOTIFY publisher)
#       common         (settings, shared memory, keys, counters)
#     A folder may include headers of folders below it only, so no cycle
#     between folders can appear.
#  2. The mapper's core objects and the ingest answer (what the fuzzer
#     links) call no SQL, no transaction, no ereport: checked on the built
#     objects with nm.
#  3. A folder's internal header (src/buffer/buffer_int.h) is included in
#     its folder only: the others use the folder's public API (buffer.h).
#  4. src/common/ shares no header name with PostgreSQL's own common/
#     (an include of "common/x.h" would silently pick the wrong one).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-pg_config}
status=0

rank() {
  case $1 in
    common) echo 0 ;; mapper|notify) echo 1 ;; buffer) echo 2 ;; ingest) echo 3 ;;
    flusher|jobs|net) echo 4 ;; http|sse) echo 5 ;;
    *) echo "check-layout: folder src/$1 has no layer; add it to $0" >&2; echo 99 ;;
  esac
}

folders=$(cd src && ls -d */ | tr -d /)
for from in $folders; do
  rf=$(rank "$from")
  for file in src/"$from"/*.[ch]; do
    [ -e "$file" ] || continue
    for to in $(sed -n 's/^#include "\([a-z_]*\)\/.*/\1/p' "$file" | sort -u); do
      [ -d "src/$to" ] || continue            # PostgreSQL's own headers
      [ "$to" = "$from" ] && continue
      rt=$(rank "$to")
      if [ "$rt" -ge "$rf" ]; then
        echo "check-layout: $file includes $to/: $from may include only layers below it" >&2
        status=1
      fi
    done
  done
done

# Internal headers stay in their folder.
for file in $(grep -l '^#include "buffer/buffer_int.h"' src/*/*.[ch] fuzz/*.[ch] 2>/dev/null || true); do
  case $file in
    src/buffer/*) ;;
    *) echo "check-layout: $file includes buffer/buffer_int.h: outside src/buffer/ use buffer/buffer.h" >&2
       status=1 ;;
  esac
done

# PostgreSQL's common/ headers an include of ours could be mistaken for.
pgcommon="$($PG_CONFIG --includedir-server)/common"
for h in src/common/*.h; do
  if [ -e "$pgcommon/$(basename "$h")" ]; then
    echo "check-layout: $h has the name of PostgreSQL's common/$(basename "$h")" >&2
    status=1
  fi
done

forbidden='^(SPI_|StartTransactionCommand|CommitTransactionCommand|AbortCurrentTransaction|errstart|errfinish|elog_start|Async_Notify|heap_|table_open|index_|LWLockAcquire|WaitLatch|WaitEventSet)'
for obj in src/mapper/mapper.o src/mapper/mapper_walk.o src/mapper/mapper_json.o src/mapper/rowbuf.o src/common/base58.o src/common/json_depth.o \
           src/ingest/ingest_response.o; do
  if [ ! -e "$obj" ]; then
    echo "check-layout: $obj not built (run make first)" >&2; status=1; continue
  fi
  bad=$(nm -u "$obj" | awk '{print $2}' | grep -E "$forbidden" || true)
  if [ -n "$bad" ]; then
    echo "check-layout: $obj (linked by the mapper's fuzzer) calls $(echo $bad)" >&2
    status=1
  fi
done

[ $status -eq 0 ] && echo "check-layout: folders one way, buffer internals private, mapper core free of SQL: ok"
exit $status
