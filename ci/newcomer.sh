#!/usr/bin/env bash
# The README's two commands as a new user runs them: a clean clone of this checkout's commit, a
# fresh venv, no PYLLAMA_MTP_* or LLAMA_MTP_* variable set, each command copied out of the README
# (ci/readme_command.py), not restated here.
#   bash ci/newcomer.sh WORK    makes WORK/clone and WORK/venv (WORK: a new, empty folder) and
#                               leaves them for later stages (the installed package, its build)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$1
mkdir -p "$work"
git clone -q "$PWD" "$work/clone"
python3 -m venv "$work/venv"
main=$(python3 ci/readme_command.py main "$work/clone/README.md")
tests=$(python3 ci/readme_command.py tests "$work/clone/README.md")
# shellcheck source=ci/our_vars.sh
. ci/our_vars.sh  # (the cd above: the repository root)

as_a_user() {  # one README command in the clone, inside the venv, with none of our variables
    (cd "$work/clone" && env "${unset_ours[@]}" VIRTUAL_ENV="$work/venv" PATH="$work/venv/bin:$PATH" \
        bash -euo pipefail -c "$1")
}

echo "newcomer: $main"
as_a_user "$main" 2>&1 | tee "$work/main.log"
# what the demo must show: what the package was built for, and parity and acceptance for both pairs
grep '^built for: ' "$work/main.log" || { echo "newcomer: the demo did not say what it was built for"; exit 1; }
[ "$(grep -c '^parity: ' "$work/main.log")" -eq 2 ] || { echo "newcomer: no parity line per pair"; exit 1; }
[ "$(grep -c '^acceptance: ' "$work/main.log")" -eq 2 ] || { echo "newcomer: no acceptance line per pair"; exit 1; }
# the source build's stage times, which the build keeps in its folder (pip shows no build output)
times=$(cat "$work"/clone/build/*/build_times.txt 2>/dev/null) || { echo "newcomer: the build kept no stage times"; exit 1; }
echo "newcomer: source build: $(echo "$times" | paste -sd, - | sed 's/,/, /g')"
echo "newcomer: $tests"
as_a_user "$tests"
