# machpay_receiver — PGXS build.
#
# SQL scripts (README, "Upgrades"):
#  - the install script of the current version (default_version in the
#    control file) is assembled from schema/[0-9]*.sql, one piece per concern,
#    applied in file-name order, so components can own their DDL separately;
#  - schema/upgrade/*--A--B.sql are hand-written upgrade scripts;
#  - schema/released/*--A.sql are the frozen install scripts of released
#    versions, installed so an old version can still be created (and the
#    upgrade from it tested).

EXTENSION   = machpay_receiver
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)
MODULE_big  = machpay_receiver
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*/*.c)))
DATA_built  = $(EXTENSION)--$(EXTVERSION).sql
DATA        = $(sort $(wildcard schema/released/*.sql) $(wildcard schema/upgrade/*.sql))
PGFILEDESC  = "machpay_receiver - MachPay ingestion service"

# pg_regress: one file per topic under sql/, run on a private server that
# preloads the library (the buffer and workers need shared_preload_libraries).
REGRESS      = $(sort $(patsubst sql/%.sql,%,$(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=$(CURDIR)/test/regress.conf
# The suite needs a server with the library preloaded; installcheck against an
# arbitrary running server would not have it.
NO_INSTALLCHECK = 1

TAP_TESTS   = 1
# prove-tap runs every file whatever the environment says; prove-some runs
# the files named by PROVE_TESTS (make prove-some PROVE_TESTS=test/t/040_sse.pl).
ALL_TAP_TESTS = $(sort $(wildcard test/t/*.pl))

PG_CPPFLAGS = -I$(CURDIR)/src $(shell pkg-config --cflags libnghttp2 2>/dev/null)
# libpq-fe.h, for the SSE relay's LISTEN connection.
PG_CPPFLAGS += -idirafter $(libpq_srcdir) -idirafter $(shell pkg-config --variable=includedir libpq 2>/dev/null || echo /usr/include/postgresql)
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
              -Wno-missing-field-initializers -Wno-cast-function-type
# The HTTP engine: nghttp2 (HTTP/2), http_parser (HTTP/1.1), OpenSSL, zlib.
SHLIB_LINK  = $(shell pkg-config --libs libnghttp2 2>/dev/null || echo -lnghttp2) \
              -lhttp_parser -lssl -lcrypto -lz $(libpq)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild every object when a shared
# header changes (a struct that grew must not meet objects built before).
$(OBJS): $(wildcard src/*/*.h)

$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard schema/[0-9]*.sql))
	cat $^ > $@

# ---------------------------------------------------------------------------
# The two commands of the README, plus helpers.
.PHONY: deps run stop test check-all check-layout check-regress prove-tap prove-some fuzz fuzz-replay bench soak ha-demo ha-down \
        deb test-deb test-debian12 test-debian13 test-deb-debian12 test-deb-debian13 test-matrix

deps:
	bash scripts/deps.sh

run:
	bash scripts/run.sh

stop:
	bash scripts/stop.sh

# A highly available receiver on one machine: pg_auto_failover monitor, two
# data nodes, HAProxy (README, "Running it highly available").
ha-demo:
	bash scripts/ha-demo.sh

ha-down:
	bash scripts/ha-down.sh

# The host's suite, then the release matrix: the other supported Debian
# release's suite and package in chroots (scripts/test-matrix.sh, whose
# chroot is prepared in the background while the host suite runs;
# MACHPAY_TEST_MATRIX=0 skips it, as the suite inside a chroot does).
test:
	bash scripts/test-matrix.sh prepare
	bash scripts/test.sh
	bash scripts/test-matrix.sh

# check-all is what scripts/test.sh runs as the postgres OS user on a copy of
# the tree: regression suite on a temporary instance, then the TAP tests.
check-all: all
	$(MAKE) check-layout
	$(MAKE) check-regress
	$(MAKE) prove-tap
	$(MAKE) fuzz-replay

# Folders include one way and the mapper core calls no SQL (src/README.md).
check-layout: all
	PG_CONFIG=$(PG_CONFIG) bash scripts/check-layout.sh

check-regress:
	$(pg_regress_installcheck) --temp-instance=./tmp_check_regress $(REGRESS_OPTS) $(REGRESS)

# --timer: every file's run time in the log (the slowest show at a glance).
prove-tap prove-some: PROVE_FLAGS += -I $(CURDIR)/test/lib --timer
prove-tap: override PROVE_TESTS = $(ALL_TAP_TESTS)
prove-tap:
	$(prove_installcheck)

prove-some:
	@test -n "$(PROVE_TESTS)" || { echo "prove-some: set PROVE_TESTS" >&2; exit 1; }
	$(prove_installcheck)

fuzz:
	$(MAKE) -C fuzz run

fuzz-replay:
	@if [ -f fuzz/Makefile ]; then $(MAKE) -C fuzz replay; else echo "fuzz: no harness yet"; fi

# The HTTP benchmarks in order (bench/README.md lists the others).
bench:
	bash bench/http_all.sh

# The Debian package of this release's PostgreSQL major, into dist/.
deb:
	bash scripts/deb.sh

# The release matrix: the whole `make test` in a throwaway chroot of Debian
# 13 (PostgreSQL 17) or 12 (PostgreSQL 15), from a clean clone of HEAD;
# the debootstrap base is cached under /var/tmp/machpay-chroot.
test-debian13:
	bash scripts/test-chroot.sh trixie

test-debian12:
	bash scripts/test-chroot.sh bookworm

# The other supported release's suite and package (scripts/test-matrix.sh),
# the second half of `make test`.
test-matrix:
	bash scripts/test-matrix.sh

# The package of a release, built in a chroot of it from a clean clone of
# HEAD, installed with apt into a fresh chroot that serves an HTTP event.
test-deb: test-deb-debian12

test-deb-debian12:
	bash scripts/test-deb.sh bookworm

test-deb-debian13:
	bash scripts/test-deb.sh trixie

# Not part of make test: SOAK_MINUTES (default 30) of mixed load with
# kill -9 of a worker every 5 minutes, then the books (bench/soak.sh; like
# the benchmarks it uses the machpay_receiver installed under PG_BINDIR).
soak:
	bash bench/soak.sh $(SOAK_MINUTES)

# The SSE console page is embedded into the library (src/sse/sse_console.c).
src/sse/sse_console.o: console/index.html
