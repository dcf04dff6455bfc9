"""Side-by-side draft-MTP benchmark: our session vs our baseline vs upstream's own loop.

All contenders run in one process tree, on the same GGUFs, in one run; the JSON keeps ratios
next to the absolute numbers, and ratios are what to compare across machines.

    python bench/run.py --pair random --pair agree [--upstream PATH/llama-speculative-simple] \
        [--n-predict 128] [--out bench/results/DATE-DEVICE.json]

Pairs are the test fixtures (tiny shapes); ``--target/--drafter`` bench any GGUF pair instead.
Schema (``schema`` = 1): ``device``, ``commit``, ``date``, ``rows`` (``pair``, ``name``, ``k``,
``tokens_per_s``, ``ms_per_step``, ``acceptance``, ``tokens``), ``summary`` (per pair:
``target_step_ms``, ``ours_over_baseline_k3``, ``ours_over_upstream_k3``, ``acceptance_k3``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import git_commit  # bench/ is on sys.path when a script here runs

PROMPTS = ["the quick brown fox", "speculative decoding with a drafter", "9 8 7 6 5 4 3 2 1"]


def _ours(target: Any, drafter: Any, k: int, n_predict: int, n_gpu_layers: int, repeats: int) -> dict[str, Any]:
    from pyllama_mtp import MtpSession

    with MtpSession(target, drafter if k else None, n_draft=k, n_ctx=2048) as session:
        session.complete(PROMPTS[0], 8)  # warm-up: graph allocation, first-touch of weights
        session.reset()
        rates = []
        for _ in range(repeats):
            for prompt in PROMPTS:
                before = session.stats
                session.complete(prompt, n_predict)
                after = session.stats
                dt = after.generate_seconds - before.generate_seconds
                rates.append((after.n_generated - before.n_generated) / dt if dt > 0 else 0.0)
        stats = session.stats
    return {
        "name": "ours-baseline" if k == 0 else f"ours-draft-mtp-k{k}",
        "k": k,
        "tokens_per_s": statistics.median(rates),
        "ms_per_step": 1e3 * stats.generate_seconds / max(1, stats.n_steps),
        "acceptance": stats.acceptance_rate if k else None,
        "tokens": stats.n_generated,
    }


_DECODED = re.compile(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds")
_DRAFTED = re.compile(r"n_drafted\s*=\s*(\d+)")
_ACCEPT = re.compile(r"n_accept\s*=\s*(\d+)")


def _upstream(binary: str, target: Path, drafter: Path, k: int, n_predict: int, n_gpu_layers: int) -> dict[str, Any]:
    """Upstream's examples/speculative-simple with --spec-type draft-mtp, same tree, same files."""
    rates, drafted, accepted, tokens = [], 0, 0, 0
    for prompt in PROMPTS:
        cmd = [
            binary, "-m", str(target), "-md", str(drafter), "--spec-type", "draft-mtp",
            "--spec-draft-n-max", str(k), "-n", str(n_predict), "-p", prompt, "--temp", "0",
            "-c", "2048", "-ngl", str(n_gpu_layers), "-ngld", str(n_gpu_layers),
        ]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        log = res.stdout + res.stderr
        m = _DECODED.search(log)
        if res.returncode != 0 or m is None:
            raise RuntimeError(f"upstream run failed ({res.returncode}):\n{log[-3000:]}")
        n, seconds = int(m.group(1)), float(m.group(2))
        rates.append(n / seconds)
        tokens += n
        drafted += int(_DRAFTED.search(log).group(1))  # type: ignore[union-attr]
        accepted += int(_ACCEPT.search(log).group(1))  # type: ignore[union-attr]
    return {
        "name": f"upstream-draft-mtp-k{k}",
        "k": k,
        "tokens_per_s": statistics.median(rates),
        "ms_per_step": None,
        "acceptance": accepted / drafted if drafted else 0.0,
        "tokens": tokens,
    }


def _device() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    import platform

    return f"cpu: {platform.processor() or platform.machine()}"


def main() -> int:
    from pyllama_mtp import Model, build_info
    from pyllama_mtp.fixtures import PairConfig, build_pair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", action="append", choices=["random", "agree"], help="fixture pair(s)")
    parser.add_argument("--target", type=Path)
    parser.add_argument("--drafter", type=Path)
    parser.add_argument("--upstream", help="path to upstream's llama-speculative-simple built from the same tree")
    parser.add_argument("--n-predict", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("-ngl", "--n-gpu-layers", type=int, default=99)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--commit", help="our commit, where git cannot tell (a copied tree)")
    args = parser.parse_args()

    pairs: list[tuple[str, Path, Path]] = []
    if args.target and args.drafter:
        pairs.append(("custom", args.target, args.drafter))
    for name in args.pair or ([] if pairs else ["random", "agree"]):
        fixture = build_pair(PairConfig(agree=name == "agree"))
        pairs.append((name, fixture.target_gguf, fixture.drafter_gguf))

    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for label, target_path, drafter_path in pairs:
        with (
            Model(target_path, n_gpu_layers=args.n_gpu_layers) as target,
            Model(drafter_path, n_gpu_layers=args.n_gpu_layers) as drafter,
        ):
            mine = [_ours(target, drafter, k, args.n_predict, args.n_gpu_layers, args.repeats) for k in (0, 1, 3)]
        if args.upstream:
            mine.append(_upstream(args.upstream, target_path, drafter_path, 3, args.n_predict, args.n_gpu_layers))
        for row in mine:
            row["pair"] = label
            print(
                f"{label:>7} {row['name']:<24} {row['tokens_per_s']:9.1f} tokens/s"
                + (f"  acceptance {row['acceptance']:.3f}" if row["acceptance"] is not None else ""),
                file=sys.stderr,
            )
        rows += mine
        by_name = {r["name"]: r for r in mine}
        base, k3 = by_name["ours-baseline"], by_name["ours-draft-mtp-k3"]
        up = by_name.get("upstream-draft-mtp-k3")
        summary[label] = {
            "target_step_ms": base["ms_per_step"],
            "ours_over_baseline_k3": k3["tokens_per_s"] / base["tokens_per_s"],
            "ours_over_upstream_k3": k3["tokens_per_s"] / up["tokens_per_s"] if up else None,
            "acceptance_k3": k3["acceptance"],
        }

    info = build_info()
    result = {
        "schema": 1,
        "device": _device(),
        "backends": list(info.backends),
        "commit": args.commit or git_commit(),
        "llama_cpp_commit": info.llama_cpp_commit,
        "date": datetime.date.today().isoformat(),
        "n_predict": args.n_predict,
        "unix_time": int(time.time()),
        "rows": rows,
        "summary": summary,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
