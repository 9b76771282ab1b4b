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

.PHONY: all deps check unit e2e clean distclean install uninstall demo

all: ldapfeed

config.mk: configure.ac config.mk.in
	@command -v autoconf >/dev/null || { \
	    echo "autoconf not found: run 'make deps' or apt-get install autoconf" >&2; \
	    exit 1; }
	autoconf
	./configure

ldapfeed: $(OBJS)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $(OBJS) $(LIBS)

src/%.o: src/%.c include/ldapfeed.h config.mk
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -c -o $@ $<

libldapfeed.a: $(LIBOBJS)
	@rm -f $@
	@ar rcs $@ $(LIBOBJS)

tests/unit/%: tests/unit/%.c tests/unit/tap.h libldapfeed.a
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< libldapfeed.a $(LIBS)

tests/tools/%: tests/tools/%.c libldapfeed.a
	@echo "  CC      $<"
	@$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< libldapfeed.a $(LIBS)

# Installs the Debian packages that building and testing need, if missing.
deps:
	@sh scripts/deps

check: deps
	$(MAKE) all $(UNIT_BINS) $(TOOL_BINS)
	python3 tests/run

# Just the tests, for a machine that already has everything.
test: all $(UNIT_BINS) $(TOOL_BINS)
	python3 tests/run $(T)

clean:
	rm -f ldapfeed libldapfeed.a src/*.o $(UNIT_BINS) $(TOOL_BINS)

distclean: clean
	rm -rf config.mk config.log config.status configure autom4te.cache
