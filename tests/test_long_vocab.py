"""A Gemma-4-sized vocabulary (262144 tokens) in f16: the LM heads and argmaxes real pairs run.

On CUDA this takes the paths patches 0010 and 0011 change: the argmax of a vocab-wide row split
over blocks (the fused drafter's chained steps, greedy verify rows sampled in the graph) and the
tall f16 head on tensor cores at one token. Each greedy path must pick the same tokens as the
host's argmax over the same logits rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyllama_mtp import Model, MtpSession
from pyllama_mtp.fixtures import Pair, PairConfig, build_pair

from parity import EXACT

PROMPTS = ["the quick brown fox", "hello world", "a b c d e f g", "z", "drafter head target model"]
N_NEW = 32


@pytest.fixture(scope="module")
def long_vocab_pair() -> Pair:
    return build_pair(PairConfig(vocab_size=262144, outtype="f16"))


@pytest.fixture(scope="module")
def models(long_vocab_pair: Pair) -> Iterator[tuple[Model, Model]]:
    with Model(long_vocab_pair.target_gguf) as target, Model(long_vocab_pair.drafter_gguf) as drafter:
        assert target.n_vocab == 262144
        yield target, drafter


def run(models: tuple[Model, Model], **kwargs: object) -> list[list[int]]:
    target, drafter = models
    with MtpSession(target, drafter, n_ctx=256, **kwargs) as session:  # type: ignore[arg-type]
        return [session.complete(text, N_NEW) for text in PROMPTS]


def test_verify_rows_argmax_in_graph_equals_host(models: tuple[Model, Model]) -> None:
    """Greedy verify rows: the graph's argmax over 262144 logits against the host's."""
    assert run(models, n_draft=3, backend_sampling=True) == run(models, n_draft=3, backend_sampling=False)


def test_fused_drafts_equal_the_per_token_loop(models: tuple[Model, Model]) -> None:
    """The fused drafter's chained argmaxes against upstream's loop sampling the drafter's logits
    on the host: the same drafts at every step. (EXACT as in test_fused_draft: with f16 KV and
    flash attention, CUDA rounds the two graphs' attention apart and near-ties flip.)"""
    target, drafter = models
    drafts = []
    for fused in (True, False):
        with MtpSession(target, drafter, n_draft=3, n_ctx=256, fused_draft=fused, backend_sampling=False, **EXACT) as s:
            drafts.append([step.draft for text in PROMPTS for step in s.steps(text, N_NEW)])
    assert len(drafts[0]) > len(PROMPTS)
    assert drafts[0] == drafts[1]
