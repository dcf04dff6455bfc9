#!/usr/bin/env bash
# Build the patched tree + our shim with AddressSanitizer and UndefinedBehaviorSanitizer (CPU),
# then run the C smoke test and a short Python session under them. Any report fails the job.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${PYLLAMA_MTP_ASAN_BUILD:-$HOME/.cache/pyllama-mtp/asan-build}"
# shellcheck source=ci/sanitized_build.sh
. ci/sanitized_build.sh
sanitized_build "$build" "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g1 -O1" \
    "-fsanitize=address,undefined" session_smoke draft_tuner_test turbo_cuda_host graph_order_test _lib

pair=$(python3 -c "from pyllama_mtp.fixtures import build_pair; p = build_pair(); print(p.target_gguf, p.drafter_gguf)")
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
# shellcheck disable=SC2086
"$build/session_smoke" $pair
"$build/draft_tuner_test"
"$build/turbo_cuda_host"  # the turbo types' CUDA block code, on the host
"$build/graph_order_test" "${pair%% *}"  # the cache writes right after what they store (patch 0046)

# The Python session: the package's sources beside the sanitized extension. CPython itself is
# not instrumented, so the runtime is preloaded and its (many, known) leaks are not reported.
pkg=$(mktemp -d)
trap 'rm -rf "$pkg"' EXIT
cp -r src/pyllama_mtp "$pkg/"
cp "$build"/_lib*.so "$pkg/pyllama_mtp/"
runtime="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
# The package sources carry no converter (the wheel's comes from the build): the segmentation
# converter's gguf-py is the prepared tree's.
LD_PRELOAD="$runtime" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 PYTHONPATH="$pkg" \
    PYLLAMA_MTP_LLAMA_TREE="$PWD/vendor/llama.cpp" python3 - "$pair" <<'PY'
import sys
from pyllama_mtp import Context, IncompatibleModelsError, InvalidTokenError, Model, MtpSession

target_path, drafter_path = sys.argv[1].split()
with Model(target_path) as target, Model(drafter_path) as drafter:
    with MtpSession(target, drafter, n_ctx=256) as spec, MtpSession(target, None, n_draft=0, n_ctx=256) as base:
        text = "the quick brown fox"
        assert len(spec.complete(text, 32)) == len(base.complete(text, 32))
        assert "".join(spec.generate_text(text, 16))
        try:
            spec.complete([2, 10**9], 4)
        except InvalidTokenError:
            pass
    try:
        MtpSession(target, target)
    except IncompatibleModelsError:
        pass
    with Context(target, n_ctx=256) as ctx:
        ctx.decode(target.tokenize(text), all_logits=True)
        ctx.all_logits()
# the segmenter: the fused LSTM recurrence (raw loops over tensor data) and the ggml-op one
import tempfile
import numpy as np
from pyllama_mtp import Segmenter, seg_fixtures
from pyllama_mtp.convert_segmentation import convert
seg_path = convert(seg_fixtures.pyannet(seed=0), tempfile.mkdtemp() + "/seg.gguf")
window = np.random.default_rng(0).standard_normal(seg_fixtures.WINDOW_SAMPLES).astype(np.float32)
outs = []
for fused in (True, False):
    with Segmenter(seg_path, fused_lstm=fused) as seg:
        outs.append(seg.segment(window))
assert np.abs(outs[0] - outs[1]).max() < 1e-4
print("python session under ASan/UBSan: ok")
PY
