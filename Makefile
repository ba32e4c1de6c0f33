# eddy - build, test and demo.
#
#   make deps      install missing Debian packages (or print the command)
#   make           the eddy binary and libeddy.a
#   make test      unit + integration tests
#   make demo      run the example job end to end against the scripted mock
#   make asan      all tests under AddressSanitizer + UBSan
#   make valgrind  unit tests and one integration run under valgrind
#   make format / format-check / compdb

CC       ?= cc
BUILD    ?= build
PKGS     := libuv libcurl jansson yaml-0.1 sqlite3 lua5.4 libmicrohttpd
DEB_PKGS := build-essential pkg-config libuv1-dev libcurl4-openssl-dev libjansson-dev \
            libyaml-dev libsqlite3-dev liblua5.4-dev libmicrohttpd-dev libcmocka-dev \
            libprotobuf-c-dev protobuf-c-compiler libzstd-dev liblz4-dev \
            clang-format bear python3 curl jq sqlite3 valgrind
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wformat=2 -Wvla -Wno-format-nonliteral -Wno-format-truncation
OPT      ?= -O2 -g
SAN      ?=
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE $(OPT) $(SAN) $(WARN) -Iinclude \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(EXTRA_CFLAGS)
LDLIBS_ALL = $(SAN) $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread

MODULES  := core prompts tools llm memory trace agents runtime
LIB_SRC  := $(foreach m,$(MODULES),$(wildcard $(m)/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
MOCK_SRC := $(wildcard tests/mockllm/*.c)
MOCK_OBJ := $(MOCK_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

.PHONY: all deps test unit integration demo asan valgrind format format-check compdb clean

all: $(BUILD)/eddy $(BUILD)/libeddy.a $(BUILD)/mockllm

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

$(BUILD)/libeddy.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/eddy: $(CLI_OBJ) $(BUILD)/libeddy.a
	$(CC) $(CLI_OBJ) $(BUILD)/libeddy.a $(LDLIBS_ALL) -o $@

$(BUILD)/mockllm: $(MOCK_OBJ) $(BUILD)/libeddy.a
	$(CC) $(MOCK_OBJ) $(BUILD)/libeddy.a $(LDLIBS_ALL) -o $@

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libeddy.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-missing-prototypes $< $(BUILD)/libeddy.a $(LDLIBS_ALL) -lcmocka -o $@

unit: deps $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; ./$$t; done

integration: deps all
	python3 tests/integration/run.py --build $(BUILD)

test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) integration

demo: deps all
	@sh examples/order-support/demo.sh $(BUILD)

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test

valgrind: deps
	$(MAKE) BUILD=build-vg OPT="-O0 -g" all $(UNIT_BIN:$(BUILD)/%=build-vg/%)
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
	rm -rf build build-asan build-vg
