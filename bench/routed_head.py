"""Edge assistants' centroid-routed LM head vs the full head, side by side in one run.

    python bench/routed_head.py [--vocab 262144] [--centroids 2048] [--top-k 32] \
        [--target-hidden 1536] [--target-layers 8] [--n-predict 64] [--out FILE]

Two random drafters of one shape (width 256, 4 layers) for one random Gemma-4 target, built
with Hugging Face and converted by the pinned tree (``pyllama_mtp.fixtures``): one scores the
whole vocabulary, the other routes through ``--centroids`` token clusters and scores the tokens
of the top ``--top-k`` (HF ``use_ordered_embeddings``; Google's E2B/E4B assistants: 2048 / 32 at
vocab 262144). Each runs draft-MTP with k=3 on the same target; the acceptance trace gives the
drafter's time per draft token (``draft_us`` per step / tokens drafted), the session stats the
decode tokens/s, and the target alone (k=0) is the baseline. Random pairs accept ~nothing, so
tokens/s here shows what the drafter costs, not a speed-up.
Schema (``schema`` = 1): ``device``, ``commit``, ``date``, ``shape``, ``rows`` (``name``,
``draft_ms_per_token``, ``tokens_per_s``, ``acceptance``), ``summary`` (``routed_over_full_draft_time``,
``routed_over_full_tokens_per_s``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import git_commit, write_result

from pyllama_mtp import Model, MtpSession, build_info
from pyllama_mtp.fixtures import PairConfig, build_pair

PROMPTS = ["the quick brown fox", "speculative decoding with a drafter", "9 8 7 6 5 4 3 2 1"]


def _run(target: Model, drafter: Model | None, k: int, n_predict: int, name: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.ndjson"
        with MtpSession(target, drafter, n_draft=k, n_ctx=1024, trace=trace if k else None) as session:
            session.complete(PROMPTS[0], 8)  # warm-up: graph allocation, first touch of weights
            session.reset()
            for prompt in PROMPTS:
                session.complete(prompt, n_predict)
            stats = session.stats
        per_token = []
        if k:
            steps: dict[int, tuple[int, int]] = {}
            for line in trace.read_text().splitlines():
                event = json.loads(line)
                n, us = steps.get(event["step"], (0, event["draft_us"]))
                steps[event["step"]] = (n + 1, us)
            per_token = [us / n / 1e3 for n, us in steps.values()]
    return {
        "name": name,
        "draft_ms_per_token": statistics.median(per_token) if per_token else None,
        "tokens_per_s": stats.tokens_per_second,
        "acceptance": stats.acceptance_rate if k else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=262144)
    ap.add_argument("--centroids", type=int, default=2048)
    ap.add_argument("--top-k", type=int, default=32)
    ap.add_argument("--target-hidden", type=int, default=1536)
    ap.add_argument("--target-layers", type=int, default=8)
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--commit", default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    shape = dict(
        target_hidden=args.target_hidden,
        target_layers=args.target_layers,
        drafter_hidden=256,
        drafter_layers=4,
        vocab_size=args.vocab,
        outtype="f16",
    )
    print("building the pairs (cached by shape) ...", file=sys.stderr)
    full = build_pair(PairConfig(**shape))  # type: ignore[arg-type]
    routed = build_pair(PairConfig(**shape, centroids=args.centroids, centroid_top_k=args.top_k))  # type: ignore[arg-type]
    rows = []
    with Model(full.target_gguf) as target, Model(full.drafter_gguf) as full_head:
        rows.append(_run(target, None, 0, args.n_predict, "target-alone"))
        rows.append(_run(target, full_head, 3, args.n_predict, "full-head-k3"))
        # the routed drafter's target has the same shape and seed: same weights, same vocabulary
        with Model(routed.drafter_gguf) as routed_head:
            rows.append(_run(target, routed_head, 3, args.n_predict, "routed-head-k3"))
    by = {r["name"]: r for r in rows}
    info = build_info()
    result = {
        "schema": 1,
        "device": info.devices[0] if info.devices else "cpu",
        "commit": args.commit or git_commit(),
        "date": datetime.date.today().isoformat(),
        "shape": {**shape, "centroids": args.centroids, "top_k": args.top_k, "k": 3},
        "rows": rows,
        "summary": {
            "routed_over_full_draft_time": by["routed-head-k3"]["draft_ms_per_token"]
            / by["full-head-k3"]["draft_ms_per_token"],
            "routed_over_full_tokens_per_s": by["routed-head-k3"]["tokens_per_s"] / by["full-head-k3"]["tokens_per_s"],
        },
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
