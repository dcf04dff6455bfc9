"""KV cache types side by side: bytes per token, prefill and decode speed at long contexts.

    python bench/kv_cache_types.py [--shape tiny] [--contexts 4096] [--types f16,q4_0,turbo3] [--swa-full]
        [--gpu] [--profile-decode N [--profile-type TYPE]] [--out bench/results/DATE-DEVICE-kv.json]

One target of ``--shape`` (``pyllama_mtp.benchmark.shapes``), one context per cache type and
context length. Prefill: the context filled with ``--contexts`` tokens in ``n_batch`` chunks
(tokens/s). Decode: ``--n-decode`` single-token decodes after it (tokens/s at that depth). KV bytes
per token: the context's cache bytes (both of Gemma 4's caches, every layer) over its cells.
Contenders: f16 (the default), q8_0, q4_0 and the turbo types; every row runs in the same process
on the same model. The sliding-window layers keep a window's cells as MtpSession and llama-server
do; ``--swa-full`` gives them the whole context (flash attention then skips the masked cells only
where its kernel can). Schema (``schema`` = 2): ``device``, ``commit``, ``date``, ``command``,
``shape``, ``swa_full``, ``rows`` (``kv_cache_type``, ``n_ctx``, ``kv_bytes_per_token``, ``prefill_tokens_per_s``,
``decode_tokens_per_s``), ``summary``: per type and context ``{type}_kv_ratio`` (f16 bytes over
its bytes), ``{type}_decode_over_f16_{n}`` and ``{type}_prefill_over_f16_{n}``, and the issue's
keys ``turbo3_kv_ratio`` and ``turbo3_decode_over_f16`` (at the longest context).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import functools
import sys
import time
from typing import Any

from _common import git_commit, write_result

TYPES = ("f16", "q8_0", "q4_0", "turbo4", "turbo3", "turbo2")


@functools.cache
def _cuda_runtime() -> ctypes.CDLL:
    """The CUDA runtime this process loaded, found once (measure() asks before its timed loop)."""
    with open("/proc/self/maps") as maps:
        runtime = next((line.split()[-1] for line in maps if "libcudart.so" in line), None)
    if runtime is None:
        raise SystemExit("--profile-decode needs a CUDA build (no libcudart in this process)")
    return ctypes.CDLL(runtime)


def _cuda_profiler(*, start: bool) -> None:
    """cudaProfilerStart / Stop (for ``ncu --profile-from-start off``: only the decodes between them
    are profiled)."""
    lib = _cuda_runtime()
    (lib.cudaProfilerStart if start else lib.cudaProfilerStop)()


def measure(
    shape: str,
    contexts: list[int],
    types: list[str],
    n_decode: int,
    n_batch: int,
    gpu: bool,
    swa_full: bool,
    profile_decode: int = 0,
    profile_type: str | None = None,
) -> dict[str, Any]:
    from pyllama_mtp import Context, Model
    from pyllama_mtp.benchmark import shapes

    pair = shapes.build(shape, "random", "cuda" if gpu else None)
    rows: list[dict[str, Any]] = []
    with Model(pair.target_gguf, n_gpu_layers=-1 if gpu else 0) as target:
        vocab = target.n_vocab
        for n_ctx in contexts:
            tokens = [10 + (i * 7919) % (vocab - 20) for i in range(n_ctx)]
            for kv_type in types:
                with Context(
                    target, n_ctx=n_ctx + n_decode, n_batch=n_batch, kv_cache_type=kv_type, swa_full=swa_full
                ) as ctx:
                    kv_bytes = ctx.memory()["context"]
                    ctx.decode(tokens[:n_batch])  # warm-up: graphs, buffers
                    ctx.truncate(0)
                    start = time.perf_counter()
                    ctx.decode(tokens)
                    prefill = time.perf_counter() - start
                    profiled = profile_decode if profile_type in (None, kv_type) else 0
                    if profiled:
                        _cuda_runtime()
                    start = time.perf_counter()
                    for i in range(n_decode):
                        if i == n_decode - profiled:
                            _cuda_profiler(start=True)
                        ctx.decode([tokens[i]])
                    decode = time.perf_counter() - start
                    if profiled:
                        _cuda_profiler(start=False)
                row = {
                    "kv_cache_type": kv_type,
                    "n_ctx": n_ctx,
                    "kv_bytes_per_token": kv_bytes / (n_ctx + n_decode),
                    "prefill_tokens_per_s": n_ctx / prefill,
                    "decode_tokens_per_s": n_decode / decode,
                }
                print(row, file=sys.stderr, flush=True)
                rows.append(row)
    return {"shape": shape, "swa_full": swa_full, "rows": rows, "summary": summarize(rows, contexts, types)}


def summarize(rows: list[dict[str, Any]], contexts: list[int], types: list[str]) -> dict[str, float]:
    by = {(r["kv_cache_type"], r["n_ctx"]): r for r in rows}
    summary: dict[str, float] = {}
    for kv_type in types[1:]:
        summary[f"{kv_type}_kv_ratio"] = (
            by["f16", contexts[0]]["kv_bytes_per_token"] / by[kv_type, contexts[0]]["kv_bytes_per_token"]
        )
        for n in contexts:
            for what in ("decode", "prefill"):
                summary[f"{kv_type}_{what}_over_f16_{n}"] = (
                    by[kv_type, n][f"{what}_tokens_per_s"] / by["f16", n][f"{what}_tokens_per_s"]
                )
    if "turbo3" in types:
        summary["turbo3_decode_over_f16"] = summary[f"turbo3_decode_over_f16_{contexts[-1]}"]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny")
    parser.add_argument("--contexts", default="4096", help="comma-separated context lengths (tokens)")
    parser.add_argument("--types", default=",".join(TYPES), help="comma-separated cache types, f16 first")
    parser.add_argument("--n-decode", type=int, default=64)
    parser.add_argument("--n-batch", type=int, default=512)
    parser.add_argument("--gpu", action="store_true", help="weights and cache on the GPU")
    parser.add_argument(
        "--swa-full",
        action="store_true",
        help="sliding-window layers keep the whole context (MtpSession and llama-server keep a window)",
    )
    parser.add_argument(
        "--profile-decode",
        type=int,
        default=0,
        metavar="N",
        help="CUDA: profile only each row's last N decodes (run under ncu --profile-from-start off)",
    )
    parser.add_argument("--profile-type", metavar="TYPE", help="with --profile-decode: only this type's rows")
    parser.add_argument("--out")
    args = parser.parse_args()
    types = args.types.split(",")
    if types[0] != "f16":
        parser.error("--types must start with f16, the reference")
    if not 0 <= args.profile_decode <= args.n_decode:
        parser.error("--profile-decode must be in 0 .. --n-decode")
    if args.profile_type is not None and args.profile_type not in types:
        parser.error("--profile-type must be one of --types")
    from pyllama_mtp.benchmark.harness import device_name

    result = {
        "schema": 2,
        "device": device_name("gpu" if args.gpu else "cpu"),
        "commit": git_commit(),
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        **measure(
            args.shape,
            [int(n) for n in args.contexts.split(",")],
            types,
            args.n_decode,
            args.n_batch,
            args.gpu,
            args.swa_full,
            args.profile_decode,
            args.profile_type,
        ),
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
