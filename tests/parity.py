"""Comparing greedy token streams when logits can be nearly tied.

Random-weight models have near-tied logits, so two correct implementations may pick different
tokens where the reference's top-2 margin is below rounding noise. A divergence passes only at
such a near-tie; after it the two trajectories legitimately differ and are not compared further.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Parity runs use an f32 KV cache without flash attention: with llama.cpp's defaults (f16 KV,
# flash attention auto) CPU logits move by 0.04 against HF and 0.01 between batch shapes; without
# them by 0.008 and 0.001 (logit std ~1.6). `python bench/numerics.py` measures these numbers;
# bench/results/*-numerics.json holds them for the CPU and the H100.
EXACT: dict[str, Any] = {"kv_cache_type": "f32", "flash_attn": False}


def _on_gpu() -> bool:
    from pyllama_mtp import build_info

    return build_info().gpu_offload  # the fixtures load with n_gpu_layers=-1


ON_GPU = _on_gpu()
# Top-2 margins under which two computations may legitimately pick different tokens: HF vs this
# build, and this build at two batch shapes (a prompt decoded in one batch vs in two). Draft-MTP
# against the target alone needs no margin: with exact=True the tests require equal tokens.
# CPU: measured max |diff| 0.008 vs HF (ggml's f16-table GELU is most of it) and 0.0008 between
# shapes. CUDA (H100): 0.036 for both; batched f32 matmuls on the GPU round like f16/TF32, and
# flash attention off changes nothing there.
NEAR_TIE_HF = 0.08 if ON_GPU else 0.02
NEAR_TIE_SAME_BUILD = 0.08 if ON_GPU else 0.005
# Per-position normalised MSE vs HF, on the prompt and along a 64-token teacher-forced
# continuation, where the error grows slowly with position. CPU: 1e-4 holds on prompts (CPU max
# 1.5e-6 with EXACT). CUDA: prompts within a long batch reach 2.0e-4 at one position and the
# continuation 1.4e-3 (H100, 2026-11-24), the batched-matmul rounding above.
NMSE_PROMPT = 5e-4 if ON_GPU else 1e-4
NMSE_TRAJECTORY = 5e-3 if ON_GPU else 1e-3
# Mixture-of-experts targets: router margins (``fixtures.hf_router_margins``: the gap between the
# last expert chosen and the first left out, in score RMS) under which this build may route a token
# to another expert than HF. CPU, the tiny MoE fixture: swaps seen at 0.014 and 0.002 (NMSE ~1e-2
# there), none above; about a quarter of positions fall under 0.03 with 4 such layers.
ROUTER_TIE = 0.06 if ON_GPU else 0.03


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


def own_margin(target: Any, tokens: list[int], n_ctx: int = 1024) -> float:
    """Top-2 logit margin of this build's target after ``tokens`` (one plain decode, EXACT)."""
    import numpy as np

    from pyllama_mtp import Context

    with Context(target, n_ctx=n_ctx, **EXACT) as ctx:
        ctx.decode(tokens)
        top = np.sort(ctx.logits())[-2:]
    return float(top[1] - top[0])


def equal_tokens(target: Any, prompt: list[int], ours: list[int], base: list[int]) -> int:
    """Tokens compared where our own runs must agree exactly (exact=True): any divergence fails,
    naming this build's top-2 margin there. Returns the number of tokens compared."""
    same = compare(ours, base, [])
    if same.diverged_at is not None:
        margin = own_margin(target, prompt + base[: same.diverged_at])
        raise AssertionError(f"left the baseline at {same.diverged_at} (this build's top-2 margin there: {margin})")
    return same.compared


def teacher_forced_logits(target: Any, pair: Any, prompt: list[int], n_new: int) -> tuple[Any, ...]:
    """HF's greedy continuation of ``prompt`` (tokens and top-2 margins), and both sides' logits for
    prompt + continuation in one batch: ``(seq, ours, ref, ref_tokens, margins)``, ours with EXACT."""
    import torch

    from pyllama_mtp import Context
    from pyllama_mtp.fixtures import hf_greedy_with_margins, hf_target

    ref_tokens, margins = hf_greedy_with_margins(pair, prompt, n_new)
    seq = prompt + ref_tokens
    with torch.no_grad():
        ref = hf_target(pair)(torch.tensor([seq])).logits[0].numpy()
    with Context(target, n_ctx=512, **EXACT, n_threads=2) as ctx:
        ctx.decode(seq, all_logits=True)
        ours = ctx.all_logits()
    return seq, ours, ref, ref_tokens, margins


def check_first_drafts(session: Any, target: Any, pair: Any, texts: list[str], n_new: int) -> int:
    """Each prompt's first draft from ``session`` against HF's assistant on the same state, under
    the near-tie rule (a divergence with a clear HF margin fails). Returns the tokens compared."""
    from pyllama_mtp.fixtures import hf_first_draft

    checked = 0
    for text in texts:
        prompt = target.tokenize(text)
        if len(prompt) < 2:
            continue
        first = next(session.steps(prompt, n_new))
        ref, margins = hf_first_draft(pair, prompt, session.n_draft)
        cmp = compare(first.draft, ref, margins)
        assert cmp.ok(NEAR_TIE_HF), f"{text!r}: draft {first.draft} vs HF {ref} (margins {margins})"
        checked += cmp.compared
    return checked
