"""Sync vs async pipeline, interleaved: the ratio the harness's one-after-the-other rows blur.

The harness times each contender once, one after the other, and on the H100 two identical rows
differ by a few percent between runs; the async pipeline's effect is of that size. Here a sync
and an async session live side by side on the same models and take turns, prompt by prompt, for
``--rounds`` rounds; each round gives one tokens/s per pipeline, and the result is the median of
the per-round ratios with their spread. Greedy, k = 3, on the agreeing pair (acceptance ~1: every
next draft is queued behind the verify pass and kept) and the random pair (acceptance ~0: queued
from row 0 and kept); ``--mixed-temperature T`` adds the agreeing pair sampled at T (the harness's
mixed regime: guesses rarely made); ``--speculate-row`` forces a row instead, to time cancellations.

    python bench/async_pipeline.py --shape e2b --out bench/results/DATE-DEVICE-async-pipeline.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _common import git_commit, write_result

from pyllama_mtp import Model, MtpSession, Sampling, build_info
from pyllama_mtp.benchmark import contenders, shapes
from pyllama_mtp.benchmark.harness import device_name

N_CTX = contenders.N_CTX


def measure(
    shape: str, regime: str, device: str, k: int, rounds: int, n_predict: int, row: int | None, temperature: float
) -> dict[str, Any]:
    pair = shapes.build(shape, regime, device)
    sampling = Sampling(temperature=temperature, seed=1 if temperature > 0 else None)
    with (
        Model(pair.target_gguf) as target,
        Model(pair.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_draft=k, n_ctx=N_CTX, sampling=sampling) as sync,
        MtpSession(
            target, drafter, n_draft=k, n_ctx=N_CTX, sampling=sampling, pipeline="async", speculate_row=row
        ) as pipelined,
    ):
        for session in (sync, pipelined):  # warm-up: graphs, first touch of the weights
            session.complete(contenders.PROMPTS[0], 16)
            session.reset()
        ratios, rates = [], {"sync": [], "async": []}
        for r in range(rounds):
            per = {"sync": 0.0, "async": 0.0}
            order = (("sync", sync), ("async", pipelined))
            for prompt in contenders.PROMPTS:
                for name, session in order if r % 2 == 0 else order[::-1]:
                    per[name] += contenders.decode_rate(session, prompt, n_predict) / len(contenders.PROMPTS)
            ratios.append(per["async"] / per["sync"])
            for name in per:
                rates[name].append(per[name])
        outputs_equal = all(sync.complete(p, n_predict) == pipelined.complete(p, n_predict) for p in contenders.PROMPTS)
        stats = pipelined.stats
    return {
        "regime": regime,
        "temperature": temperature,
        "k": k,
        "speculate_row": row,
        "sync_tokens_per_s": statistics.median(rates["sync"]),
        "async_tokens_per_s": statistics.median(rates["async"]),
        "async_over_sync": statistics.median(ratios),
        "async_over_sync_min": min(ratios),
        "async_over_sync_max": max(ratios),
        "acceptance": stats.acceptance_rate,
        "queued_drafts": stats.n_draft_speculative,
        "cancelled_drafts": stats.n_draft_cancelled,
        "drafter_calls": stats.drafter_calls,
        "outputs_equal": outputs_equal,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="e2b")
    parser.add_argument("--device", default="cuda", help="where HF builds the pair (cpu for the tiny shape)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n-predict", type=int, default=128)
    parser.add_argument("--speculate-row", type=int, default=None)
    parser.add_argument(
        "--mixed-temperature",
        type=float,
        default=0.0,
        help="> 0: also the mixed regime (the agreeing pair sampled at this temperature; the harness's "
        "result JSON names it under regimes.mixed)",
    )
    parser.add_argument("--commit", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    t0 = time.time()
    runs = [("agree", 0.0), ("random", 0.0)]
    if args.mixed_temperature > 0:
        runs.append(("mixed", args.mixed_temperature))
    cells = [
        measure(args.shape, regime, args.device, args.k, args.rounds, args.n_predict, args.speculate_row, temp)
        for regime, temp in runs
    ]
    write_result(
        {
            "device": device_name("gpu" if build_info().gpu_offload else "cpu"),
            "commit": args.commit or git_commit(),
            "shape": args.shape,
            "rounds": args.rounds,
            "n_predict": args.n_predict,
            "prompts": list(contenders.PROMPTS),
            "seconds": round(time.time() - t0, 1),
            "cells": cells,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
