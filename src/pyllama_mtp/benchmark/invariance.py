"""Batch invariance: how the rows of one batch decode compare with decoding the same tokens one at a time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..context import Context


@dataclass(frozen=True)
class RowComparison:
    """One batch of ``n`` tokens against ``n`` one-token decodes after the same prompt."""

    rows: int  # tokens in the batch
    rows_differing: int  # rows whose logits are not bitwise equal to the one-token decode's
    max_abs_diff: float  # the largest logit difference over all rows


def compare_rows(ctx: Context, prompt: list[int], tokens: list[int]) -> RowComparison:
    """Decode ``prompt``, then ``tokens`` in one batch and again one at a time, and compare the logits.

    The cache is cleared first and left holding ``prompt + tokens``.
    """
    ctx.clear()
    ctx.decode(prompt)
    ctx.decode(tokens, all_logits=True)
    batch = ctx.all_logits()
    ctx.truncate(len(prompt))
    single = []
    for token in tokens:
        ctx.decode([token])
        single.append(ctx.logits())
    diff = np.abs(batch - np.stack(single))
    return RowComparison(len(tokens), int((diff > 0).any(axis=1).sum()), float(diff.max()))
