# Sourced by ci/newcomer.sh and ci/wheel_check.sh: `env "${unset_ours[@]}" ...` runs a command with
# none of our PYLLAMA_MTP_* / LLAMA_MTP_* variables set, as a new user has none.
mapfile -t ours < <(env | grep -oE '^(PYLLAMA_MTP|LLAMA_MTP)_[A-Za-z0-9_]*' || true)
unset_ours=()
for name in "${ours[@]}"; do unset_ours+=(-u "$name"); done
