# Sourced by ci/sanitize.sh and ci/tsan.sh: configure and build the patched tree + our shim (CPU,
# no OpenMP, C tests on) with the sanitizer flags in $flags into $build, via ccache when present.
#   sanitized_build BUILD_DIR "FLAGS" "LINK_FLAGS" TARGET...
sanitized_build() {
    local build=$1 flags=$2 link=$3
    shift 3
    if [ -f "$build/CMakeCache.txt" ] && ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$PWD" "$build/CMakeCache.txt"; then
        rm -rf "$build"  # configured from another clone
    fi
    local launcher=()
    if command -v ccache >/dev/null 2>&1; then
        launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    fi
    # RelWithDebInfo's own flags would follow ours (-O2 -g): keep only its NDEBUG, so $flags decide.
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPYLLAMA_MTP_BACKEND=cpu \
        -DPYLLAMA_MTP_C_TESTS=ON -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF "${launcher[@]}" \
        -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
        -DCMAKE_C_FLAGS_RELWITHDEBINFO=-DNDEBUG -DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-DNDEBUG \
        -DCMAKE_EXE_LINKER_FLAGS="$link" -DCMAKE_SHARED_LINKER_FLAGS="$link" >/dev/null
    cmake --build "$build" --target "$@"
}
