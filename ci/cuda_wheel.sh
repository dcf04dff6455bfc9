#!/usr/bin/env bash
# The CUDA wheel (issue 29): portable (ggml's backends as modules, the CPU one per instruction set,
# the best loaded at run time) with CUDA for the architectures people run, repaired by auditwheel
# with the CUDA libraries left out: libcuda comes with the driver, the runtime and cuBLAS from
# PyPI's nvidia-* wheels (the [cuda] extra; pyllama_mtp/_cuda_libs.py loads them) or a system
# toolkit. Run where the CUDA toolkit is (the linux-cuda workflow's container, the GPU machine).
#   bash ci/cuda_wheel.sh OUT [BUILD_DIR]    (OUT/dist: as built, OUT/wheelhouse: repaired)
#   CMAKE_CUDA_ARCHITECTURES overrides the list (the GPU job builds 90 only); PIP_WHEEL_ARGS adds
#   to pip wheel's (the GPU job, offline: --no-build-isolation)
set -euo pipefail
out=$1
build=${2:-build/cuda-wheel}
archs=${CMAKE_CUDA_ARCHITECTURES:-75-real;80-real;86-real;89-real;90-real;100-real;120-real;120-virtual}
start=$SECONDS
rm -rf "$out/dist" "$out/wheelhouse"
PYLLAMA_MTP_BACKEND=cuda PYLLAMA_MTP_PORTABLE=1 CMAKE_CUDA_ARCHITECTURES="$archs" \
    python3 -m pip wheel -q --no-deps ${PIP_WHEEL_ARGS:-} -C build-dir="$build" -w "$out/dist" .
echo "cuda_wheel: built $(basename "$out"/dist/*.whl) for $archs in $((SECONDS - start)) s"
python3 -m auditwheel repair --exclude 'libcuda.so.1' --exclude 'libcudart.so.*' --exclude 'libcublas.so.*' \
    --exclude 'libcublasLt.so.*' -w "$out/wheelhouse" "$out"/dist/*.whl 2>&1 | tail -2
wheel=$(ls "$out"/wheelhouse/*.whl)
echo "cuda_wheel: repaired as $(basename "$wheel"), $(stat -c %s "$wheel") bytes"
