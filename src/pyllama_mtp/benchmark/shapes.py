"""Benchmark model pairs: Gemma-4 shapes with random weights, and the acceptance regimes.

Pairs are built with Hugging Face and converted by the pinned tree (``pyllama_mtp.fixtures``), so
Hugging Face's own assisted generation can run on the very same weights. Regimes:

- ``agree``: target and drafter compute the same next-token function (acceptance ~1, greedy);
- ``random``: independent random weights (acceptance ~0, greedy);
- ``mixed``: the agreeing pair with the target sampling at the temperature whose mean top-token
  probability is ``mixed_acceptance`` (calibrated on the target's logits). The drafter proposes
  the target's argmax, so each draft position is accepted with that probability, independently:
  the i.i.d. acceptance the ideal speed-up formula assumes.
- ``drifting``: the agreeing pair, each generation in four spans that alternate greedy decoding
  (acceptance 1) with sampling at the temperature whose acceptance is ``DRIFT_LOW`` (the drafter
  is nearly always wrong): acceptance changes inside one generation, as real text does.

Quantized shapes (``QUANTIZED``) are a shape's pair rewritten as people run it: the target in
Q4_K_M, the drafter in Q8_0 (:func:`pyllama_mtp.quantize`).
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

# (only the fixtures at import time: ci/gpu_check.sh builds the pairs while the library compiles)
from ..fixtures import Pair, PairConfig, build_pair

if TYPE_CHECKING:
    from ..model import Model

# Real Gemma-4 geometry where it sets the cost: E2B's width, depth, attention and vocabulary
# (per-layer input embeddings left out), with the E2B assistant's 256-wide, 4-layer drafter.
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(outtype="f32"),
    "e2b": dict(
        target_hidden=1536, target_layers=35, intermediate=6144, n_heads=8, n_kv_heads=1, head_dim=256,
        global_head_dim=512, sliding_window=512, full_every=5, drafter_hidden=256, drafter_layers=4,
        vocab_size=262144, outtype="f16", save_dtype="bfloat16",
    ),
}  # fmt: skip

# Too big for Hugging Face's random init: a tiny template with the real depth, attention, window
# and vocabulary, and small distinct widths that ``benchmark.scaled`` scales to the real ones.
# 31B dense: width 5376, 60 layers (every 6th global), MLP 21504, 32 heads of 256 (16 KV heads),
# window 1024; a 1024-wide, 4-layer drafter. Q4_0, as people run it on one GPU (~17 GB).
# E2B (real): E2B's geometry with its per-layer inputs (256 a layer, a 262144 x 8960 table), its 20
# last layers reusing the KV of earlier ones and those layers' MLPs twice as wide (12288).
# E4B: width 2560, 42 layers (every 6th global), MLP 10240, 8 heads (2 KV heads), per-layer inputs,
# 18 shared-KV layers; a 256-wide, 4-layer drafter as E2B's.
# 26B-A4B: width 2816, 30 layers (every 6th global), a dense MLP of 2112 beside 128 experts of 704
# (8 a token), 16 heads (8 KV heads, 2 in the global layers, whose keys serve as values), window
# 1024; a 1024-wide, 4-layer drafter.
SCALED: dict[str, tuple[dict[str, Any], dict[int, int]]] = {
    "e2b-ple": (
        dict(
            target_hidden=96, target_layers=35, intermediate=160, n_heads=8, n_kv_heads=1, head_dim=256,
            global_head_dim=512, sliding_window=512, full_every=5, drafter_hidden=40, drafter_layers=4,
            vocab_size=262144, per_layer_input=24, kv_shared_layers=20, double_wide_mlp=True,
        ),
        {96: 1536, 192: 3072, 160: 6144, 320: 12288, 40: 256, 80: 512, 24: 256, 24 * 35: 256 * 35},
    ),
    "e4b": (
        dict(
            target_hidden=96, target_layers=42, intermediate=160, n_heads=8, n_kv_heads=2, head_dim=256,
            global_head_dim=512, sliding_window=512, full_every=6, drafter_hidden=40, drafter_layers=4,
            vocab_size=262144, per_layer_input=24, kv_shared_layers=18,
        ),
        {96: 2560, 192: 5120, 160: 10240, 40: 256, 80: 512, 24: 256, 24 * 42: 256 * 42},
    ),
    "26b-a4b": (
        dict(
            target_hidden=96, target_layers=30, intermediate=160, n_heads=16, n_kv_heads=8, head_dim=256,
            global_head_dim=512, sliding_window=1024, full_every=6, drafter_hidden=40, drafter_layers=4,
            vocab_size=262144, experts=128, experts_used=8, expert_intermediate=56, global_kv_heads=2, k_eq_v=True,
        ),
        {96: 2816, 192: 5632, 160: 2112, 56: 704, 112: 1408, 40: 1024, 80: 2048},
    ),
    "31b": (
        dict(
            target_hidden=96, target_layers=60, intermediate=160, n_heads=32, n_kv_heads=16, head_dim=256,
            global_head_dim=512, sliding_window=1024, full_every=6, drafter_hidden=40, drafter_layers=4,
            vocab_size=262144,
        ),
        {96: 5376, 192: 10752, 160: 21504, 40: 1024, 80: 2048},
    ),
}  # fmt: skip

# name: (the shape it quantizes, the target's type, the drafter's type). A scaled shape is written
# in Q4_0 (f16 would not fit a 64 GB disk for 26B and 31B) and requantized: its weights are random,
# so only the types and the bytes moved matter.
QUANTIZED: dict[str, tuple[str, str, str]] = {
    "e2b-q4": ("e2b", "Q4_K_M", "Q8_0"),
    **{f"{shape}-q4": (shape, "Q4_K_M", "Q8_0") for shape in SCALED},
}

REGIMES = ("agree", "random", "mixed", "drifting")
DRIFT_LOW = 0.05  # the drifting regime's acceptance in its sampled spans
N_SPANS = 4


def drift_schedule(n_predict: int, hot: float) -> tuple[tuple[int, float], ...]:
    """The drifting regime's spans as (tokens, temperature): greedy first, then ``hot``, and so on."""
    span = max(1, n_predict // N_SPANS)
    return tuple((span, 0.0 if i % 2 == 0 else hot) for i in range(N_SPANS))


def shape_config(shape: str, *, agree: bool) -> PairConfig:
    """The HF pair of a shape (for a scaled shape, its template; for a quantized one, its source's)."""
    if shape in QUANTIZED:
        return shape_config(QUANTIZED[shape][0], agree=agree)
    if shape in SCALED:
        return PairConfig(**SCALED[shape][0], agree=agree)
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join([*SHAPES, *QUANTIZED, *SCALED])}")
    return PairConfig(**SHAPES[shape], agree=agree)


def has_hf(shape: str) -> bool:
    """Whether the GGUFs are conversions of HF checkpoints (HF can run the same weights)."""
    return shape not in SCALED and shape not in QUANTIZED


def describe(shape: str) -> dict[str, Any]:
    """The shape's geometry, for the result file."""
    if shape in QUANTIZED:  # its source's geometry, in other types
        source, target_type, drafter_type = QUANTIZED[shape]
        out = describe(source)
        out["outtype"] = f"{target_type.lower()} target, {drafter_type.lower()} drafter"
        out["built"] = f"the {source} pair, quantized by the pinned tree (pyllama_mtp.quantize)"
        return out
    cfg = asdict(shape_config(shape, agree=False))
    keep = (
        "target_hidden", "target_layers", "intermediate", "n_heads", "n_kv_heads", "head_dim", "global_head_dim",
        "sliding_window", "full_every", "drafter_hidden", "drafter_layers", "vocab_size", "outtype",
        "per_layer_input", "kv_shared_layers", "double_wide_mlp", "global_kv_heads", "k_eq_v", "experts",
        "experts_used", "expert_intermediate",
    )  # fmt: skip
    out = {key: cfg[key] for key in keep}
    if shape in SCALED:
        dims = SCALED[shape][1]
        for key in ("target_hidden", "intermediate", "drafter_hidden", "per_layer_input", "expert_intermediate"):
            out[key] = dims.get(out[key], out[key])
        out["outtype"] = "q4_0"
        out["built"] = "scaled from a converted tiny template (benchmark.scaled)"
    else:
        out["built"] = "Hugging Face, converted by the pinned tree"
    return out


def scaled_pair(template: Pair, dims: dict[int, int]) -> Pair:
    """``template`` rewritten at the real widths (cached beside it)."""
    from .scaled import scale_gguf

    root = template.root / f"scaled-{zlib.crc32(repr(sorted(dims.items())).encode()):08x}"
    pair = Pair(root, template.target_hf, template.drafter_hf, root / "target.gguf", root / "drafter.gguf")
    if not (root / "done").is_file():
        root.mkdir(parents=True, exist_ok=True)
        scale_gguf(template.target_gguf, pair.target_gguf, dims)
        scale_gguf(template.drafter_gguf, pair.drafter_gguf, dims)
        (root / "done").write_text("ok")
    return pair


def quantized_pair(source: Pair, target_type: str, drafter_type: str) -> Pair:
    """``source`` with its target and drafter quantized (cached beside it)."""
    from ..quantize import quantize

    root = source.root / f"quantized-{target_type}-{drafter_type}".lower()
    pair = Pair(root, source.target_hf, source.drafter_hf, root / "target.gguf", root / "drafter.gguf")
    if not (root / "done").is_file():
        root.mkdir(parents=True, exist_ok=True)
        # (a scaled source is Q4_0 already)
        quantize(source.target_gguf, pair.target_gguf, quant_type=target_type, allow_requantize=True)
        quantize(source.drafter_gguf, pair.drafter_gguf, quant_type=drafter_type, allow_requantize=True)
        (root / "done").write_text("ok")
    return pair


def build(shape: str, regime: str, device: str | None) -> Pair:
    """The GGUF (and HF) pair a regime runs on, built once and cached by shape."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; known: {', '.join(REGIMES)}")
    if shape in QUANTIZED:
        return quantized_pair(build(QUANTIZED[shape][0], regime, device), *QUANTIZED[shape][1:])
    pair = build_pair(shape_config(shape, agree=regime != "random"), device=device)
    return scaled_pair(pair, SCALED[shape][1]) if shape in SCALED else pair


def top_probability(rows: np.ndarray, temperature: float) -> float:
    """Mean probability of each logits row's top token at ``temperature``."""
    z = (rows - rows.max(axis=1, keepdims=True)) / temperature
    return float(np.mean(1.0 / np.exp(z).sum(axis=1)))


def calibrate_temperature(target: Model, goal: float, n_tokens: int = 32, seed: int = 0) -> float:
    """The temperature at which the target's mean top-token probability is ``goal``.

    For the agreeing pair the next token depends on the last token alone, so one single-token
    decode per sampled token gives the rows that matter.
    """
    from .acceptance import one_token_logits

    if not 0.0 < goal < 1.0:
        raise ValueError(f"the goal acceptance must be in (0, 1), got {goal}")
    ids = random.Random(seed).sample(range(4, target.n_vocab), min(n_tokens, target.n_vocab - 4))
    logits = one_token_logits(target, ids)
    lo, hi = math.log(1e-3), math.log(1e3)  # top probability falls as the temperature rises
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if top_probability(logits, math.exp(mid)) > goal:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))
