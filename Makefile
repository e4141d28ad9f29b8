# evtcp - build, test, demo, install, sanitize, bench.
#
# The variables are the ones LuaRocks passes (CFLAGS, LIBFLAG, LUA_INCDIR,
# LUADIR, LIBDIR), so `make` and `luarocks make` agree.

LUA        ?= lua5.4
PKG_CONFIG ?= pkg-config
# Lua 5.4's headers: pkg-config's answer (Debian: lua5.4, Fedora and
# Homebrew: lua, FreeBSD: lua-5.4 or lua54), else the first of the places
# the systems put them; the build stops with one line if none has them.
LUA_INC_SEARCH ?= /usr/include/lua5.4 /usr/local/include/lua5.4 /usr/include/lua-5.4 /usr/local/include/lua-5.4 \
                  /usr/local/include/lua54 /opt/homebrew/include/lua5.4 /opt/homebrew/include/lua \
                  /usr/local/include/lua /usr/include /usr/local/include /opt/homebrew/include
LUA_INCDIR ?= $(or $(patsubst -I%,%,$(firstword $(foreach p,lua5.4 lua-5.4 lua54 lua,\
                $(shell $(PKG_CONFIG) --cflags-only-I $(p) 2>/dev/null)))),\
                $(patsubst %/lua.h,%,$(firstword $(wildcard $(addsuffix /lua.h,$(LUA_INC_SEARCH))))))
LUA_LIBS   ?= $(shell $(PKG_CONFIG) --libs lua5.4 2>/dev/null || echo -llua5.4)
EVENT_LIBS ?= $(shell $(PKG_CONFIG) --libs libevent libevent_openssl openssl 2>/dev/null || echo -levent_openssl -levent -lssl -lcrypto)
CC         ?= cc
CFLAGS     ?= -O2 -g
WARN        = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror=implicit-function-declaration
# macOS loads Lua modules as bundles whose Lua symbols come from the host
ifeq ($(shell uname -s),Darwin)
LIBFLAG    ?= -bundle -undefined dynamic_lookup
else
LIBFLAG    ?= -shared
endif
LUADIR     ?= /usr/local/share/lua/5.4
LIBDIR     ?= /usr/local/lib/lua/5.4
BUILD      ?= build
# busted from PATH (Debian's, or a LuaRocks one); .busted names the
# interpreter, so one that starts under another Lua restarts under lua5.4
BUSTED     ?= busted

SRC  = $(wildcard src/*.c)
HDRS = $(wildcard src/*.h)
CORE = $(BUILD)/evtcp/core.so

# Debian packages, per target: the build's (make, make demo), the specs'
# and their real peers (make test, sanitize, fuzz, stress), the bench's.
BUILD_DEPS = gcc libc6-dev lua5.4 liblua5.4-dev libevent-dev libssl-dev pkg-config
TEST_DEPS  = $(BUILD_DEPS) luarocks lua-busted lua-socket clang socat netcat-openbsd redis-server postgresql \
             python3 lua-luv haproxy strace lua-check git
BENCH_DEPS = $(TEST_DEPS) nodejs redis-tools wrk
DEPS      ?= $(TEST_DEPS)
# Packages that Debian starts as services when they are installed: the
# specs start their own, in temp dirs, so the system's are stopped and
# disabled again right after the install.
SERVICES   = redis-server haproxy postgresql

.PHONY: all checkout warnings lint deps build-deps test-deps bench-deps test demo install sanitize fuzz stress bench bench-quick clean

# (the checkout's copy is the plain build's, never the sanitizer's)
all: $(CORE) $(BUILD)/two_states $(BUILD)/sockopt.so $(if $(filter build,$(BUILD)),checkout)

# Runs from a checkout: lua5.4's default paths include ./?.so and
# ./?/init.lua, so evtcp/core.so and evtcp/init.lua at the root let
# `lua5.4 examples/x.lua` and plain `busted` work there with no environment.
checkout: $(CORE)
	@mkdir -p evtcp
	@cp $(CORE) evtcp/core.so
	@ln -sfn ../lua/evtcp/init.lua evtcp/init.lua

# The spec helper that reads socket options from the kernel's side.
$(BUILD)/sockopt.so: spec/sockopt.c
	$(need_headers)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -fPIC -I$(LUA_INCDIR) $(LIBFLAG) -o $@ $<

# The spec helper that runs evtcp in two Lua states in two threads.
$(BUILD)/two_states: spec/two_states.c
	$(need_headers)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -I$(LUA_INCDIR) -o $@ $< $(LUA_LIBS) -lpthread

# What the build needs, checked before compiling: one line saying what is
# missing and how to install it, instead of a screen of compiler errors.
define need_headers
	@if [ -z "$(LUA_INCDIR)" ] || ! grep -qs 'define LUA_VERSION_NUM.*504' "$(LUA_INCDIR)/lua.h"; then \
	  echo "evtcp: Lua 5.4's headers (lua.h) not found$(if $(LUA_INCDIR), in $(LUA_INCDIR)); install them: apt-get install liblua5.4-dev | dnf install lua-devel | brew install lua | pkg install lua54 -- or give make LUA_INCDIR=/dir/with/lua.h" >&2; \
	  exit 1; \
	fi
	@if ! printf '#include <event2/bufferevent_ssl.h>\n#include <openssl/ssl.h>\n' | $(CC) $(CFLAGS) -E -x c - >/dev/null 2>&1; then \
	  echo "evtcp: libevent's or OpenSSL's headers not found; install them: apt-get install libevent-dev libssl-dev | dnf install libevent-devel openssl-devel | brew install libevent openssl" >&2; \
	  exit 1; \
	fi
endef

$(CORE): $(SRC) $(HDRS) Makefile
	$(need_headers)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -fPIC -I$(LUA_INCDIR) $(LIBFLAG) -o $@ $(SRC) $(EVENT_LIBS)

# The C core compiles without a warning under gcc and clang in strict C99
# (the CI gate for portability: the sources use no GNU extension).
STRICT = -std=c99 -pedantic -Werror $(WARN) -O2 -fPIC -I$(LUA_INCDIR) $(LIBFLAG)
warnings:
	@mkdir -p $(BUILD)
	@for cc in gcc clang; do \
	  if command -v $$cc >/dev/null 2>&1; then \
	    $$cc $(STRICT) -o $(BUILD)/strict-$$cc.so $(SRC) $(EVENT_LIBS) && echo "$$cc -std=c99 -pedantic: built, no warnings"; \
	  else echo "$$cc: not installed, skipped"; fi; \
	done

# Installs what is missing, through apt-get (root) or sudo; a machine that
# has everything pays one dpkg query.
deps:
	@if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "evtcp: no apt-get here; skipping the install step (needs: Lua 5.4 with headers, libevent 2.1 with libevent_openssl, OpenSSL, busted; the specs also use socat, redis-server, postgresql, python3, luv, haproxy)"; \
	  exit 0; \
	fi; \
	missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null || exit 1; \
	  for s in $(SERVICES); do \
	    case " $$missing " in *" $$s "*) \
	      if [ -d /run/systemd/system ]; then $$SUDO systemctl disable --now $$s >/dev/null 2>&1 && echo "evtcp: stopped and disabled the $$s service the package started (the specs start their own)"; \
	      elif command -v service >/dev/null 2>&1; then $$SUDO service $$s stop >/dev/null 2>&1; $$SUDO update-rc.d $$s disable >/dev/null 2>&1; fi;; \
	    esac; \
	  done; \
	fi

build-deps:
	@$(MAKE) --no-print-directory deps DEPS="$(BUILD_DEPS)"

test-deps:
	@$(MAKE) --no-print-directory deps DEPS="$(TEST_DEPS)"

# luacheck (Debian's lua-check) over every Lua file we wrote; .luacheckrc
# says how.
lint: test-deps
	luacheck --no-color lua spec examples bench

ENV = LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="$(BUILD)/?.so;;"

test: test-deps
	@$(MAKE) --no-print-directory all
	$(ENV) $(BUSTED) --output=spec/summary_output.lua spec

demo: build-deps
	@$(MAKE) --no-print-directory all
	$(ENV) sh examples/demo.sh

install: all
	install -d $(DESTDIR)$(LUADIR)/evtcp $(DESTDIR)$(LIBDIR)/evtcp
	install -m 644 lua/evtcp/*.lua $(DESTDIR)$(LUADIR)/evtcp/
	install -m 755 $(CORE) $(DESTDIR)$(LIBDIR)/evtcp/core.so

# The specs under AddressSanitizer + UBSan. lua5.4 itself is not
# instrumented, so the runtime is preloaded.
ASAN_LIB = $(shell $(CC) -print-file-name=libasan.so)
UBSAN_LIB = $(shell $(CC) -print-file-name=libubsan.so)
ASAN_CFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
sanitize: test-deps
	$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_CFLAGS)" all
	$(SANITIZER_ENV) \
	  LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build-asan/?.so;;" \
	  EVTCP_SANITIZE=1 $(BUSTED) --output=spec/summary_output.lua spec

# The fuzzers under AddressSanitizer + UBSan: the API fuzzer
# (spec/attack/fuzz.lua, FUZZ_N operations), then the connection-ends
# pairs (fuzz_ends.lua, FUZZ_PAIRS pairs, plain and TLS, byte-exact), the
# framing model check (fuzz_framing.lua, FUZZ_FRAMING streams) and the
# PROXY header fuzzer (fuzz_proxy.lua, FUZZ_PROXY headers), all from seed
# FUZZ_SEED. CI runs a slice; `make fuzz` is the long run.
FUZZ_N       ?= 200000
FUZZ_PAIRS   ?= 2000
FUZZ_FRAMING ?= 3000
FUZZ_PROXY   ?= 5000
FUZZ_SEED  ?= 1
SANITIZER_ENV = LD_PRELOAD="$(ASAN_LIB) $(UBSAN_LIB)" ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp:print_suppressions=0
fuzz: test-deps
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_CFLAGS)" all
	$(SANITIZER_ENV) LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build-asan/?.so;;" \
	  FUZZ_N=$(FUZZ_N) FUZZ_SEED=$(FUZZ_SEED) $(LUA) spec/attack/fuzz.lua
	$(SANITIZER_ENV) LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build-asan/?.so;;" \
	  FUZZ_PAIRS=$(FUZZ_PAIRS) FUZZ_SEED=$(FUZZ_SEED) $(LUA) spec/attack/fuzz_ends.lua
	$(SANITIZER_ENV) LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build-asan/?.so;;" \
	  FUZZ_FRAMING=$(FUZZ_FRAMING) FUZZ_SEED=$(FUZZ_SEED) $(LUA) spec/attack/fuzz_framing.lua
	$(SANITIZER_ENV) LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build-asan/?.so;;" \
	  FUZZ_PROXY=$(FUZZ_PROXY) FUZZ_SEED=$(FUZZ_SEED) $(LUA) spec/attack/fuzz_proxy.lua

# The stress suite (spec/attack/stress.lua): one line per check with its
# figures. The sizes are the full ones; CI sets smaller STRESS_* values.
stress: test-deps
	@$(MAKE) --no-print-directory all
	$(ENV) $(LUA) spec/attack/stress.lua

# the benchmarks' peers too: Node.js for the TLS suite, redis-benchmark
# (redis-tools) and wrk for the real clients
bench-deps:
	@$(MAKE) --no-print-directory deps DEPS="$(BENCH_DEPS)"

bench: bench-deps
	$(MAKE) -C bench run

bench-quick: bench-deps
	$(MAKE) -C bench quick

clean:
	rm -rf build build-asan evtcp
	-$(MAKE) -C bench clean 2>/dev/null
