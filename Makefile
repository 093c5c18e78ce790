# libkvdist - plain GNU make build.
#
#   make               library (shared + static) and example programs
#   make check         build and run every Check suite and the export check
#   make check-fresh   README's two commands in a new Debian 12 (debootstrap)
#   make SANITIZE=1 check   the same under AddressSanitizer + UBSan
#   make nemesis       the long fault-injection run (kvdist-nemesis(1))
#   make fuzz          each libFuzzer target in test/fuzz/ for FUZZ_SECONDS
#   make fuzz-corpus   write the fuzz targets' seed corpora again
#   make demo          the newcomer's tour (see README.md)
#   make deps          install what is missing (Debian, as root)
#   make install / uninstall   honour PREFIX and DESTDIR
#
# Outputs go under build/ (build/san/ with SANITIZE=1, build/fuzz/ for make
# fuzz).

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

# The version lives once, in include/kvdist.h.
VERSION_MAJOR := $(shell sed -n 's/^\#define KV_VERSION_MAJOR \([0-9]*\)$$/\1/p' include/kvdist.h)
VERSION_MINOR := $(shell sed -n 's/^\#define KV_VERSION_MINOR \([0-9]*\)$$/\1/p' include/kvdist.h)
VERSION_PATCH := $(shell sed -n 's/^\#define KV_VERSION_PATCH \([0-9]*\)$$/\1/p' include/kvdist.h)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

CC ?= cc
ifeq ($(SANITIZE),1)
BUILD := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPTFLAGS := -O1 -g
else
BUILD := build
SANFLAGS :=
OPTFLAGS := -O2 -g
endif

# Dependencies' flags come from pkg-config, asked when a recipe first needs
# them and not when make reads this file: on a fresh machine the packages
# appear only once `deps` (an order-only prerequisite of every compile and
# link below) has run. `lazy` asks once and keeps the answer (it redefines
# the variable it is called for, so nothing may be appended to it); a package
# pkg-config does not know stops the build with its name instead of a link
# line without it.
pkgconfig = $(if $(shell pkg-config --exists $(2) && echo ok),$(shell pkg-config $(1) $(2)),$(error pkg-config knows no $(2): run `make deps` (as root) first))
lazy = $(eval $(1) := $(call pkgconfig,$(2),$(3)))$($(1))
# Debian's NNG ships no .pc file, so it is named directly.
DEP_CFLAGS = $(call lazy,DEP_CFLAGS,--cflags,rocksdb libxxhash jansson)
PC_LIBS = $(call lazy,PC_LIBS,--libs,rocksdb libxxhash jansson)
DEP_LIBS = $(PC_LIBS) -lnng -lpthread -lm
# The tests' HTTP client only; the library never links curl.
CURL_LIBS = $(call lazy,CURL_LIBS,--libs,libcurl)
CURL_CFLAGS = $(call lazy,CURL_CFLAGS,--cflags,libcurl)
CHECK_CFLAGS = $(call lazy,CHECK_CFLAGS,--cflags,check)
CHECK_LIBS = $(call lazy,CHECK_LIBS,--libs,check)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) $(OPTFLAGS) $(SANFLAGS)
CFLAGS ?=
LDFLAGS ?=
LIB_CFLAGS = $(BASE_CFLAGS) -fPIC -fvisibility=hidden -DKV_BUILDING_LIBRARY \
	-Iinclude -Ilib $(DEP_CFLAGS) $(CFLAGS)
APP_CFLAGS := $(BASE_CFLAGS) -Iinclude $(CFLAGS)

LIB_SRC := $(sort $(wildcard lib/*.c))
LIB_OBJ := $(patsubst lib/%.c,$(BUILD)/obj/lib/%.o,$(LIB_SRC))
SONAME := libkvdist.so.$(VERSION_MAJOR)
SHLIB := $(BUILD)/libkvdist.so.$(VERSION)
STLIB := $(BUILD)/libkvdist.a
# The installed static library is one object whose only global symbols are
# the public API: the library's objects are linked into one (ld -r) and every
# hidden symbol is made local, so an application that links libkvdist.a meets
# no store_open or log_emit of ours. The tests and the nemesis harness reach
# internal functions (ring_*, vc_*, obj_*) through an archive of the plain
# objects, which is never installed.
STLIB_OBJ := $(BUILD)/obj/kvdist.o
INTLIB := $(BUILD)/libkvdist-internal.a
LD ?= ld
OBJCOPY ?= objcopy

EXAMPLES := embed kvdistd kvdist
EXAMPLE_BIN := $(patsubst %,$(BUILD)/examples/%,$(EXAMPLES))

TEST_SRC := $(sort $(wildcard test/check_*.c))
TEST_OBJ := $(patsubst test/%.c,$(BUILD)/obj/test/%.o,$(TEST_SRC))
TEST_BIN := $(BUILD)/test/check_kvdist
# The history checker is shared by the Check suite (its self-test) and the
# fault-injection harness (test/nemesis.c, kvdist-nemesis(1)).
HIST_OBJ := $(BUILD)/obj/test/history.o
NEMESIS_BIN := $(BUILD)/test/nemesis
# The short nemesis run inside `make check` (seconds, seed).
NEMESIS_CHECK_DURATION ?= 40
NEMESIS_CHECK_SEED ?= 8

# Everything the Makefile and headers change forces a rebuild.
HDRS := include/kvdist.h $(wildcard lib/*.h)

.PHONY: all lib examples check test demo deps install uninstall clean exports \
	callgraph bench bench-peers nemesis check-fresh fuzz fuzz-build fuzz-corpus
.DELETE_ON_ERROR:

all: lib examples

lib: $(SHLIB) $(STLIB) $(BUILD)/libkvdist.so

$(BUILD)/obj/lib/%.o: lib/%.c $(HDRS) Makefile | deps
	@mkdir -p $(@D)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(SHLIB): $(LIB_OBJ) | deps
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined $(SANFLAGS) \
		$(LDFLAGS) -o $@ $(LIB_OBJ) $(DEP_LIBS)

$(BUILD)/libkvdist.so: $(SHLIB)
	ln -sf libkvdist.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

$(STLIB_OBJ): $(LIB_OBJ)
	$(LD) -r -o $@.tmp $(LIB_OBJ)
	$(OBJCOPY) --localize-hidden $@.tmp $@
	rm -f $@.tmp

$(STLIB): $(STLIB_OBJ)
	rm -f $@
	ar rcs $@ $(STLIB_OBJ)

$(INTLIB): $(LIB_OBJ)
	rm -f $@
	ar rcs $@ $(LIB_OBJ)

examples: $(EXAMPLE_BIN) $(BUILD)/examples/kvdist-bench

# The benchmark's raw target calls RocksDB directly (the local limit), so
# it links RocksDB as well as the library.
$(BUILD)/examples/kvdist-bench: examples/kvdist-bench.c include/kvdist.h \
		$(BUILD)/libkvdist.so | deps
	@mkdir -p $(@D)
	$(CC) $(APP_CFLAGS) $(DEP_CFLAGS) $< -o $@ -L$(BUILD) -lkvdist \
		-Wl,-rpath,'$$ORIGIN/..' $(DEP_LIBS) $(LDFLAGS)

$(BUILD)/examples/%: examples/%.c include/kvdist.h $(BUILD)/libkvdist.so
	@mkdir -p $(@D)
	$(CC) $(APP_CFLAGS) $< -o $@ -L$(BUILD) -lkvdist \
		-Wl,-rpath,'$$ORIGIN/..' $(LDFLAGS)

# Tests link the internal archive so they can reach internal functions
# (ring_*, vc_*, obj_*) that neither installed library exports.
$(BUILD)/obj/test/%.o: test/%.c $(HDRS) test/check_kvdist.h test/history.h \
		Makefile | deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Iinclude -Ilib -Itest $(DEP_CFLAGS) $(CHECK_CFLAGS) \
		$(CURL_CFLAGS) $(CFLAGS) -c $< -o $@

$(TEST_BIN): $(TEST_OBJ) $(HIST_OBJ) $(INTLIB) | deps
	@mkdir -p $(@D)
	$(CC) $(SANFLAGS) $(LDFLAGS) -o $@ $(TEST_OBJ) $(HIST_OBJ) $(INTLIB) \
		$(DEP_LIBS) $(CHECK_LIBS) $(CURL_LIBS)

$(NEMESIS_BIN): $(BUILD)/obj/test/nemesis.o $(HIST_OBJ) $(INTLIB) | deps
	@mkdir -p $(@D)
	$(CC) $(SANFLAGS) $(LDFLAGS) -o $@ $^ $(DEP_LIBS)

# Both libraries export exactly the public API: compared against the
# committed list, so an accidental export (or a missing one) fails the build.
# For libkvdist.a every defined global counts, whatever its type (data,
# weak, common), so a symbol that instrumentation or a header adds is caught.
exports: $(SHLIB) $(STLIB)
	@nm -D --defined-only $(SHLIB) | awk '$$2 ~ /^[TDBR]$$/ {print $$3}' \
		| sort > $(BUILD)/exports.actual
	@nm -g --defined-only $(STLIB) | awk 'NF == 3 {print $$3}' \
		| sort > $(BUILD)/exports.static
	@if ! diff -u test/exports.txt $(BUILD)/exports.static; then \
		echo "exports: libkvdist.a global symbols differ from test/exports.txt"; exit 1; fi
	@grep -ho '\bkv_[a-z0-9_]*[[:space:]]*(' include/kvdist.h | tr -d ' (' \
		| sort -u > $(BUILD)/exports.header
	@if ! diff -u test/exports.txt $(BUILD)/exports.actual; then \
		echo "exports: libkvdist.so exports differ from test/exports.txt"; exit 1; fi
	@if ! diff -u test/exports.txt $(BUILD)/exports.header; then \
		echo "exports: include/kvdist.h declares differ from test/exports.txt"; exit 1; fi
	@echo "exports: $$(wc -l < test/exports.txt) public symbols in libkvdist.so and libkvdist.a, as listed"

# The files of lib/ call each other without a cycle (calls go down, STYLE.md):
# the graph from the objects' undefined and defined symbols, after the
# script's own test. Not yet part of check: main still has a cycle.
callgraph: $(LIB_OBJ)
	CC="$(CC)" bash test/callgraph-test.sh
	bash test/callgraph.sh $(LIB_OBJ)

check: deps all $(TEST_BIN) $(NEMESIS_BIN) exports callgraph
	CK_DEFAULT_TIMEOUT=120 KVDIST_BUILD=$(BUILD) \
		LSAN_OPTIONS=suppressions=$(CURDIR)/test/lsan.supp $(TEST_BIN)
	KVDIST_BUILD=$(BUILD) LSAN_OPTIONS=suppressions=$(CURDIR)/test/lsan.supp \
		$(NEMESIS_BIN) run --duration $(NEMESIS_CHECK_DURATION) \
		--seed $(NEMESIS_CHECK_SEED) --clients 3
	bash test/systemd-verify.sh $(BUILD)
ifneq ($(SANITIZE),1)
	bash test/install.sh
endif

# README's two commands on a new Debian 12 (debootstrap, chroot; as root,
# needs the Debian mirror and minutes): never part of check.
check-fresh:
	bash test/fresh-debian.sh

test: check

# The long fault-injection run (kvdist-nemesis(1)); README records one.
# NEMESIS_DURATION (seconds, default 1800), NEMESIS_SEED, NEMESIS_CLIENTS.
nemesis: deps all $(NEMESIS_BIN)
	KVDIST_BUILD=$(BUILD) LSAN_OPTIONS=suppressions=$(CURDIR)/test/lsan.supp \
		NEMESIS_DURATION=$${NEMESIS_DURATION:-1800} $(NEMESIS_BIN) run

demo: deps all
	@echo "== libkvdist $(VERSION): the embedded store ($(BUILD)/examples/embed)"
	@rm -rf $(BUILD)/demo-data
	$(BUILD)/examples/embed $(BUILD)/demo-data
	@rm -rf $(BUILD)/demo-data
	@echo
	bash examples/demo.sh $(BUILD)

# Benchmarks (README "Performance"): never part of check. make bench runs
# raw RocksDB, the embedded store and a 3-node loopback cluster, a load
# phase then BENCH_SECONDS split between puts and gets, and prints a
# markdown table; make bench-peers puts kvdistd's RESP port next to Redis.
BENCH_SECONDS ?= 20
BENCH_KEYS ?= 50000
bench: deps all
	$(BUILD)/examples/kvdist-bench --suite --duration $(BENCH_SECONDS) \
		--keys $(BENCH_KEYS)

bench-peers: deps all
	bash examples/bench-peers.sh $(BUILD)

# Fuzzing (README "Fuzzing"): one libFuzzer target per decoder in
# test/fuzz/, built by clang with ASan and UBSan into build/fuzz/, never
# mixed with the gcc objects. lib/ is compiled again there with coverage
# instrumentation (-fsanitize=fuzzer-no-link) into an archive each target
# links. make fuzz runs every target for FUZZ_SECONDS on its seed corpus
# (test/fuzz/corpus/NAME, read only; what a run adds goes to
# build/fuzz/corpus/NAME) and fails on the first finding: a crash, a leak,
# any UBSan report (no recovery) or a broken invariant (the target aborts).
# The input that did it is left in build/fuzz/artifacts/. The seeds come
# from the real encoders: make fuzz-corpus writes them again.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := wire batch gossip object context resp http options config
FUZZ_BUILD := build/fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) -O1 -g $(FUZZ_SAN) \
	-Iinclude -Ilib $(DEP_CFLAGS)
FUZZ_LIB_OBJ := $(patsubst lib/%.c,$(FUZZ_BUILD)/obj/lib/%.o,$(LIB_SRC))
FUZZ_LIB := $(FUZZ_BUILD)/libkvdist-fuzz.a
FUZZ_BIN := $(patsubst %,$(FUZZ_BUILD)/fuzz_%,$(FUZZ_TARGETS))
FUZZ_ENV := ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

$(FUZZ_BUILD)/obj/lib/%.o: lib/%.c $(HDRS) Makefile | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -DKV_BUILDING_LIBRARY \
		-c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	rm -f $@
	ar rcs $@ $(FUZZ_LIB_OBJ)

$(FUZZ_BUILD)/fuzz_%: test/fuzz/fuzz_%.c test/fuzz/fuzz.h $(HDRS) \
		$(FUZZ_LIB) Makefile | deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer $< -o $@ $(FUZZ_LIB) \
		$(DEP_LIBS)

# The daemon's config reader is static in kvdistd.c: its target compiles
# that file (fuzz_config.c includes it).
$(FUZZ_BUILD)/fuzz_config: examples/kvdistd.c

fuzz-build: $(FUZZ_BIN)

fuzz: deps fuzz-build
	@rm -rf $(FUZZ_BUILD)/artifacts
	@mkdir -p $(FUZZ_BUILD)/artifacts $(FUZZ_BUILD)/logs
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		$(FUZZ_ENV) $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
			-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t- \
			$(FUZZ_BUILD)/corpus/$$t test/fuzz/corpus/$$t \
			> $(FUZZ_BUILD)/logs/$$t.log 2>&1; \
		rc=$$?; \
		execs=$$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) .*/\1 executions in \2 s/p' \
			$(FUZZ_BUILD)/logs/$$t.log); \
		cov=$$(sed -n 's/^#[0-9]*[[:space:]]*DONE *\(cov: [0-9]*\).*\(corp: [^ ]*\).*/\1, \2/p' \
			$(FUZZ_BUILD)/logs/$$t.log); \
		if [ $$rc -ne 0 ] || ls $(FUZZ_BUILD)/artifacts/$$t-* >/dev/null 2>&1; then \
			tail -n 60 $(FUZZ_BUILD)/logs/$$t.log; \
			echo "fuzz: $$t FAILED (exit $$rc): see $(FUZZ_BUILD)/logs/$$t.log" \
				"and $(FUZZ_BUILD)/artifacts/"; \
			exit 1; \
		fi; \
		echo "fuzz: $$t ok: $${execs:-? executions} ($$cov)"; \
	done

# The seed corpora, written by the real encoders (test/fuzz/corpus.c,
# linked with the gcc build's internal archive); the output is committed.
$(BUILD)/test/fuzz-corpus: test/fuzz/corpus.c test/fuzz/fuzz.h $(HDRS) \
		$(INTLIB) | deps
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -Iinclude -Ilib $(DEP_CFLAGS) $(CFLAGS) $< -o $@ \
		$(INTLIB) $(DEP_LIBS) $(LDFLAGS)

fuzz-corpus: $(BUILD)/test/fuzz-corpus
	rm -rf test/fuzz/corpus
	$(BUILD)/test/fuzz-corpus test/fuzz/corpus
	cp examples/kvdistd.conf test/fuzz/corpus/config/kvdistd.conf

# Debian packages the build, the tests and the demo need. Adding one here
# is how a dependency enters the project (README says why each is there).
DEB_PACKAGES := build-essential pkg-config librocksdb-dev libnng-dev \
	libxxhash-dev check redis-tools redis-server libjansson-dev \
	libcurl4-openssl-dev haproxy openssl curl iproute2 nftables systemd \
	python3-redis clang libclang-rt-14-dev

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' \
			|| missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "deps: installing$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q --no-install-recommends $$missing \
			|| { apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; }; \
	else \
		echo "deps: missing$$missing; run as root:"; \
		echo "  apt-get update && apt-get install -y$$missing"; exit 1; \
	fi

MAN3 := $(wildcard man/*.3)
# kvdist-nemesis(1) documents a test harness that is not installed.
MAN1 := $(filter-out man/kvdist-nemesis.1,$(wildcard man/*.1))
MAN7 := $(wildcard man/*.7)

install: all
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(BINDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man7
	install -m 644 include/kvdist.h $(DESTDIR)$(INCLUDEDIR)/kvdist.h
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf libkvdist.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libkvdist.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/
	# generated here, not cached: it records this install's PREFIX
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
		-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
		pkgconfig/kvdist.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/kvdist.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/kvdist.pc
	for b in $(EXAMPLES); do \
		$(CC) $(APP_CFLAGS) examples/$$b.c -o $(DESTDIR)$(BINDIR)/$$(echo $$b | sed 's/^embed$$/kvdist-embed/') \
			-L$(DESTDIR)$(LIBDIR) -lkvdist -Wl,-rpath,$(LIBDIR) $(LDFLAGS) || exit 1; \
	done
	$(CC) $(APP_CFLAGS) $(DEP_CFLAGS) examples/kvdist-bench.c \
		-o $(DESTDIR)$(BINDIR)/kvdist-bench -L$(DESTDIR)$(LIBDIR) -lkvdist \
		-Wl,-rpath,$(LIBDIR) $(DEP_LIBS) $(LDFLAGS)
	$(if $(MAN1),install -m 644 $(MAN1) $(DESTDIR)$(MANDIR)/man1/)
	$(if $(MAN3),install -m 644 $(MAN3) $(DESTDIR)$(MANDIR)/man3/)
	$(if $(MAN7),install -m 644 $(MAN7) $(DESTDIR)$(MANDIR)/man7/)

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/kvdist.h \
		$(DESTDIR)$(LIBDIR)/libkvdist.so.$(VERSION) \
		$(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libkvdist.so \
		$(DESTDIR)$(LIBDIR)/libkvdist.a $(DESTDIR)$(PKGCONFIGDIR)/kvdist.pc
	for b in $(EXAMPLES); do \
		rm -f $(DESTDIR)$(BINDIR)/$$(echo $$b | sed 's/^embed$$/kvdist-embed/'); done
	rm -f $(DESTDIR)$(BINDIR)/kvdist-bench
	for m in $(notdir $(MAN1)); do rm -f $(DESTDIR)$(MANDIR)/man1/$$m; done
	for m in $(notdir $(MAN3)); do rm -f $(DESTDIR)$(MANDIR)/man3/$$m; done
	for m in $(notdir $(MAN7)); do rm -f $(DESTDIR)$(MANDIR)/man7/$$m; done

clean:
	rm -rf build
