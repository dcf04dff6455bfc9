"""Comparing greedy token streams when logits can be nearly tied.

Random-weight models have near-tied logits, so two correct implementations may pick different
tokens where the reference's top-2 margin is below rounding noise. A divergence passes only at
such a near-tie; after it the two trajectories legitimately differ and are not compared further.
"""

from __future__ import annotations

from dataclasses import dataclass

# Measured on the default fixture (teacher forcing, f32 GGUF): llama.cpp's CPU logits differ from
# HF's by up to ~0.02 (logit std ~1.6), mostly from ggml's f16-table GELU. Margins under 0.05 are
# therefore ties across implementations.
NEAR_TIE_HF = 0.05
# Same build, different batch shapes (a k+1-token verify batch vs 1-token decodes): measured up
# to 0.008 between one batched decode and token-by-token decodes of the same sequence (CPU).
NEAR_TIE_SAME_BUILD = 0.02


@dataclass
class Comparison:
    compared: int  # tokens compared before a divergence (or all)
    diverged_at: int | None
    margin: float | None  # the reference's top-2 margin at the divergence

    def ok(self, eps: float) -> bool:
        return self.diverged_at is None or (self.margin is not None and self.margin < eps)


def first_divergence(ours: list[int], ref: list[int]) -> int | None:
    for i, (a, b) in enumerate(zip(ours, ref, strict=False)):
        if a != b:
            return i
    return None if len(ours) == len(ref) else min(len(ours), len(ref))


def compare(ours: list[int], ref: list[int], ref_margins: list[float]) -> Comparison:
    """Compare two greedy streams; ``ref_margins[i]`` is the reference's top-2 margin at token i."""
    i = first_divergence(ours, ref)
    if i is None:
        return Comparison(len(ref), None, None)
    margin = ref_margins[i] if i < len(ref_margins) else None
    return Comparison(i, i, margin)
