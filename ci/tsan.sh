#!/usr/bin/env bash
# Build the patched tree + our shim with ThreadSanitizer (CPU, no OpenMP: TSan cannot see its
# barriers) and run the async pipeline's stress test: 1,000 draft/verify cycles whose queued
# drafts run on the drafter context's worker thread and are waited for or cancelled. Any report
# (a data race, a lock-order inversion) fails the job.
#   PYLLAMA_MTP_TSAN_BUILD (build dir, outside the clone)   PYLLAMA_MTP_TSAN_CYCLES (default 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${PYLLAMA_MTP_TSAN_BUILD:-$HOME/.cache/pyllama-mtp/tsan-build}"
# shellcheck source=ci/sanitized_build.sh
. ci/sanitized_build.sh
sanitized_build "$build" "-fsanitize=thread -fno-omit-frame-pointer -g1 -O1" "-fsanitize=thread" async_stress

pair=$(python3 -c "from pyllama_mtp.fixtures import build_pair; p = build_pair(); print(p.target_gguf, p.drafter_gguf)")
export TSAN_OPTIONS="halt_on_error=1:abort_on_error=1:second_deadlock_stack=1"
# on the CPU the queued drafts are deferred to the waiting thread by default: force the worker
export LLAMA_MTP_ASYNC_WORKER=1
# shellcheck disable=SC2086
timeout 1800 "$build/async_stress" $pair "${PYLLAMA_MTP_TSAN_CYCLES:-1000}"
