"""Run every contender on every (shape, regime) cell in one process tree and write the result."""

from __future__ import annotations

import datetime
import json
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..info import build_info
from ..model import Model
from . import contenders, report
from . import shapes as pairs


@dataclass
class Options:
    """What to run. ``mode="cpu"`` is the harness check: tiny shapes, short generations."""

    mode: str = "gpu"
    shapes: Sequence[str] = ()
    regimes: Sequence[str] = pairs.REGIMES
    ks: Sequence[int] = (1, 3)
    upstream: Path | None = None  # llama-speculative-simple from the same tree; None skips it
    upstream_server: Path | None = None  # llama-server from the same tree; None skips it
    hf: bool = True
    n_predict: int = 0  # 0: 128 on a GPU, 32 on the CPU
    repeats: int = 1
    mixed_acceptance: float = 0.6
    commit: str | None = None
    # RPC servers (host:port): also time the target split across them, its last layers local
    # (rows ours-rpc-*), and a drafter on the same servers (ours-rpc-remote-drafter-k{k})
    rpc: Sequence[str] = ()
    # local devices the target is split across by layer, in layer order ("CUDA1", "CUDA0"); the
    # drafter runs on the last one, beside the target's last layers (the KV it reads). Every row
    # of ours and of llama-server runs so; empty: the default placement.
    devices: Sequence[str] = ()
    # also time our rows with exact=True (ours-exact-*): verify rows bitwise one-token decodes
    exact: bool = False
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


def device_name(mode: str) -> str:
    if mode == "gpu":
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
        devices = build_info().devices
        return devices[0] if devices else "gpu"
    import os

    return f"cpu: {platform.machine()}, {os.cpu_count()} threads"


def slug(device: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100'; CPUs -> 'cpu'."""
    m = re.search(r"\b([A-Z]\d{2,4}[A-Z]?)\b", device)
    if m and not device.startswith("cpu"):
        return m.group(1).lower()
    return "cpu" if device.startswith("cpu") else re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-")


def _cell(opts: Options, run: contenders.Run, n_gpu_layers: int, hf_device: str | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    split = list(opts.devices) or None  # (Model's split_mode is "layer")
    beside = [opts.devices[-1]] if opts.devices else None
    with Model(run.pair.target_gguf, n_gpu_layers=n_gpu_layers, devices=split) as target:
        with Model(run.pair.drafter_gguf, n_gpu_layers=n_gpu_layers, devices=beside) as drafter:
            for k in (0, *opts.ks):
                rows.append(contenders.ours(run, target, drafter, k))
                opts.log(_line(rows[-1]))
                if k:  # side by side with the sync row just before it
                    rows.append(contenders.ours(run, target, drafter, k, pipeline="async"))
                    opts.log(_line(rows[-1]))
            rows.append(contenders.ours(run, target, drafter, max(opts.ks), fused=False))
            opts.log(_line(rows[-1]))
            rows.append(contenders.ours(run, target, drafter, max(opts.ks), auto=True))
            opts.log(_line(rows[-1]))
            for k in (0, *opts.ks) if opts.exact else ():  # side by side with the rows above
                rows.append(contenders.ours(run, target, drafter, k, exact=True, prefix="ours-exact"))
                opts.log(_line(rows[-1]))
        prompts = [target.tokenize(p) for p in contenders.PROMPTS]
    if opts.rpc:
        rows += _rpc_rows(opts, run, n_gpu_layers)
    if opts.upstream is not None and not run.schedule:  # its loop cannot change sampling mid-generation
        for k in opts.ks:
            rows.append(contenders.upstream(run, opts.upstream, k, n_gpu_layers, devices=opts.devices))
            opts.log(_line(rows[-1]))
    if opts.upstream_server is not None:
        for k in (0, *opts.ks):
            for backend_sampling in (False, True):
                rows.append(
                    contenders.upstream_server(
                        run,
                        opts.upstream_server,
                        k,
                        n_gpu_layers,
                        backend_sampling=backend_sampling,
                        devices=opts.devices,
                    )
                )
                opts.log(_line(rows[-1]))
    if hf_device is not None and run.temperature == 0 and pairs.has_hf(run.shape):
        for row in contenders.hf(run, prompts, [max(opts.ks)], hf_device):
            rows.append(row)
            opts.log(_line(row))
    return rows


def _rpc_rows(opts: Options, run: contenders.Run, n_gpu_layers: int) -> list[dict[str, Any]]:
    """The target split across ``opts.rpc`` with the drafter local (the default split keeps the KV
    it reads here), then every target layer remote with the drafter on the last server."""
    rows: list[dict[str, Any]] = []
    k = max(opts.ks)
    with (
        Model(run.pair.target_gguf, n_gpu_layers=-1, rpc=opts.rpc) as target,
        Model(run.pair.drafter_gguf, n_gpu_layers=n_gpu_layers) as drafter,
    ):
        for n in (0, *opts.ks):
            rows.append(contenders.ours(run, target, drafter, n, prefix="ours-rpc"))
            opts.log(_line(rows[-1]))
    # (one device per server:) every target layer remote, the drafter on the last server, beside
    # the KV it reads
    remote_only = [1.0] * len(opts.rpc)
    last_server = [0.0] * (len(opts.rpc) - 1) + [1.0]
    with (
        Model(run.pair.target_gguf, n_gpu_layers=-1, rpc=opts.rpc, tensor_split=remote_only) as target,
        Model(run.pair.drafter_gguf, n_gpu_layers=-1, rpc=opts.rpc, tensor_split=last_server) as drafter,
    ):
        row = contenders.ours(run, target, drafter, k, prefix="ours-rpc")
        row["name"] = f"ours-rpc-remote-drafter-k{k}"
        rows.append(row)
        opts.log(_line(rows[-1]))
    return rows


def _line(row: dict[str, Any]) -> str:
    acc = f"  acceptance {row['acceptance']:.3f}" if row.get("acceptance") is not None else ""
    return (
        f"  {row['shape']:>5} {row['regime']:>6} {row['name']:<26} {row['tokens_per_s']:9.1f} tokens/s"
        f"  ttft {row['ttft_ms']:7.1f} ms{acc}"
    )


def run(opts: Options) -> dict[str, Any]:
    """Build the pairs, time the contenders, and return the result object (see :mod:`.report`)."""
    gpu = opts.mode == "gpu"
    info = build_info()
    if gpu and not any(b.lower() in ("cuda", "metal") for b in info.backends):
        raise RuntimeError(f"this build has no GPU backend ({', '.join(info.backends)}): use --cpu")
    shape_names = list(opts.shapes) or (["e2b"] if gpu else ["tiny"])
    n_predict = opts.n_predict or (128 if gpu else 32)
    n_gpu_layers = -1 if gpu else 0
    hf_device: str | None = None
    build_device: str | None = None
    if opts.hf or gpu:
        import torch

        cuda = gpu and torch.cuda.is_available()
        build_device = "cuda" if cuda else None
        hf_device = ("cuda" if cuda else "cpu") if opts.hf else None
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    regimes: dict[str, dict[str, Any]] = {}
    for shape in shape_names:
        for regime in opts.regimes:
            opts.log(f"[{time.perf_counter() - t0:6.1f} s] {shape} / {regime}: building the pair (cached) ...")
            pair = pairs.build(shape, regime, build_device)
            temperature = 0.0
            schedule: tuple[tuple[int, float], ...] = ()
            if regime in ("mixed", "drifting"):
                goal = opts.mixed_acceptance if regime == "mixed" else pairs.DRIFT_LOW
                with Model(pair.target_gguf, n_gpu_layers=n_gpu_layers) as target:
                    temperature = pairs.calibrate_temperature(target, goal)
                if regime == "drifting":
                    schedule = pairs.drift_schedule(n_predict, temperature)
            # sampled paths vary from pass to pass: the mixed and drifting regimes take three
            repeats = max(opts.repeats, 3) if temperature > 0 else opts.repeats
            pair_kind = "random" if regime == "random" else "agree"
            regimes[regime] = {"pair": pair_kind, "temperature": temperature, "repeats": repeats}
            if schedule:
                regimes[regime]["spans"] = [list(span) for span in schedule]
            cell = contenders.Run(shape, regime, pair, temperature, n_predict, repeats, schedule=schedule)
            rows += _cell(opts, cell, n_gpu_layers, hf_device)
    report.fill_model(rows)
    result = {
        "schema": report.SCHEMA_VERSION,
        "device": device_name(opts.mode),
        "commit": opts.commit or git_commit(),
        "llama_cpp_commit": info.llama_cpp_commit,
        "backends": list(info.backends),
        "date": datetime.date.today().isoformat(),
        "mode": opts.mode,
        "devices": list(opts.devices),  # the target's layer split ([]: the default placement)
        "n_predict": n_predict,
        "prompts": list(contenders.PROMPTS),
        "shapes": {s: pairs.describe(s) for s in shape_names},
        "regimes": regimes,
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
        "summary": report.summarize(rows, shape_names[0], max(opts.ks)),
        "summaries": {shape: report.summarize(rows, shape, max(opts.ks)) for shape in shape_names},
    }
    report.validate(result)
    return result


def git_commit() -> str | None:
    """The checkout's short commit, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write(result: dict[str, Any], out_dir: Path, plot: bool = True) -> list[Path]:
    """``<date>-<device>.json`` (and ``.png``) in ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result['date']}-{slug(result['device'])}-mtp-bench" + ("" if result["mode"] == "gpu" else "-cpu")
    paths = [out_dir / f"{stem}.json"]
    paths[0].write_text(json.dumps(result, indent=1) + "\n")
    if plot:
        paths.append(report.plot(result, out_dir / f"{stem}.png"))
    return paths
