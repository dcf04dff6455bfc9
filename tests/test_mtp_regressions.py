"""Regression tests for the draft-MTP seams upstream now carries, and bad pairings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from gguf_corpus import with_f32_tensor_filled

from pyllama_mtp import (
    Context,
    ContextError,
    ContextOverflowError,
    DecodeError,
    IncompatibleModelsError,
    InvalidTokenError,
    Model,
    MtpSession,
    Sampling,
)
from pyllama_mtp.fixtures import Pair, PairConfig, build_pair

from parity import EXACT

# well past the 32-token sliding window (the fixture's BPE merges its training phrases, so vary it)
LONG_PROMPT = " ".join(f"{i} fox {chr(97 + i % 26)}" for i in range(40))


def test_drafter_rows_are_target_width(target: Model, drafter: Model) -> None:
    # the drafter is narrower than the target, but reads and writes hidden rows of the target's width
    assert drafter.n_embd < target.n_embd_out
    assert drafter.n_embd_out == target.n_embd_out
    with MtpSession(target, drafter, n_ctx=256, **EXACT) as session:
        assert next(session.steps("the quick brown fox", 8)).draft


def test_drafter_for_another_target_width_is_refused(drafter: Model) -> None:
    other = build_pair(PairConfig(target_hidden=192, drafter_hidden=96))
    with Model(other.target_gguf) as wide_target:
        assert wide_target.n_embd_out != drafter.n_embd_out
        with pytest.raises(IncompatibleModelsError, match="hidden rows of width 256 but the target produces 192"):
            MtpSession(wide_target, drafter)
        # the process and the models are fine afterwards
        with MtpSession(wide_target, None, n_draft=0, n_ctx=256, **EXACT) as plain:
            assert len(plain.complete("fox", 4)) >= 1


def test_pairs_without_an_mtp_head_are_refused(target: Model, drafter: Model) -> None:
    with pytest.raises(IncompatibleModelsError, match="drafter has no MTP"):
        MtpSession(target, target)
    with pytest.raises(IncompatibleModelsError, match="target has no MTP head"):
        MtpSession(target, None)


def test_assistant_context_without_ctx_other_raises(drafter: Model, target: Model) -> None:
    with pytest.raises(ContextError, match="ctx_other"):
        Context(drafter, n_ctx=256, **EXACT, mtp=True)
    with pytest.raises(IncompatibleModelsError, match="drafter was passed as the target"):
        MtpSession(drafter, None, n_draft=0)
    # and with it, it works
    with Context(target, n_ctx=256, **EXACT) as tgt, Context(drafter, n_ctx=256, mtp=True, ctx_other=tgt) as dft:
        assert dft.n_ctx == tgt.n_ctx


def test_drafter_shares_the_target_kv(target: Model, drafter: Model) -> None:
    with MtpSession(target, drafter, n_ctx=1024, **EXACT) as session:
        memory = session.memory()
    assert memory["target"]["context"] > 0
    assert memory["drafter"]["context"] == 0, memory  # every drafter layer reads the target's cells


@pytest.mark.parametrize("swa_full", [False, True])
def test_swa_target_with_draft_mtp(target: Model, drafter: Model, swa_full: bool) -> None:
    """No swa_full override for the draft context: the drafter's SWA cache is never oversized, and
    generation past the window equals the baseline under either setting."""
    with (
        MtpSession(target, drafter, n_ctx=1024, **EXACT, swa_full=swa_full, exact=True) as spec,
        MtpSession(target, None, n_draft=0, n_ctx=1024, **EXACT, swa_full=swa_full, exact=True) as plain,
    ):
        prompt = target.tokenize(LONG_PROMPT)
        assert len(prompt) > 64
        assert spec.complete(prompt, 64) == plain.complete(prompt, 64)
        memory = spec.memory()
    assert memory["drafter"]["context"] == 0
    with MtpSession(target, drafter, n_ctx=1024, **EXACT, swa_full=not swa_full) as flipped:
        other = flipped.memory()["target"]["context"]
    small, full = (memory["target"]["context"], other) if not swa_full else (other, memory["target"]["context"])
    assert small < full, "swa_full=False should shrink the target's sliding-window cache"


def test_context_overflow_mid_generation_raises_and_session_recovers(target: Model, drafter: Model) -> None:
    with MtpSession(target, drafter, n_ctx=256, **EXACT) as session:
        prompt = target.tokenize(LONG_PROMPT)
        n_ctx = session.n_ctx
        with pytest.raises(ContextOverflowError):
            session.complete(prompt * 4, 8)  # the prompt alone overflows
        generated = []
        with pytest.raises(ContextOverflowError):
            for token in session.generate(prompt, n_ctx):
                generated.append(token)
        assert len(prompt) + len(generated) >= n_ctx - 2
        assert len(session.complete("fox", 4)) >= 1


def test_invalid_prompt_tokens_raise(target: Model, drafter: Model) -> None:
    with MtpSession(target, drafter, n_ctx=256, **EXACT) as session:
        with pytest.raises(InvalidTokenError):
            session.complete([1, target.n_vocab + 3], 4)
        with pytest.raises(InvalidTokenError):
            list(session.generate([-1], 4))
        with pytest.raises(ValueError):
            session.complete([], 4)
        assert len(session.complete("fox", 4)) >= 1


def test_a_new_generation_ends_the_previous_iterator(target: Model, drafter: Model) -> None:
    with MtpSession(target, drafter, n_ctx=256, **EXACT) as session:
        first = session.generate("the quick brown fox", 32)
        next(first)
        session.complete("lazy dog", 4)
        with pytest.raises(RuntimeError, match="superseded"):
            next(first)


@pytest.mark.parametrize("n_draft", [0, 3])
@pytest.mark.parametrize(
    "sampling", [Sampling(), Sampling(temperature=0.8, top_p=0.9, seed=1)], ids=["greedy", "sampled"]
)
def test_not_a_number_logits_raise(
    pair: Pair, drafter: Model, tmp_path: Path, n_draft: int, sampling: Sampling
) -> None:
    """A target whose logits are NaN (weights or activations that overflow on a backend): the H200
    aborted in the sampler's assert, the CPU's samplers returned a token all the same. Sampled on
    the host, the session raises (patch 0022 and the shim's check of the chosen logit), and the
    process goes on. (Rows sampled in the target's graph are not checked: no logits reach the host.)"""
    broken = tmp_path / "nan-target.gguf"
    broken.write_bytes(with_f32_tensor_filled(pair.target_gguf.read_bytes(), "output_norm.weight", float("nan")))
    kwargs: dict[str, Any] = dict(n_draft=n_draft, n_ctx=256, sampling=sampling, backend_sampling=False, **EXACT)
    with (
        Model(broken) as target,
        MtpSession(target, drafter, **kwargs) as session,
        pytest.raises(DecodeError, match="not numbers"),
    ):
        session.complete("the quick brown fox", 8)
    with Model(pair.target_gguf) as target, MtpSession(target, drafter, **kwargs) as session:
        assert len(session.complete("the quick brown fox", 8)) == 8


def test_not_a_number_logits_raise_in_plain_greedy_generation(pair: Pair, tmp_path: Path) -> None:
    """Context.generate_greedy's argmax compared NaN logits false both ways and returned token 0
    for every step, as if chosen: it raises as the session does, and the context stays usable."""
    broken = tmp_path / "nan-target.gguf"
    broken.write_bytes(with_f32_tensor_filled(pair.target_gguf.read_bytes(), "output_norm.weight", float("nan")))
    with Model(broken) as target, Context(target, n_ctx=256, **EXACT) as ctx:
        prompt = target.tokenize("the quick brown fox")
        with pytest.raises(DecodeError, match="not numbers"):
            ctx.generate_greedy(prompt, 8)
    with Model(pair.target_gguf) as target, Context(target, n_ctx=256, **EXACT) as ctx:
        assert len(ctx.generate_greedy(target.tokenize("the quick brown fox"), 8)) >= 1
