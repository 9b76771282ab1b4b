# Makefile: build, test and install ldapfeed.  configure (from configure.ac)
# writes config.mk; a fresh clone runs it on the first `make`.

-include config.mk

STD	= -std=c11 -D_GNU_SOURCE
ALL_CFLAGS = $(STD) $(WARNFLAGS) -Iinclude $(CPPFLAGS) $(CFLAGS)

SRCS	= $(wildcard src/*.c)
OBJS	= $(SRCS:.c=.o)
LIBOBJS	= $(filter-out src/main.o,$(OBJS))
UNIT_SRCS = $(wildcard tests/unit/test_*.c)
UNIT_BINS = $(UNIT_SRCS:.c=)
TOOL_SRCS = $(wildcard tests/tools/*.c)
TOOL_BINS = $(TOOL_SRCS:.c=)

.PHONY: check-valgrind check-389ds check-ad all deps check test check-asan fuzz clean distclean

# Objects depend on the flags they were built with, so that switching to a
# sanitizer build (check-asan) and back rebuilds everything.
FLAGS_STAMP = .build-flags
$(shell echo '$(CC) $(CFLAGS) $(LDFLAGS)' | cmp -s - $(FLAGS_STAMP) || \
    echo '$(CC) $(CFLAGS) $(LDFLAGS)' > $(FLAGS_STAMP))
$(FLAGS_STAMP): ;

all: ldapfeed ldapfeed-nats-tail

config.mk: configure.ac config.mk.in
	@command -v autoconf >/dev/null || { \
	    echo "autoconf not found: run 'make deps' or apt-get install autoconf" >&2; \
	    exit 1; }
	autoconf
	./configure

ldapfeed: $(OBJS)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

# The stream's reader (ldapfeed-nats-tail.1): a program of its own.
ldapfeed-nats-tail: tools/nats-tail.c config.mk $(FLAGS_STAMP)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIBS)

src/%.o: src/%.c include/ldapfeed.h config.mk $(FLAGS_STAMP)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

libldapfeed.a: $(LIBOBJS)
	@rm -f $@
	@ar rcs $@ $(LIBOBJS)

tests/unit/%: tests/unit/%.c tests/unit/tap.h tests/unit/fixtures.h libldapfeed.a $(FLAGS_STAMP)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< libldapfeed.a $(LIBS)

tests/tools/%: tests/tools/%.c libldapfeed.a $(FLAGS_STAMP)
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< libldapfeed.a $(LIBS)

# Installs the Debian packages that building and testing need, if missing.
deps:
	@sh scripts/deps

check:
	@sh scripts/deps promtool
	$(MAKE) all $(UNIT_BINS) $(TOOL_BINS)
	python3 tests/run

# Just the tests, for a machine that already has everything.
test: all $(UNIT_BINS) $(TOOL_BINS)
	python3 tests/run $(T)

# The whole suite again under AddressSanitizer and UndefinedBehaviorSanitizer
# (a separate build; the next plain `make` rebuilds without them).
ASAN_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=all
check-asan:
	@sh scripts/deps promtool
	$(MAKE) all $(UNIT_BINS) $(TOOL_BINS) CFLAGS="$(ASAN_FLAGS)" \
	    LDFLAGS="-fsanitize=address,undefined"
	ASAN_OPTIONS=abort_on_error=0:detect_leaks=1:exitcode=86:fast_unwind_on_malloc=0:disable_coredump=0 \
	    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    E2E_TIME_SCALE=3 python3 tests/run

# The end-to-end tests against a real 389 Directory Server (tests/e2e/
# test_389ds.py and test_389ds_chaos.py: one throwaway instance each under
# a temp dir, on 127.0.0.1, without systemd).  Not part of `make check`:
# tests/run runs those files only when asked by name.
check-389ds: deps
	@sh scripts/deps 389ds
	$(MAKE) all
	TEST_TIMEOUT=900 python3 tests/run 389ds

# The end-to-end tests against a real Samba Active Directory domain
# controller (tests/e2e/test_ad.py: one throwaway DC provisioned under a
# temp dir, on its unix socket alone, without systemd).  Not part of `make
# check`: tests/run runs that file only when asked by name.
check-ad: deps
	@sh scripts/deps samba
	$(MAKE) all
	TEST_TIMEOUT=1200 python3 tests/run test_ad

# Valgrind memcheck on end-to-end tests (T: which, else VALGRIND_TESTS; all
# of them would be slow):
# every ldapfeed process under valgrind, one log per pid in valgrind-logs/,
# and a summary.  A memory error or a definite leak makes that process exit
# 99, which fails its test.
VALGRIND_TESTS = test_sync test_daemon
check-valgrind: deps all $(UNIT_BINS) $(TOOL_BINS)
	@sh scripts/deps valgrind
	rm -rf valgrind-logs && mkdir valgrind-logs
	TEST_WRAP="valgrind --trace-children=yes --leak-check=full \
	    --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
	    --error-exitcode=99 --log-file=$(CURDIR)/valgrind-logs/%p.log" \
	    python3 tests/run $(or $(T),$(VALGRIND_TESTS)); rc=$$?; \
	python3 scripts/valgrind-summary valgrind-logs && exit $$rc

# libFuzzer (clang) on every parser of outside bytes, FUZZ_SECS each.
FUZZERS	= tests/fuzz/fuzz_syncrepl tests/fuzz/fuzz_config tests/fuzz/fuzz_wire \
	tests/fuzz/fuzz_entry tests/fuzz/fuzz_msctl
FUZZ_SECS ?= 60
FUZZ_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 -Iinclude \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
tests/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(filter-out src/main.c,$(SRCS)) include/ldapfeed.h
	@echo "  FUZZ    $<"
	@clang $(FUZZ_CFLAGS) $(CPPFLAGS) -o $@ $< $(filter-out src/main.c,$(SRCS)) $(LIBS)
fuzz:
	@sh scripts/deps clang
	@$(MAKE) $(FUZZERS)
	@for f in $(FUZZERS); do \
	    n=$${f##*/fuzz_}; work=$$(mktemp -d); \
	    echo "fuzz: $$n for $(FUZZ_SECS) s"; \
	    ./$$f -max_total_time=$(FUZZ_SECS) -print_final_stats=1 \
	        -artifact_prefix=tests/fuzz/crash-$$n- $$work \
	        tests/fuzz/corpus/$$n 2>&1 | grep -E 'ERROR|SUMMARY|number_of_executed_units' ; \
	    rc=$$?; rm -rf $$work; \
	    ls tests/fuzz/crash-$$n-* >/dev/null 2>&1 && { echo "fuzz: $$n crashed"; exit 1; }; \
	done; echo "fuzz: no crash"

clean:
	rm -f ldapfeed ldapfeed-nats-tail libldapfeed.a src/*.o $(UNIT_BINS) $(TOOL_BINS) $(FUZZERS) $(FLAGS_STAMP)
	rm -rf valgrind-logs

distclean: clean
	rm -rf config.mk config.log config.status configure autom4te.cache

# Installing.  configure's config.mk sets prefix, sbindir, mandir and docdir;
# `make install PREFIX=/usr DESTDIR=/tmp/pkg` works too, with or without it.
PACKAGE_TARNAME = ldapfeed
ifneq ($(PREFIX),)
prefix	= $(PREFIX)
endif
prefix	?= /usr/local
exec_prefix ?= $(prefix)
sbindir	?= $(exec_prefix)/sbin
bindir	?= $(exec_prefix)/bin
datarootdir ?= $(prefix)/share
mandir	?= $(datarootdir)/man
docdir	?= $(datarootdir)/doc/$(PACKAGE_TARNAME)
INSTALL	?= install
DOCS	= README.md LICENSE
EXAMPLE_SCRIPTS = examples/consumer.py examples/ldapfeed.init
EXAMPLE_FILES = examples/ldapfeed.service examples/ldapfeed.default

install: ldapfeed ldapfeed-nats-tail
	$(INSTALL) -d $(DESTDIR)$(sbindir) $(DESTDIR)$(bindir) \
	    $(DESTDIR)$(mandir)/man8 $(DESTDIR)$(mandir)/man1 \
	    $(DESTDIR)$(docdir)/examples
	$(INSTALL) -m 755 ldapfeed $(DESTDIR)$(sbindir)/ldapfeed
	$(INSTALL) -m 755 ldapfeed-nats-tail $(DESTDIR)$(bindir)/ldapfeed-nats-tail
	$(INSTALL) -m 644 man/ldapfeed.8 $(DESTDIR)$(mandir)/man8/ldapfeed.8
	$(INSTALL) -m 644 man/ldapfeed-nats-tail.1 $(DESTDIR)$(mandir)/man1/ldapfeed-nats-tail.1
	$(INSTALL) -m 644 $(DOCS) $(DESTDIR)$(docdir)/
	$(INSTALL) -m 755 $(EXAMPLE_SCRIPTS) $(DESTDIR)$(docdir)/examples/
	$(INSTALL) -m 644 $(EXAMPLE_FILES) $(DESTDIR)$(docdir)/examples/

uninstall:
	rm -f $(DESTDIR)$(sbindir)/ldapfeed $(DESTDIR)$(mandir)/man8/ldapfeed.8
	rm -f $(DESTDIR)$(bindir)/ldapfeed-nats-tail $(DESTDIR)$(mandir)/man1/ldapfeed-nats-tail.1
	rm -f $(addprefix $(DESTDIR)$(docdir)/,$(DOCS))
	rm -f $(addprefix $(DESTDIR)$(docdir)/examples/,$(notdir $(EXAMPLE_SCRIPTS) $(EXAMPLE_FILES)))
	rmdir $(DESTDIR)$(docdir)/examples $(DESTDIR)$(docdir) 2>/dev/null || true

# A throwaway slapd, the example consumer and ldapfeed, end to end.
demo: deps
	$(MAKE) all
	python3 scripts/demo
