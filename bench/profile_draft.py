"""Where a draft step's time goes: fused drafter decode time against k, on the random pair.

Each variant runs in its own process (the environment decides what ggml's CUDA backend does):
``default``, ``no-cuda-graphs`` (GGML_CUDA_DISABLE_GRAPHS=1), ``no-flash-attn`` and ``debug-log``
(ggml's debug log: how often the CUDA backend captured or re-captured a graph, and the splits). A fit of the
drafter's time per call against k separates the per-call cost (host work, launch, read-back)
from the per-step cost (the chained step's kernels). The k = 0 row is the target alone.

    python bench/profile_draft.py --shape e2b --out bench/results/DATE-DEVICE-profile-draft.json

``--kernels``: run one k = 3 generation between cudaProfilerStart/Stop for
``ncu --profile-from-start off --metrics gpu__time_duration.sum --csv``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import git_commit, write_result

KS = (0, 1, 2, 3, 6)
VARIANTS = {
    "default": {},
    "no-cuda-graphs": {"GGML_CUDA_DISABLE_GRAPHS": "1"},
    "no-flash-attn": {"PYLLAMA_MTP_PROFILE_FLASH_ATTN": "0"},
    "debug-log": {"PYLLAMA_MTP_VERBOSITY": "2"},
}
# ggml's log lines that say whether the CUDA backend replays graphs and how a graph is split
SPLITS = "splits = "
LOG_MARKS = ("CUDA graph warmup complete", "CUDA graph warmup reset", "disabling CUDA graphs", SPLITS)
PROMPT = "the quick brown fox jumps over the lazy dog"


def measure(shape: str, device: str, n_predict: int, kernels: bool) -> dict[str, Any]:
    from pyllama_mtp import Model, MtpSession
    from pyllama_mtp.benchmark import shapes
    from pyllama_mtp.trace import read_trace

    pair = shapes.build(shape, "random", device)
    flash = os.environ.get("PYLLAMA_MTP_PROFILE_FLASH_ATTN")
    flash_attn = None if flash is None else bool(int(flash))
    rows = []
    with Model(pair.target_gguf) as target, Model(pair.drafter_gguf) as drafter, tempfile.TemporaryDirectory() as tmp:
        for k in (3,) if kernels else KS:
            trace = Path(tmp) / f"k{k}.ndjson"
            with MtpSession(
                target, drafter if k else None, n_draft=k, n_ctx=2048, flash_attn=flash_attn, trace=trace if k else None
            ) as session:
                session.complete(PROMPT, 16)  # warm-up: allocation, CUDA graph capture
                session.reset()
                if kernels:
                    cudart = ctypes.CDLL("libcudart.so")
                    cudart.cudaProfilerStart()
                    session.complete(PROMPT, 4)
                    cudart.cudaProfilerStop()
                    return {"profiled_steps": session.stats.n_steps}
                session.complete(PROMPT, n_predict)
                stats = session.stats
            row: dict[str, Any] = {"k": k, "step_ms": 1e3 * stats.generate_seconds / max(1, stats.n_steps)}
            if k:
                summary = read_trace(trace)
                row.update(draft_ms=summary.mean_draft_ms, verify_ms=summary.mean_verify_ms)
            rows.append(row)
    drafted = [r for r in rows if r["k"]]
    n = len(drafted)
    mean_k = sum(r["k"] for r in drafted) / n
    mean_d = sum(r["draft_ms"] for r in drafted) / n
    slope = sum((r["k"] - mean_k) * (r["draft_ms"] - mean_d) for r in drafted) / sum(
        (r["k"] - mean_k) ** 2 for r in drafted
    )
    return {
        "rows": rows,
        "draft_ms_per_call": mean_d - slope * mean_k,
        "draft_ms_per_step": slope,
        "target_step_ms": rows[0]["step_ms"],
        "verify_over_target_k1": statistics.mean(r["verify_ms"] for r in drafted if r["k"] == 1) / rows[0]["step_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="e2b")
    parser.add_argument("--device", default="cuda", help="where HF builds the pair (cpu for a tiny shape)")
    parser.add_argument("--n-predict", type=int, default=128)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="(internal) measure one variant in this process")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--kernels", action="store_true", help="one profiled k=3 generation, for ncu")
    parser.add_argument("--commit")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.variant or args.kernels:
        print(json.dumps(measure(args.shape, args.device, args.n_predict, args.kernels)))
        return
    variants = {}
    for name in args.variants:
        env = VARIANTS[name]
        cmd = [
            sys.executable,
            __file__,
            "--shape",
            args.shape,
            "--device",
            args.device,
            "--n-predict",
            str(args.n_predict),
            "--variant",
            name,
        ]
        res = subprocess.run(
            cmd, env={**os.environ, **env}, capture_output=True, text=True, errors="replace", check=True
        )
        variants[name] = json.loads(res.stdout.strip().splitlines()[-1])
        if name == "debug-log":
            lines = res.stderr.splitlines()
            variants[name]["log"] = {mark: sum(mark in line for line in lines) for mark in LOG_MARKS}
            variants[name]["graph_splits_lines"] = sorted({line.strip() for line in lines if SPLITS in line})
    write_result(
        {"commit": args.commit or git_commit(), "shape": args.shape, "regime": "random", "variants": variants},
        args.out,
    )


if __name__ == "__main__":
    main()
