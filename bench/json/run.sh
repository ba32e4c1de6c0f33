#!/bin/sh
# bench/json/run.sh - build and run the JSON writer benchmark against
# jansson's json_dumps (see json_bench.c). Usage: sh bench/json/run.sh [ITERS] [REPEAT]
# Builds libeddy.a first (make -j2); BUILD picks the build folder (default build).
set -e
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
make -s -j2 BUILD="$BUILD" "$BUILD/libeddy.a"
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Iinclude $(pkg-config --cflags jansson) \
  bench/json/json_bench.c "$BUILD/libeddy.a" $(pkg-config --libs jansson libuv libcurl) -lm -lpthread \
  -o "$BUILD/json_bench"
exec "./$BUILD/json_bench" "$@"
