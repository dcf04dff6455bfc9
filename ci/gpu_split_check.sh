#!/usr/bin/env bash
# Issue 24's run on a machine with two GPUs (the device kind nvidia-h200-x2), one piece per call
# (a call may run 10 minutes). First build, with the 31B-shaped pairs beside the compiler:
#   GPU_CHECK_BENCH=1 GPU_CHECK_BENCH_SHAPES=31b GPU_CHECK_BUILD_ONLY=1 bash ci/gpu_check.sh
# then, on the same warm machine, in turn:
#   bash ci/gpu_split_check.sh tests    # test_placement.py (two-GPU split == one GPU) and test_rpc.py
#   bash ci/gpu_split_check.sh one      # the harness, 31b Q4_0 pair, everything on CUDA0
#   bash ci/gpu_split_check.sh split    # the same with the target split by layer: CUDA1 then CUDA0,
#                                       # the drafter on CUDA0; llama-server with -sm layer likewise
# Results land in $OUT (default ./gpu-out) named with the machine kind, ready for bench/results.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
export PYTHONPATH=/tmp/pkg:/tmp/site PYLLAMA_MTP_FIXTURE_CACHE=/tmp/fixtures
commit="${GPU_CHECK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
kind="${GPU_SPLIT_KIND:-h200-x2}"
nvidia-smi -L > "$out/gpus.txt" 2>&1
case "${1:-}" in
    tests)
        (cd tests && python3 -m pytest -q --tb=short -p no:cacheprovider --rootdir=.. -c ../pyproject.toml \
            test_placement.py test_rpc.py > "$out/$(date +%F)-$kind-tests-split-$commit.log" 2>&1)
        echo "tests: rc $?"
        tail -3 "$out"/*-tests-split-*.log
        ;;
    one | split)
        devices=CUDA0
        [ "$1" = split ] && devices=CUDA1,CUDA0
        python3 -m pyllama_mtp bench --shape 31b -k 1 -k 3 --no-hf --regime agree --regime random --regime mixed \
            --devices "$devices" --upstream-server /tmp/skb/bin/llama-server --commit "$commit" -o "$out/$1" \
            > "$out/bench-$1.log" 2>&1
        echo "bench $1: rc $?"
        for f in "$out/$1"/*.json; do
            cp "$f" "$out/$(date +%F)-$kind-mtp-bench-31b-$1-gpu-$commit.json"
        done
        grep "tokens/s" "$out/bench-$1.log" | tail -30
        ;;
    *)
        echo "usage: bash ci/gpu_split_check.sh tests|one|split" >&2
        exit 2
        ;;
esac
