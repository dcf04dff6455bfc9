#!/usr/bin/env bash
# Fuzz llama.cpp's GGUF header parser with libFuzzer (+ ASan/UBSan) for a bounded time.
# ggml-base is compiled with coverage instrumentation so the fuzzer is guided by the parser's
# own branches. A crash, leak or sanitizer report fails the job and leaves the input in $work.
#   PYLLAMA_MTP_FUZZ_SECONDS (default 120)   PYLLAMA_MTP_FUZZ_BUILD (build dir, outside the clone)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${PYLLAMA_MTP_FUZZ_SECONDS:-120}"
build="${PYLLAMA_MTP_FUZZ_BUILD:-$HOME/.cache/pyllama-mtp/fuzz-build}"
tree="$PWD/vendor/llama.cpp"
[ -f "$tree/ggml/src/gguf.cpp" ] || { echo "fuzz: no llama.cpp tree at $tree (build the package first)" >&2; exit 1; }
command -v clang++ >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 || true; apt-get install -y -q clang >/dev/null; }
if [ -f "$build/CMakeCache.txt" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$tree" "$build/CMakeCache.txt"; then
    rm -rf "$build"  # configured from another clone
fi

flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -gline-tables-only -O1"
# configured from the tree's top level (the sdist's ggml/ is not standalone); only ggml-base is built
cmake -S "$tree" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_COMMON=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO=-DNDEBUG -DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-DNDEBUG >/dev/null
cmake --build "$build" --target ggml-base >/dev/null
clang++ -std=c++17 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -g -O1 \
    -I"$tree/ggml/include" tests/fuzz/gguf_header_fuzz.cpp "$build/ggml/src/libggml-base.a" -lpthread -lm \
    -o "$build/gguf_header_fuzz"

work=$(mktemp -d)
python3 tests/fuzz/make_seeds.py "$tree/gguf-py" "$work/seeds"
# the corpus grown by earlier runs is kept beside the build (a cache: each run starts from the seeds too)
mkdir -p "$build/corpus"
# -rss_limit_mb: a parse of a small input that asks for more than this is a finding, not noise
"$build/gguf_header_fuzz" -max_total_time="$seconds" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$work/" "$build/corpus" "$work/seeds" 2>&1 | tail -n 60
echo "fuzz: ${seconds}s on the GGUF header parser, no findings"
rm -rf "$work"
