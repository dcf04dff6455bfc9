"""Fused drafting (patch 0009): a gemma4-assistant drafts all n_draft tokens in one graph, each
step's argmax chained on the backend. It must propose exactly the drafts of upstream's
per-token loop, step for step, and so emit exactly the same tokens. (That a fused session
equals the target alone is test_session's greedy parity test: fused is the default.)"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pyllama_mtp import Model, MtpSession
from pyllama_mtp.fixtures import VARIANTS, Pair, PairConfig, build_pair
from pyllama_mtp.trace import read_trace

from parity import EXACT

PROMPTS = [
    "the quick brown fox",
    "speculative decoding with a drafter",
    "9 8 7 6 5 4 3 2 1",
    "zebra 123 dog over the lazy",
    "a target model and a drafter head",
    "<0x41><0x42> quick quick",
]

PAIRS = {
    "random": PairConfig(),
    "agree": PairConfig(agree=True),
    "routed": PairConfig(centroids=32, centroid_top_k=4),
    **VARIANTS,  # per-layer inputs and shared-KV layers; experts
}


def _drafts(trace: Path) -> list[tuple[int, int, int]]:
    import json

    return [(e["step"], e["pos"], e["drafted"]) for e in map(json.loads, trace.read_text().splitlines())]


def _run(pair: Pair, fused: bool, n_draft: int, trace: Path) -> tuple[list[list[int]], Any]:
    with (
        Model(pair.target_gguf) as target,
        Model(pair.drafter_gguf) as drafter,
        MtpSession(
            target, drafter, n_draft=n_draft, n_ctx=512, n_threads=2, trace=trace, fused_draft=fused, **EXACT
        ) as session,
    ):
        outputs = [session.complete(p, 40) for p in PROMPTS]
        return outputs, session.stats


@pytest.mark.parametrize("n_draft", [1, 3, 6])
@pytest.mark.parametrize("name", list(PAIRS))
def test_fused_drafts_equal_the_per_token_loop(name: str, n_draft: int, tmp_path: Path) -> None:
    pair = build_pair(PAIRS[name])
    fused_out, fused_stats = _run(pair, True, n_draft, tmp_path / "fused.ndjson")
    loop_out, loop_stats = _run(pair, False, n_draft, tmp_path / "loop.ndjson")
    assert fused_out == loop_out
    assert _drafts(tmp_path / "fused.ndjson") == _drafts(tmp_path / "loop.ndjson")
    timings = {"prompt_seconds": fused_stats.prompt_seconds, "generate_seconds": fused_stats.generate_seconds}
    assert fused_stats == replace(loop_stats, **timings)
    assert read_trace(tmp_path / "fused.ndjson").n_drafted == fused_stats.n_drafted > 0
    if name == "agree":
        assert fused_stats.acceptance_rate > 0.95
