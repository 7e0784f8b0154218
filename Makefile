# Provium: a plain GNU Makefile.
#   make                      build ./provium (host, with the static agent embedded)
#   make DEVELOPER=1          strict warnings, -Werror
#   make SANITIZE=address,undefined
#   make deps | demo | check | bench | fuzz | format | install PREFIX=/usr/local | deb | clean

PREFIX ?= /usr/local
CC ?= gcc
MUSL_CC ?= musl-gcc
comma := ,
B := build
ifneq ($(SANITIZE),)
B := build/sanitize-$(subst $(comma),-,$(SANITIZE))
endif

WARN := -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
ifeq ($(DEVELOPER),1)
WARN += -Werror -Wshadow -Wformat=2 -Wundef -Wpointer-arith -Wstrict-prototypes \
        -Wmissing-prototypes -Wvla -Wimplicit-fallthrough -Wcast-align -Wwrite-strings \
        -Wno-format-nonliteral
endif

CFLAGS ?= -O2 -g
BASE_CFLAGS := -std=gnu11 -D_GNU_SOURCE $(WARN) -Isrc -Isrc/common -Isrc/host -I$(B)/gen \
               -I/usr/include/lua5.4 -fno-strict-aliasing
ifneq ($(SANITIZE),)
BASE_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
SAN_LDFLAGS := -fsanitize=$(SANITIZE)
endif
HOST_CFLAGS = $(BASE_CFLAGS) $(CFLAGS)
LUA_A := $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/liblua5.4.a /usr/lib/liblua5.4.a))
HOST_LIBS = $(LUA_A) -ljansson -lmsgpackc -ledit -lcrypto -lz -llzma -lzstd -llz4 -lm -ldl -lpthread

# The agent: static musl binary. musl-gcc does not see the kernel UAPI
# headers, so give it a directory of links to linux/, asm/ and asm-generic/.
AGENT_CFLAGS := -std=gnu11 -D_GNU_SOURCE $(WARN) -Isrc -Isrc/common -I$(B)/musl-inc \
                -Os -g0 -static -ffunction-sections -fdata-sections
AGENT_LDFLAGS := -static -Wl,--gc-sections -s

COMMON_SRCS := $(wildcard src/common/*.c)
PROTO_SRCS  := $(wildcard src/proto/*.c)
AGENT_CORE  := $(filter-out src/agent/main.c,$(wildcard src/agent/*.c))
HOST_SRCS   := $(filter-out src/host/main.c,$(wildcard src/host/*.c src/host/net/*.c src/host/disk/*.c src/host/lua/*.c))
LIB_SRCS    := $(COMMON_SRCS) $(PROTO_SRCS) $(AGENT_CORE) $(HOST_SRCS)
LIB_OBJS    := $(patsubst %.c,$(B)/host/%.o,$(LIB_SRCS)) $(B)/host/embed.o
AGENT_SRCS  := $(COMMON_SRCS) $(PROTO_SRCS) $(wildcard src/agent/*.c)
LUA_PRELUDE := $(sort $(wildcard lua/*.lua))

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRCS))
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(B)/fuzz/%,$(FUZZ_SRCS))

VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1)

all: provium

# Each flavour (plain, SANITIZE=...) links in its own build directory;
# ./provium is whichever was built last: renamed into place, so that a
# provium still running from the old one neither fails the copy nor breaks.
provium: $(B)/provium
	@cmp -s $< $@ || { cp $< $@.tmp && mv -f $@.tmp $@; }

$(B)/provium: $(B)/host/src/host/main.o $(B)/libprovium.a
	$(CC) $(HOST_CFLAGS) -o $@ $^ $(HOST_LIBS) $(SAN_LDFLAGS)

$(B)/libprovium.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(B)/host/%.o: %.c $(B)/gen/cflags | $(B)/gen/version.h $(B)/gen/sysnames.h $(B)/gen/capnames.h
	@mkdir -p $(dir $@)
	$(CC) $(HOST_CFLAGS) -MMD -MP -c -o $@ $<

# Everything provium carries inside itself: the agent and the Lua prelude.
$(B)/host/embed.o: $(B)/gen/embed.S $(B)/provium-agent $(LUA_PRELUDE)
	@mkdir -p $(dir $@)
	$(CC) -c -o $@ $<

$(B)/gen/embed.S: Makefile $(LUA_PRELUDE)
	@mkdir -p $(dir $@)
	@{ echo '.section .rodata'; \
	   echo '.global pv_agent_bin, pv_agent_bin_end'; \
	   echo '.balign 16'; echo 'pv_agent_bin: .incbin "$(CURDIR)/$(B)/provium-agent"'; \
	   echo 'pv_agent_bin_end: .byte 0'; \
	   echo '.section .data.rel.ro,"aw"'; echo '.global pv_prelude_index'; echo '.balign 8'; \
	   echo 'pv_prelude_index:'; \
	   $(foreach f,$(LUA_PRELUDE),echo '.quad pvp_n_$(notdir $(basename $(f))), pvp_s_$(notdir $(basename $(f))), pvp_e_$(notdir $(basename $(f)))';) \
	   echo '.quad 0, 0, 0'; \
	   $(foreach f,$(LUA_PRELUDE),echo 'pvp_n_$(notdir $(basename $(f))): .asciz "$(notdir $(basename $(f)))"'; echo 'pvp_s_$(notdir $(basename $(f))): .incbin "$(CURDIR)/$(f)"'; echo 'pvp_e_$(notdir $(basename $(f))): .byte 0';) \
	   echo '.section .note.GNU-stack,"",@progbits'; } > $@

# The flags objects were built with: switching DEVELOPER=1 on or off (or
# CFLAGS) rebuilds everything, so no warning hides in an old object.
$(B)/gen/cflags: FORCE
	@mkdir -p $(dir $@)
	@echo '$(HOST_CFLAGS) | $(AGENT_CFLAGS)' > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@

$(B)/gen/version.h: FORCE
	@mkdir -p $(dir $@)
	@echo '#define PV_VERSION "$(VERSION)"' > $@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@

# x86-64 syscall numbers by name, from the kernel UAPI headers (linux-libc-dev).
UNISTD_64 := /usr/include/x86_64-linux-gnu/asm/unistd_64.h
$(B)/gen/sysnames.h: $(UNISTD_64)
	@mkdir -p $(dir $@)
	@sed -n 's/^#define __NR_\([a-z0-9_]*\) \([0-9]*\)$$/    {"\1", \2},/p' $< > $@.tmp
	@test -s $@.tmp || { echo "no syscall numbers in $<" >&2; exit 1; }
	@mv $@.tmp $@

# Capability numbers by name (lower case, no CAP_), from linux/capability.h.
CAPABILITY_H := /usr/include/linux/capability.h
$(B)/gen/capnames.h: $(CAPABILITY_H)
	@mkdir -p $(dir $@)
	@sed -n 's/^#define CAP_\([A-Z_]*\) *\([0-9][0-9]*\)$$/    {"\L\1\E", \2},/p' $< > $@.tmp
	@test -s $@.tmp || { echo "no capabilities in $<" >&2; exit 1; }
	@mv $@.tmp $@

$(B)/musl-inc/.stamp:
	@mkdir -p $(B)/musl-inc
	@for d in linux asm-generic; do ln -sfn /usr/include/$$d $(B)/musl-inc/$$d; done
	@ln -sfn /usr/include/x86_64-linux-gnu/asm $(B)/musl-inc/asm
	@touch $@

$(B)/provium-agent: $(AGENT_SRCS) $(wildcard src/*/*.h) $(B)/musl-inc/.stamp $(B)/gen/cflags \
                   | $(B)/gen/version.h
	@mkdir -p $(dir $@)
	$(MUSL_CC) $(AGENT_CFLAGS) -I$(B)/gen -o $@ $(AGENT_SRCS) $(AGENT_LDFLAGS)

# Tests run under ASan and UBSan: a sanitised copy of the host library (it
# contains the agent core too, for the socketpair tests).
TEST_SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_OBJS := $(patsubst %.c,$(B)/san/%.o,$(LIB_SRCS)) $(B)/host/embed.o

$(B)/san/%.o: %.c $(B)/gen/cflags | $(B)/gen/version.h $(B)/gen/sysnames.h $(B)/gen/capnames.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O1 -g $(TEST_SAN) -MMD -MP -c -o $@ $<

$(B)/libprovium-san.a: $(SAN_OBJS)
	@rm -f $@
	ar rcs $@ $^

# Unit tests: one binary per tests/unit/test_*.c.
$(B)/tests/%: tests/unit/%.c $(B)/libprovium-san.a $(B)/provium-agent
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O1 -g $(TEST_SAN) -Itests/unit \
	    -DPV_AGENT_BIN='"$(CURDIR)/$(B)/provium-agent"' -o $@ $< $(B)/libprovium-san.a \
	    $(HOST_LIBS) -lcmocka

# Fuzz smoke: each target with the corpus driver (tests/fuzz/driver.c).
$(B)/fuzz/%: tests/fuzz/%.c tests/fuzz/driver.c $(B)/libprovium-san.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O1 -g $(TEST_SAN) -o $@ $< tests/fuzz/driver.c \
	    $(B)/libprovium-san.a $(HOST_LIBS)

units: $(UNIT_BINS)
fuzzers: $(FUZZ_BINS)

deps:
	@tools/deps

kernel: provium
	@./provium kernel ensure

demo: deps
	@$(MAKE) --no-print-directory provium
	@./provium kernel ensure
	cd examples && ../provium

check: deps
	@$(MAKE) --no-print-directory provium units fuzzers
	@./provium kernel ensure
	@tests/check

bench: deps
	@$(MAKE) --no-print-directory provium $(B)/switch_rate
	@./provium kernel ensure
	@$(B)/switch_rate 2
	@bench/boot
	@bench/parallel
	@bench/suite

# The switch's forwarding rate, without VMs (make bench).
$(B)/switch_rate: bench/switch_rate.c $(B)/libprovium.a
	$(CC) $(HOST_CFLAGS) -o $@ $< $(B)/libprovium.a $(HOST_LIBS) $(SAN_LDFLAGS)

# libFuzzer builds for longer runs: make fuzz FUZZ_SECONDS=60 [FUZZ_TARGETS="qmp chan"]
fuzz:
	@FUZZ_FORK=$(FUZZ_FORK) tests/fuzz/run-libfuzzer $(or $(FUZZ_SECONDS),60) $(FUZZ_TARGETS)

# The tree's format is .clang-format's (docs/architecture.md#format).
FORMAT_SRCS = $(wildcard src/*/*.[ch] src/host/lua/*.[ch] src/host/net/*.[ch] src/host/disk/*.[ch] tests/unit/*.[ch] tests/fuzz/*.[ch])
format:
	clang-format -i $(FORMAT_SRCS)

print-lib-srcs:
	@echo $(filter-out %/main.c,$(LIB_SRCS))

install: provium
	install -D -m 0755 provium $(DESTDIR)$(PREFIX)/bin/provium
	ln -sf provium $(DESTDIR)$(PREFIX)/bin/provium-coverage
	install -D -m 0644 docs/provium.1 $(DESTDIR)$(PREFIX)/share/man/man1/provium.1

# provium_<version>_amd64.deb here, from the built binary (tools/mkdeb).
deb: provium
	@tools/mkdeb ./provium .

clean:
	rm -rf $(B) provium

FORCE:
.PHONY: all provium deps demo check bench fuzz format install deb clean units fuzzers kernel print-lib-srcs FORCE
-include $(shell find $(B)/host $(B)/san -name '*.d' 2>/dev/null)
