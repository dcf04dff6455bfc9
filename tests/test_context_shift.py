"""K-shift on Gemma 4's two caches (patch 0008): allowed with a sliding-window cache, and exact."""

from __future__ import annotations

import numpy as np
import pytest

from pyllama_mtp import Context, Model
from pyllama_mtp.fixtures import PairConfig

from parity import EXACT, ON_GPU

WINDOW = PairConfig().sliding_window
# a prompt past the window, so the sliding-window cache has evicted cells when it shifts
PROMPT = [10 + (i * 7) % 200 for i in range(WINDOW + 16)]
NEXT = 50
# a context much larger than the window plus a batch, so the two caches differ in size
SIZES: dict[str, int] = {"n_ctx": 1024, "n_batch": 64}
# measured max |diff| of the next-token logits, shifted vs not: 1e-3 on the CPU (logit std 1.6)
TOLERANCE = 0.05 if ON_GPU else 5e-3


@pytest.mark.parametrize("swa_full", [False, True])
def test_gemma4_cache_can_shift(target: Model, swa_full: bool) -> None:
    with Context(target, swa_full=swa_full, **SIZES) as ctx, Context(target, swa_full=True, **SIZES) as full:
        # without swa_full the sliding-window cache is smaller than the global one (window + batch)
        assert (ctx.memory()["context"] < full.memory()["context"]) == (not swa_full)
        assert ctx.can_shift


@pytest.mark.parametrize("delta", [1, 9, 64])
@pytest.mark.parametrize("swa_full", [False, True])
def test_moving_every_position_keeps_the_next_tokens_logits(target: Model, swa_full: bool, delta: int) -> None:
    """Attention depends on relative positions only: re-rotated keys must give the same logits."""
    with Context(target, swa_full=swa_full, n_threads=2, **SIZES, **EXACT) as ctx:
        ctx.decode(PROMPT + [NEXT])
        unshifted = ctx.logits()
    with Context(target, swa_full=swa_full, n_threads=2, **SIZES, **EXACT) as ctx:
        ctx.decode(PROMPT)
        ctx.shift(delta)
        assert ctx.n_past == len(PROMPT) + delta
        ctx.decode([NEXT])
        shifted = ctx.logits()
    assert np.abs(shifted - unshifted).max() < TOLERANCE


def test_a_shift_that_moves_the_wrong_way_leaves_the_logits_off(target: Model) -> None:
    """The check above can fail: moving only the prompt's second half (a gap) changes the answer."""
    with Context(target, swa_full=True, n_threads=2, **SIZES, **EXACT) as ctx:
        ctx.decode(PROMPT + [NEXT])
        unshifted = ctx.logits()
    with Context(target, swa_full=True, n_threads=2, **SIZES, **EXACT) as ctx:
        ctx.decode(PROMPT)
        ctx.shift(9, start=len(PROMPT) // 2)
        ctx.decode([NEXT])
        assert np.abs(ctx.logits() - unshifted).max() > 10 * TOLERANCE


def test_shift_refuses_negative_positions(target: Model) -> None:
    with Context(target, n_ctx=64) as ctx:
        ctx.decode([10, 11, 12])
        with pytest.raises(ValueError, match="positions must stay >= 0"):
            ctx.shift(-4)
