"""Where sync and async sessions part ways (a diagnosis, not a benchmark): the first step whose
drafts differ between the two pipelines, on a bench shape and regime, from their acceptance traces.

    python bench/async_diff.py --shape e2b --regime mixed --temperature 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pyllama_mtp import Model, MtpSession, Sampling
from pyllama_mtp.benchmark import contenders, shapes


def _run(target: Model, drafter: Model, trace: Path, temperature: float, **kwargs: Any) -> tuple[list[list[int]], Any]:
    sampling = Sampling(temperature=temperature, seed=1 if temperature > 0 else None)
    with MtpSession(target, drafter, n_ctx=contenders.N_CTX, sampling=sampling, trace=trace, **kwargs) as session:
        out = [session.complete(p, 128) for p in contenders.PROMPTS]
        return out, session.stats


FIELDS = ("step", "pos", "drafted", "accepted", "target")  # a trace line without its timings


def _keys(trace: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(e[k] for k in FIELDS) for e in trace]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="e2b")
    parser.add_argument("--regime", default="mixed")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    pair = shapes.build(args.shape, args.regime, args.device)
    tmp = Path(tempfile.mkdtemp())
    with Model(pair.target_gguf) as target, Model(pair.drafter_gguf) as drafter:
        runs = {
            "sync": _run(target, drafter, tmp / "sync", args.temperature),
            "sync-again": _run(target, drafter, tmp / "sync-again", args.temperature),
            "async": _run(target, drafter, tmp / "async", args.temperature, pipeline="async"),
        }
        runs["sync-after-async"] = _run(target, drafter, tmp / "sync-after-async", args.temperature)
        os.environ["LLAMA_MTP_ASYNC_WORKER"] = "0"
        runs["async-deferred"] = _run(target, drafter, tmp / "async-deferred", args.temperature, pipeline="async")
    traces = {name: [json.loads(line) for line in (tmp / name).read_text().splitlines()] for name in runs}
    sync_keys = _keys(traces["sync"])
    for name, (out, stats) in runs.items():
        first = next((i for i, (x, y) in enumerate(zip(sync_keys, _keys(traces[name]), strict=False)) if x != y), None)
        print(
            f"{name:15} outputs_equal={out == runs['sync'][0]} acceptance={stats.acceptance_rate:.4f} "
            f"queued={stats.n_draft_speculative} cancelled={stats.n_draft_cancelled} first_diff={first}"
        )
        if first is not None:
            lo = max(0, first - 3)
            for a, b in zip(traces["sync"][lo : first + 4], traces[name][lo : first + 4], strict=False):
                print("   sync", {k: a[k] for k in FIELDS})
                print("   this", {k: b[k] for k in FIELDS})


if __name__ == "__main__":
    main()
