# machpay_receiver — PGXS build.
#
# The install script is assembled from schema/*.sql (one piece per concern,
# applied in file-name order) so components can own their DDL separately.

EXTENSION   = machpay_receiver
EXTVERSION  = 0.1
MODULE_big  = machpay_receiver
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*/*.c)))
DATA_built  = $(EXTENSION)--$(EXTVERSION).sql
PGFILEDESC  = "machpay_receiver - MachPay ingestion service"

# pg_regress: one file per topic under sql/, run on a private server that
# preloads the library (the buffer and workers need shared_preload_libraries).
REGRESS      = $(sort $(patsubst sql/%.sql,%,$(wildcard sql/*.sql)))
REGRESS_OPTS = --temp-config=$(CURDIR)/test/regress.conf
# The suite needs a server with the library preloaded; installcheck against an
# arbitrary running server would not have it.
NO_INSTALLCHECK = 1

TAP_TESTS   = 1
PROVE_TESTS ?= $(sort $(wildcard test/t/*.pl))

PG_CPPFLAGS = -I$(CURDIR)/src $(shell pkg-config --cflags libh2o-evloop 2>/dev/null)
# libpq-fe.h, for the SSE relay's LISTEN connection.
PG_CPPFLAGS += -idirafter $(libpq_srcdir) -idirafter $(shell pkg-config --variable=includedir libpq 2>/dev/null || echo /usr/include/postgresql)
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
              -Wno-missing-field-initializers -Wno-cast-function-type
SHLIB_LINK  = $(shell pkg-config --libs libh2o-evloop 2>/dev/null || echo -lh2o-evloop) \
              -lssl -lcrypto -lz $(libpq)

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild every object when a shared
# header changes (a struct that grew must not meet objects built before).
$(OBJS): $(wildcard src/*/*.h)

$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard schema/*.sql))
	cat $^ > $@

# ---------------------------------------------------------------------------
# The two commands of the README, plus helpers.
.PHONY: deps run stop test check-all check-layout check-regress prove-tap fuzz fuzz-replay bench soak

deps:
	bash scripts/deps.sh

run:
	bash scripts/run.sh

stop:
	bash scripts/stop.sh

test:
	bash scripts/test.sh

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

prove-tap: PROVE_FLAGS += -I $(CURDIR)/test/lib
prove-tap:
	$(prove_installcheck)

fuzz:
	$(MAKE) -C fuzz run

fuzz-replay:
	@if [ -f fuzz/Makefile ]; then $(MAKE) -C fuzz replay; else echo "fuzz: no harness yet"; fi

bench:
	bash bench/run.sh

# Not part of make test: SOAK_MINUTES (default 30) of mixed load with
# kill -9 of a worker every 5 minutes, then the books (bench/soak.sh; like
# the benchmarks it uses the machpay_receiver installed under PG_BINDIR).
soak:
	bash bench/soak.sh $(SOAK_MINUTES)

# The SSE console page is embedded into the library (src/sse/sse_console.c).
src/sse/sse_console.o: console/index.html
