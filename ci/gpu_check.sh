#!/usr/bin/env bash
# The by-hand GPU job (docs/gpu-runs.md): on a machine with no network, build the CUDA
# backend from the carried pinned tree, run the GPU benchmarks, then the whole test suite with
# what time is left. Everything lands in $OUT (default ./gpu-out).
#   .carry/llama.cpp  the pinned tree, trimmed (PYLLAMA_MTP_LLAMA_SRC)
#   .whl/             wheels the machine lacks, all installed (the H200 image: cffi and pycparser; for
#                     the chat server's tests and load test also the [serve] extra, openai and httpx)
#   GPU_CHECK_SECONDS total budget (default 580); GPU_CHECK_COMMIT the commit to record;
#   GPU_CHECK_SUITE_ONLY=1 skips the segmentation tests and the benchmarks;
#   GPU_CHECK_ROUTED=1 runs bench/routed_head.py (E2B-sized vocabulary) before the suite
#   GPU_CHECK_SERVE_LOAD=1 runs the server's load test (random and agreeing pairs) before the suite
#   GPU_CHECK_FIRST="test_a.py ..." runs these test files first instead of the default GPU-specific ones
#   GPU_CHECK_CUDA_WHEEL=1 builds the CUDA wheel (ci/cuda_wheel.sh, sm_90), installs it into an empty
#     folder (pip --target: the image's Python is itself a venv, so a venv made from it would see
#     neither torch nor its nvidia-* wheels), checks from there that cuBLAS is loaded from those
#     wheels, runs the GPU session tests against it, and stops
#   GPU_CHECK_BACKEND_OPS="LSTM ..." builds upstream's test-backend-ops against the built libggml and
#     runs it on CUDA0 for these ops (correctness, then perf) into $OUT/test-backend-ops.txt;
#     GPU_CHECK_BACKEND_OPS_FILTER="turbo" passes -p turbo (only the cases whose parameters match)
#   GPU_CHECK_KV_PROFILE=1 runs bench/kv_cache_types.py (e2b, 4096 tokens) under ncu once per type
#     of GPU_CHECK_KV_PROFILE_TYPES (default "f16 turbo3"), each kernel of that row's last 2 decodes
#     into $OUT/ncu-kv-TYPE.txt (issue 22: where turbo3's extra time per token goes)
#   GPU_CHECK_BENCH=1 also builds upstream's llama-speculative-simple and llama-server (the carried
#     tree keeps tools/ui's build files) and, while the library compiles, the bench pairs of
#     GPU_CHECK_BENCH_SHAPES (default "e2b"; "e2b e2b-q4 31b" for all), then runs
#     `pyllama-mtp bench --shape S $GPU_CHECK_BENCH_ARGS` per shape into $OUT/S.
#   GPU_CHECK_WITHOUT="0046 0047" (after a build, on the same warm machine) takes these patches back
#     out of vendor/llama.cpp, rebuilds the changed libraries in the same build folder (incremental:
#     only what they touch recompiles), installs them over /tmp/pkg's (and upstream's binaries there
#     load them too), then runs what else is asked: the same benchmarks without those patches, for
#     an A/B on one machine. The tree stays that way; a later full build prepares it afresh.
#   A command may run 10 minutes: GPU_CHECK_BUILD_ONLY=1 stops after the build (and the pairs);
#   a second call with GPU_CHECK_SKIP_BUILD=1 on the same warm machine goes on from there.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
budget="${GPU_CHECK_SECONDS:-580}"
t0=$SECONDS
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYLLAMA_MTP_LLAMA_SRC=$PWD/.carry/llama.cpp PYLLAMA_MTP_BACKEND=cuda
export CMAKE_CUDA_ARCHITECTURES="${CMAKE_CUDA_ARCHITECTURES:-90}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
# fixtures are converted by the installed package's converter (the patched tree's)
export PYLLAMA_MTP_FIXTURE_CACHE=/tmp/fixtures
prepare_tree() {  # the carried pinned tree, patched, in vendor/llama.cpp
    python3 src/pyllama_mtp/_vendor.py prepare --dest vendor/llama.cpp --patches patches > "$out/prepare.log" 2>&1 \
        || { tail -20 "$out/prepare.log"; exit 1; }
}
if [ -n "${GPU_CHECK_CUDA_WHEEL:-}" ]; then
    prepare_tree
    PATH=/tmp/site/bin:$PATH PIP_WHEEL_ARGS=--no-build-isolation bash ci/cuda_wheel.sh /tmp/cuda-wheel /tmp/cuda-wheel-build \
        > "$out/cuda-wheel.log" 2>&1 || { tail -30 "$out/cuda-wheel.log"; exit 1; }
    grep "^cuda_wheel:" "$out/cuda-wheel.log"
    rm -rf /tmp/cuda-wheel-site
    python3 -m pip install -q --no-deps --target /tmp/cuda-wheel-site /tmp/cuda-wheel/wheelhouse/*.whl
    # from an empty folder, with none of the build's paths (cffi from the carried wheels): what the
    # wheel loads, and from where
    as_installed=(env -u PYLLAMA_MTP_LLAMA_SRC -u PYLLAMA_MTP_BACKEND PYTHONPATH=/tmp/cuda-wheel-site:/tmp/site)
    mkdir -p /tmp/cuda-wheel-user
    (cd /tmp/cuda-wheel-user && "${as_installed[@]}" python3 - <<'EOF'
import pyllama_mtp
from pyllama_mtp import _native, build_info

info = build_info()
assert pyllama_mtp.__file__.startswith("/tmp/cuda-wheel-site/"), pyllama_mtp.__file__
assert "CUDA" in info.backends, info.backends
with open("/proc/self/maps") as f:
    mapped = {line.split()[-1] for line in f if "libcublas" in line or "libcudart" in line}
assert mapped and all("/nvidia/" in path for path in mapped), mapped
print("cuda wheel: backends", ",".join(info.backends), "| from the nvidia-* wheels:", *sorted(mapped))
print("cuda wheel: preloaded", *_native.CUDA_LIBRARIES_FROM_WHEELS)
EOF
    ) 2>&1 | tee "$out/cuda-wheel-check.txt"
    (cd tests && "${as_installed[@]}" timeout 300 python3 -m pytest -q -p no:cacheprovider --rootdir=.. \
        -c ../pyproject.toml ${GPU_CHECK_CUDA_WHEEL_TESTS:-test_session.py test_segmentation.py test_info.py} \
        > "$out/cuda-wheel-tests.log" 2>&1)
    echo "cuda wheel tests: rc $? after $((SECONDS - t0)) s"
    tail -3 "$out/cuda-wheel-tests.log"
    exit 0
fi
if [ -z "${GPU_CHECK_SKIP_BUILD:-}" ]; then
    prepare_tree
    pairs_pid=""
    if [ -n "${GPU_CHECK_BENCH:-}" ]; then
        # the pairs need only torch, transformers and the converter: build them beside the compiler
        # (stand-in package objects, since the real __init__ loads the library being built; the
        # converter is the prepared tree's, since the package that ships it is not installed yet)
        PYLLAMA_MTP_LLAMA_TREE=$PWD/vendor/llama.cpp PYTHONPATH=/tmp/site python3 - ${GPU_CHECK_BENCH_SHAPES:-e2b} \
            > "$out/bench-pairs.log" 2>&1 <<'EOF' &
import sys, time, types
for name, path in (("pyllama_mtp", "src/pyllama_mtp"), ("pyllama_mtp.benchmark", "src/pyllama_mtp/benchmark")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from pyllama_mtp.benchmark import shapes
# a quantized shape's source pair only: quantizing needs the library being built
for shape in dict.fromkeys(shapes.QUANTIZED.get(s, (s,))[0] for s in sys.argv[1:]):
    for regime in ("agree", "random"):
        t0 = time.time()
        print(shape, regime, shapes.build(shape, regime, "cuda").root, f"{time.time() - t0:.0f} s", flush=True)
EOF
        pairs_pid=$!
    fi
    examples=()
    [ -n "${GPU_CHECK_BENCH:-}" ] && examples=(-C cmake.define.LLAMA_BUILD_EXAMPLES=ON
        -C cmake.define.LLAMA_BUILD_TOOLS=ON -C cmake.define.LLAMA_BUILD_SERVER=ON
        -C cmake.define.LLAMA_USE_PREBUILT_UI=OFF -C cmake.define.LLAMA_BUILD_UI=OFF)
    # (pip --target keeps what an earlier install left there: a rebuild on a warm machine must start empty)
    rm -rf /tmp/pkg
    python3 -m pip install --no-build-isolation --no-deps --target /tmp/pkg -C build-dir=/tmp/skb "${examples[@]}" . \
        > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
    if [ -n "${GPU_CHECK_BENCH:-}" ]; then
        cmake --build /tmp/skb --target llama-speculative-simple llama-server >> "$out/build.log" 2>&1 \
            || { tail -50 "$out/build.log"; exit 1; }
    fi
    echo "build: $((SECONDS - t0)) s"
    if [ -n "$pairs_pid" ]; then
        wait "$pairs_pid"
        echo "bench pairs: rc $? after $((SECONDS - t0)) s"
        grep -v "Writing\|Loading" "$out/bench-pairs.log" | tail -5
    fi
    [ -n "${GPU_CHECK_BUILD_ONLY:-}" ] && exit 0
fi
if [ -n "${GPU_CHECK_WITHOUT:-}" ]; then
    for number in $(printf '%s\n' $GPU_CHECK_WITHOUT | sort -r); do
        patch_file=$(ls patches/"$number"-*.patch)
        git apply -R --directory=vendor/llama.cpp "$patch_file" || { echo "cannot take $patch_file out"; exit 1; }
        echo "without $patch_file"
    done
    cmake --build /tmp/skb > "$out/build-without.log" 2>&1 || { tail -30 "$out/build-without.log"; exit 1; }
    for lib in /tmp/pkg/pyllama_mtp/lib/lib*.so*; do
        built=$(find /tmp/skb -name "$(basename "$lib")" -not -path "*/CMakeFiles/*" | head -1)
        [ -n "$built" ] && cp -L "$built" "$lib"
    done
    echo "rebuilt without ${GPU_CHECK_WITHOUT}: $((SECONDS - t0)) s"
fi
export PYTHONPATH=/tmp/pkg:/tmp/site
# the machine's copy of .git may be stale: the caller can name the commit
commit="${GPU_CHECK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
python3 -m pyllama_mtp info > "$out/info.txt" 2>&1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >> "$out/info.txt" 2>&1
if [ -n "${GPU_CHECK_BACKEND_OPS:-}" ]; then
    lib=/tmp/pkg/pyllama_mtp/lib
    g++ -O1 -std=c++17 vendor/llama.cpp/tests/test-backend-ops.cpp -Ivendor/llama.cpp/ggml/include \
        "$lib"/libggml.so "$lib"/libggml-base.so -Wl,-rpath,"$lib" -o /tmp/test-backend-ops \
        > "$out/test-backend-ops.txt" 2>&1
    filter=()
    [ -n "${GPU_CHECK_BACKEND_OPS_FILTER:-}" ] && filter=(-p "$GPU_CHECK_BACKEND_OPS_FILTER")
    for op in $GPU_CHECK_BACKEND_OPS; do
        /tmp/test-backend-ops -o "$op" -b CUDA0 "${filter[@]}" >> "$out/test-backend-ops.txt" 2>&1
        echo "test-backend-ops -o $op: rc $? after $((SECONDS - t0)) s"
        /tmp/test-backend-ops perf -o "$op" -b CUDA0 "${filter[@]}" >> "$out/test-backend-ops.txt" 2>&1
    done
    grep -E "Backend|OK|FAIL|passed|us/run" "$out/test-backend-ops.txt" | tail -30
fi
if [ -n "${GPU_CHECK_KV_PROFILE:-}" ]; then
    for kv_type in ${GPU_CHECK_KV_PROFILE_TYPES:-f16 turbo3}; do
        types=f16
        [ "$kv_type" != f16 ] && types="f16,$kv_type"
        /usr/local/cuda/bin/ncu --profile-from-start off --metrics gpu__time_duration.sum --print-summary per-kernel \
            python3 bench/kv_cache_types.py --shape e2b --gpu --contexts 4096 --types "$types" --n-decode 8 \
            --profile-decode 2 --profile-type "$kv_type" > "$out/ncu-kv-$kv_type.txt" 2>&1
        echo "ncu kv $kv_type: rc $? after $((SECONDS - t0)) s"
    done
fi
if [ -z "${GPU_CHECK_SUITE_ONLY:-}" ]; then
(cd tests && python3 -m pytest -q --tb=short -p no:cacheprovider --rootdir=.. -c ../pyproject.toml test_segmentation.py \
    > "$out/tests-segmentation.log" 2>&1)
echo "segmentation tests: rc $? after $((SECONDS - t0)) s"
python3 bench/segmentation.py --windows 32 --commit "$commit" --out "$out/segmentation.json" > "$out/segmentation.log" 2>&1
python3 bench/vram_cycles.py --cycles "${VRAM_CYCLES:-100}" --commit "$commit" --out "$out/vram.json" > "$out/vram.log" 2>&1
echo "benches: $((SECONDS - t0)) s (commit $commit)"
fi
if [ -n "${GPU_CHECK_BENCH:-}" ]; then
    upstream_bin=$(find /tmp/skb -name llama-speculative-simple -type f -perm -u+x | head -1)
    server_bin=$(find /tmp/skb -name llama-server -type f -perm -u+x | head -1)
    for shape in ${GPU_CHECK_BENCH_SHAPES:-e2b}; do
        # shellcheck disable=SC2086
        python3 -m pyllama_mtp bench --shape "$shape" --upstream "$upstream_bin" --upstream-server "$server_bin" \
            --commit "$commit" \
            -o "$out/$shape" ${GPU_CHECK_BENCH_ARGS:-} > "$out/bench-$shape.log" 2>&1
        echo "pyllama-mtp bench --shape $shape: rc $? after $((SECONDS - t0)) s"
        grep -v "^llama\|^load\|^print_info\|Loading\|Writing" "$out/bench-$shape.log" | tail -40
    done
fi
if [ -n "${GPU_CHECK_ROUTED:-}" ]; then
python3 bench/routed_head.py --commit "$commit" --out "$out/routed-head.json" > "$out/routed-head.log" 2>&1
echo "routed head bench: rc $? after $((SECONDS - t0)) s"
fi
if [ -n "${GPU_CHECK_SERVE_LOAD:-}" ]; then
    for pair in "" --agree; do
        # shellcheck disable=SC2086
        python3 -m pyllama_mtp.benchmark.serve_load $pair --commit "$commit" --out-dir "$out" > "$out/serve-load$pair.log" 2>&1
        echo "serve load $pair: rc $? after $((SECONDS - t0)) s"
    done
fi
left=$((budget - (SECONDS - t0)))
# the GPU-specific files first, the slow child-process corpora and the 1000-cycle test last
first="${GPU_CHECK_FIRST:-test_fused_draft.py test_long_vocab.py test_backend_sampling.py test_bench_harness.py test_routed_head.py
 test_exact.py test_placement.py test_context_shift.py test_session.py test_mtp_regressions.py test_prefix_reuse.py test_pairing.py
 test_model.py test_info.py test_trace.py test_cli.py test_patches.py test_vendor.py}"
last="test_gguf_fuzz.py test_resources.py"
# every other test file (but segmentation's, run above) goes between them
rest=$(cd tests && ls test_*.py | grep -vxF -e test_segmentation.py $(printf -- '-e %s ' $first $last) | tr '\n' ' ')
order="$first $rest $last"
# shellcheck disable=SC2086
(cd tests && timeout "$left" python3 -m pytest -v -p no:cacheprovider --rootdir=.. -c ../pyproject.toml $order \
    > "$out/tests.log" 2>&1)
echo "tests: rc $? after $((SECONDS - t0)) s"
tail -5 "$out/tests.log"
