"""Where a draft step's time goes: fused drafter decode time against k, on the random pair.

Each variant runs in its own process (the environment decides what ggml's CUDA backend does):
``default``, ``no-cuda-graphs`` (GGML_CUDA_DISABLE_GRAPHS=1), ``no-flash-attn``, ``debug-log``
(ggml's debug log: how often the CUDA backend captured or re-captured a graph, and the splits) and
``no-graph-reuse`` (llama.cpp rebuilds every graph: what reusing one saves per step) and
``no-mmvf-cols`` (verify batches back on mmf instead of patch 0015's few-column kernel). A fit of the
drafter's time per call against k separates the per-call cost (host work, launch, read-back)
from the per-step cost (the chained step's kernels). The k = 0 row is the target alone.

    python bench/profile_draft.py --shape e2b --out bench/results/DATE-DEVICE-profile-draft.json

``--ncu``: each kernel's device time and DRAM bytes per step, from Nsight Compute, for a target
step alone (k = 0) and draft-MTP steps at k = 1 and 3 (verifies of 2 and 4 tokens), side by side:
where a verify pass's extra time goes. Kernels run one at a time under ncu, with caches and clocks
as the step leaves them (``--cache-control none --clock-control none``; files before 2026-12-04
flushed caches and locked base clocks, so their times run higher).
``--ncu-k K`` (repeatable) profiles only these k (``--ncu-k 0``: the target step alone, the
quickest kernel count); the result file is rewritten after each k, so a run cut short keeps the
k it finished.
``--kernels K`` (internal) profiles a few steps at k = K between cudaProfilerStart/Stop.

    python bench/profile_draft.py --shape e2b --ncu --out bench/results/DATE-DEVICE-kernels.json
"""

from __future__ import annotations

import argparse
import collections
import csv
import ctypes
import io
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
    "no-graph-reuse": {"LLAMA_GRAPH_REUSE_DISABLE": "1"},
    "no-mmvf-cols": {"GGML_CUDA_DISABLE_MMVF_COLS": "1"},
}
# ggml's log lines that say whether the CUDA backend replays graphs and how a graph is split
SPLITS = "splits = "
LOG_MARKS = ("CUDA graph warmup complete", "CUDA graph warmup reset", "disabling CUDA graphs", SPLITS)
PROMPT = "the quick brown fox jumps over the lazy dog"
NCU_KS = (0, 1, 3)
NCU_STEPS = 4
# Nsight Compute's time units, in microseconds
NCU_BYTES = ("dram__bytes_read.sum", "dram__bytes_write.sum")
NCU_BYTE_UNITS = {"byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}
NCU_UNITS = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}


def measure(shape: str, device: str, n_predict: int, kernels: int | None) -> dict[str, Any]:
    from pyllama_mtp import Model, MtpSession
    from pyllama_mtp.benchmark import shapes
    from pyllama_mtp.trace import read_trace

    pair = shapes.build(shape, "random", device)
    flash = os.environ.get("PYLLAMA_MTP_PROFILE_FLASH_ATTN")
    flash_attn = None if flash is None else bool(int(flash))
    rows = []
    with Model(pair.target_gguf) as target, Model(pair.drafter_gguf) as drafter, tempfile.TemporaryDirectory() as tmp:
        for k in (kernels,) if kernels is not None else KS:
            trace = Path(tmp) / f"k{k}.ndjson"
            with MtpSession(
                target, drafter if k else None, n_draft=k, n_ctx=2048, flash_attn=flash_attn, trace=trace if k else None
            ) as session:
                session.complete(PROMPT, 16)  # warm-up: allocation, CUDA graph capture
                session.reset()
                if kernels is not None:
                    # the prompt and two steps outside the profile, so it holds steady-state steps only
                    steps = session.steps(PROMPT, (NCU_STEPS + 3) * (k + 1))
                    next(steps), next(steps)
                    cudart = ctypes.CDLL("libcudart.so")
                    cudart.cudaProfilerStart()
                    for _ in range(NCU_STEPS):
                        next(steps)
                    cudart.cudaProfilerStop()
                    return {"profiled_steps": NCU_STEPS}
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


def kernel_times(ncu_csv: str, n_steps: int) -> dict[str, Any]:
    """Per-step device time of each kernel (by function name) from ``ncu --csv`` output."""
    per_kernel: dict[str, float] = collections.defaultdict(float)
    moved: dict[str, float] = collections.defaultdict(float)
    launches: dict[str, int] = collections.defaultdict(int)
    body = ncu_csv[ncu_csv.index('"ID"') :]
    for row in csv.DictReader(io.StringIO(body)):
        value = float(row["Metric Value"].replace(",", ""))
        if row.get("Metric Name") == "gpu__time_duration.sum":
            per_kernel[row["Kernel Name"]] += value * NCU_UNITS[row["Metric Unit"]] / n_steps
            launches[row["Kernel Name"]] += 1
        elif row.get("Metric Name") in NCU_BYTES:
            moved[row["Kernel Name"]] += value * NCU_BYTE_UNITS[row["Metric Unit"]] / n_steps
    ranked = sorted(per_kernel, key=per_kernel.__getitem__, reverse=True)
    return {
        "us_per_step": sum(per_kernel.values()),
        "dram_bytes_per_step": sum(moved.values()),
        "launches_per_step": sum(launches.values()) / n_steps,
        "kernels": {
            name: {"us": per_kernel[name], "dram_bytes": moved[name], "launches": launches[name] / n_steps}
            for name in ranked
        },
    }


def child_command(args: argparse.Namespace, *extra: str) -> list[str]:
    """This script again, in a child process: one measurement per process keeps each variant's
    environment (and each ncu session) to itself."""
    return [sys.executable, __file__, "--shape", args.shape, "--device", args.device, *extra]


def profile_kernels(args: argparse.Namespace) -> None:
    """Run each k under Nsight Compute and set the kernels' time per step side by side, writing
    the result file after each k."""
    by_k: dict[str, Any] = {}
    commit = args.commit or git_commit()
    for k in args.ncu_k or NCU_KS:
        cmd = [
            args.ncu,
            "--profile-from-start",
            "off",
            "--cache-control",
            "none",
            "--clock-control",
            "none",
            "--metrics",
            ",".join(("gpu__time_duration.sum", *NCU_BYTES)),
            "--print-kernel-base",
            "function",
            "--csv",
            *child_command(args, "--kernels", str(k)),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=True)
        entry = kernel_times(res.stdout, NCU_STEPS)
        if k and "k0" in by_k:
            base = by_k["k0"]["kernels"]
            names = set(base) | set(entry["kernels"])
            extra = {n: entry["kernels"].get(n, {}).get("us", 0.0) - base.get(n, {}).get("us", 0.0) for n in names}
            entry["extra_over_k0_us"] = dict(sorted(extra.items(), key=lambda kv: -abs(kv[1]))[:25])
        by_k[f"k{k}"] = entry
        write_result({"commit": commit, "shape": args.shape, "regime": "random", **by_k}, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="e2b")
    parser.add_argument("--device", default="cuda", help="where HF builds the pair (cpu for a tiny shape)")
    parser.add_argument("--n-predict", type=int, default=128)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="(internal) measure one variant in this process")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--kernels", type=int, metavar="K", help="(internal) profile a few steps at k=K, for ncu")
    parser.add_argument("--ncu", nargs="?", const="ncu", help="per-kernel time per step under Nsight Compute")
    parser.add_argument(
        "--ncu-k", type=int, action="append", metavar="K", help="with --ncu: only these k (default 0, 1, 3)"
    )
    parser.add_argument("--commit")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.variant or args.kernels is not None:
        print(json.dumps(measure(args.shape, args.device, args.n_predict, args.kernels)))
        return
    if args.ncu:
        profile_kernels(args)
        return
    variants = {}
    for name in args.variants:
        env = VARIANTS[name]
        cmd = child_command(args, "--n-predict", str(args.n_predict), "--variant", name)
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
