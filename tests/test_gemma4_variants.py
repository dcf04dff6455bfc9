"""The Gemma 4 parts the default tiny pair leaves out, each in a tiny target with its own
gemma4_assistant drafter (``pyllama_mtp.fixtures.VARIANTS``): per-layer input embeddings, layers
that reuse earlier layers' KV and double-wide MLPs there (E2B, E4B); a mixture-of-experts block
beside the dense MLP, and full-attention layers with their own KV-head count whose keys serve as
values (26B-A4B). The checks are the default pair's (test_session): draft-MTP against the target
alone and against Hugging Face, teacher-forced logits, the drafter's first proposals, an agreeing
variant's acceptance."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from pyllama_mtp import ContextError, Model, MtpSession
from pyllama_mtp.fixtures import (
    VARIANTS,
    Pair,
    PairConfig,
    build_pair,
    hf_greedy_with_margins,
    hf_router_margins,
)

from parity import (
    EXACT,
    NEAR_TIE_HF,
    NEAR_TIE_SAME_BUILD,
    NMSE_PROMPT,
    NMSE_TRAJECTORY,
    ROUTER_TIE,
    Comparison,
    check_first_drafts,
    compare,
    equal_tokens,
    own_margin,
    teacher_forced_logits,
)

N_NEW = 48
PROMPTS = [
    "the quick brown fox",
    "a drafter and a target",
    "over the lazy dog 42",
    "x y z",
    "speculative speculative decoding",
    "7 6 5",
    "head model with the fox",
    "dog",
]


def _mixture_of_experts(cfg: PairConfig) -> bool:
    # exact=True does not cover expert products yet (the session refuses it for such a target)
    return cfg.experts > 0


def _router_tie(pair: Pair, prompt: list[int], ref: list[int], divergence: Comparison) -> bool:
    """Whether HF's routers nearly tied where it chose ``ref``'s diverging token (a swapped expert
    there moves the logits by far more than rounding does)."""
    assert divergence.diverged_at is not None
    return hf_router_margins(pair, prompt + ref)[len(prompt) - 1 + divergence.diverged_at] < ROUTER_TIE


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> tuple[PairConfig, Pair]:
    cfg = VARIANTS[request.param]
    return cfg, build_pair(cfg)


@pytest.fixture(scope="module")
def models(variant: tuple[PairConfig, Pair]) -> Iterator[tuple[Model, Model]]:
    _, pair = variant
    with Model(pair.target_gguf) as target, Model(pair.drafter_gguf) as drafter:
        yield target, drafter


def test_greedy_mtp_equals_the_target_alone_and_hf(
    variant: tuple[PairConfig, Pair], models: tuple[Model, Model], record_property: pytest.RecordProperty
) -> None:
    cfg, pair = variant
    target, drafter = models
    exact = not _mixture_of_experts(cfg)
    compared_build = compared_hf = total = 0
    with (
        MtpSession(target, drafter, n_draft=3, n_ctx=512, **EXACT, n_threads=2, exact=exact) as mtp,
        MtpSession(target, None, n_draft=0, n_ctx=512, **EXACT, n_threads=2, exact=exact) as baseline,
    ):
        for text in PROMPTS:
            prompt = target.tokenize(text)
            ours = mtp.complete(prompt, N_NEW)
            base = baseline.complete(prompt, N_NEW)
            if exact:
                compared_build += equal_tokens(target, prompt, ours, base)
            else:
                # a verify batch rounds differently from a one-token decode: equal up to a near-tie
                # of the logits or of the routers (HF's, along our baseline: the H200 swapped an
                # expert there at a logit margin of 0.99)
                same = compare(ours, base, [])
                if same.diverged_at is not None:
                    same.margin = own_margin(target, prompt + base[: same.diverged_at])
                assert same.ok(NEAR_TIE_SAME_BUILD) or _router_tie(pair, prompt, base, same), (
                    f"{text!r}: left the target alone at {same}"
                )
                compared_build += same.compared
            ref, margins = hf_greedy_with_margins(pair, prompt, N_NEW)
            vs_hf = compare(base, ref, margins)
            assert vs_hf.ok(NEAR_TIE_HF) or _router_tie(pair, prompt, ref, vs_hf), (
                f"{text!r}: diverged from HF at {vs_hf.diverged_at} (margin {vs_hf.margin})"
            )
            compared_hf += vs_hf.compared
            total += len(base)
    record_property("tokens_compared_vs_baseline", compared_build)
    record_property("tokens_compared_vs_hf", compared_hf)
    # the near-tie rule must not swallow the comparison
    assert compared_build >= total // 2
    assert compared_hf >= total // 2


def test_teacher_forced_logits_match_hf(variant: tuple[PairConfig, Pair], models: tuple[Model, Model]) -> None:
    _, pair = variant
    target, _ = models
    for text in PROMPTS[:4]:
        prompt = target.tokenize(text)
        seq, ours, ref, ref_tokens, margins = teacher_forced_logits(target, pair, prompt, N_NEW)
        nmse = ((ours - ref) ** 2).sum(axis=1) / (ref**2).sum(axis=1)
        # positions where HF's routers nearly tied are left out (none for a dense target); at the
        # GPU's wider tie band about half remain (25 of 54 for one prompt on the H200): a quarter must
        clear = np.array(hf_router_margins(pair, seq)) >= ROUTER_TIE
        assert clear.sum() >= len(seq) // 4, (text, clear.sum(), len(seq))
        assert nmse[: len(prompt)][clear[: len(prompt)]].max(initial=0.0) < NMSE_PROMPT, (text, nmse[: len(prompt)])
        assert nmse[clear].max() < NMSE_TRAJECTORY, (text, nmse[clear].max())
        ours_next = ours[len(prompt) - 1 : -1].argmax(axis=1)
        for i, (a, b) in enumerate(zip(ours_next, ref_tokens, strict=True)):
            assert a == b or margins[i] < NEAR_TIE_HF or not clear[len(prompt) - 1 + i], (text, i, a, b, margins[i])


def test_drafter_first_proposals_match_hf(variant: tuple[PairConfig, Pair], models: tuple[Model, Model]) -> None:
    """The drafter reads the target's last own-KV layers (not its last layers, which reuse them)."""
    _, pair = variant
    target, drafter = models
    with MtpSession(target, drafter, n_draft=3, n_ctx=512, **EXACT, n_threads=2) as mtp:
        assert check_first_drafts(mtp, target, pair, PROMPTS, N_NEW) >= 2 * len(PROMPTS)


@pytest.mark.parametrize("n_draft", [1, 3])
def test_an_agreeing_variant_is_accepted(variant: tuple[PairConfig, Pair], n_draft: int) -> None:
    cfg, _ = variant
    agreeing = build_pair(replace(cfg, agree=True))
    with (
        Model(agreeing.target_gguf) as target,
        Model(agreeing.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_draft=n_draft, n_ctx=512, **EXACT, n_threads=2) as session,
    ):
        for text in PROMPTS[:4]:
            assert len(session.complete(text, N_NEW)) == N_NEW
        stats = session.stats
    assert stats.acceptance_rate >= 0.95, stats.format()
    assert min(stats.acceptance_by_position) >= 0.95


def test_exact_is_refused_for_a_mixture_of_experts_target() -> None:
    pair = build_pair(VARIANTS["moe"])
    with Model(pair.target_gguf) as target, Model(pair.drafter_gguf) as drafter:
        with pytest.raises(ContextError, match="exact"):
            MtpSession(target, drafter, n_draft=3, n_ctx=256, n_threads=2, exact=True)
        # the same pair without exact runs
        with MtpSession(target, drafter, n_draft=3, n_ctx=256, n_threads=2) as session:
            assert len(session.complete("the quick brown fox", 8)) == 8


def test_a_drafter_of_another_attention_geometry_is_refused(pair: Pair) -> None:
    """The MoE target's full-attention layers have one KV head, the default drafter's two: the
    drafter would read the target's KV rows at the wrong width (an abort before patch 0021)."""
    moe = build_pair(VARIANTS["moe"])
    with Model(moe.target_gguf) as target, Model(pair.drafter_gguf) as other_drafter:
        with pytest.raises(ContextError, match="attention geometry"):
            MtpSession(target, other_drafter, n_draft=3, n_ctx=256, n_threads=2)
        with Model(moe.drafter_gguf) as drafter, MtpSession(target, drafter, n_draft=3, n_ctx=256) as session:
            assert len(session.complete("the quick brown fox", 8)) == 8
