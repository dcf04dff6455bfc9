"""TurboQuant KV cache types (patch 0026): bytes, rounding against q4_0, and decoding over them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from pyllama_mtp import Context, Model, MtpSession
from pyllama_mtp.fixtures import PairConfig
from pyllama_mtp.kv_cache import roundtrip

TURBO = ("turbo4", "turbo3", "turbo2")
# Every quantized type below stores 32 values a block: a 16-bit scale and b bits a value.
BITS = {"f16": 16.0, "q8_0": 8.5, "q4_0": 4.5, "turbo4": 4.5, "turbo3": 3.5, "turbo2": 2.5}
HEAD = 256  # Gemma 4's sliding-window head size
LEVELS = {  # kvalues_turbo* in ggml-common.h (positive halves): Lloyd-Max, then evenly spaced
    "turbo2": ([0.452780, 1.510422], [0.5, 1.5]),
    "turbo3": ([0.245099, 0.756023, 1.343930, 2.151964], [0.5, 1.5, 2.5, 3.5]),
    "turbo4": (
        [0.128380, 0.388000, 0.656687, 0.942256, 1.256140, 1.617952, 2.068926, 2.732510],
        [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5],
    ),
}
TURBO_SIGNS = 0x9E3779B9  # ggml-common.h: bit i set, value i of a block changes sign before the transform


def _rotation() -> npt.NDArray[np.float64]:
    """The orthonormal 32 x 32 rotation the turbo types apply to a block: H * diag(signs) / sqrt(32)."""
    h = np.array([[1.0]])
    while h.shape[0] < 32:
        h = np.block([[h, h], [h, -h]])
    signs = np.array([-1.0 if (TURBO_SIGNS >> i) & 1 else 1.0 for i in range(32)])
    return h * signs / np.sqrt(32.0)


R = _rotation()


def _blocks(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return x.reshape(-1, 32)


def _unrotated_roundtrip(x: npt.NDArray[np.float32], kv_type: str) -> npt.NDArray[np.float32]:
    """The mutation "rotation off": the same codebook and scale search on the raw values.

    The type rotates what it is given, so giving it R^T x makes it quantize x itself; R undoes
    the rotation on the way out.
    """
    pre = (_blocks(x).astype(np.float64) @ R).astype(np.float32)  # rows: R^T x
    out = _blocks(roundtrip(pre, kv_type)).astype(np.float64) @ R.T  # R y
    return out.astype(np.float32).reshape(x.shape)


def _outlier_kv(rng: np.random.Generator, n: int = 512) -> tuple[npt.NDArray[np.float32], ...]:
    """Queries, keys and values of one head with a few channels 10-50x the rest, as trained keys have."""
    q = rng.standard_normal((64, HEAD)).astype(np.float32)
    k = rng.standard_normal((n, HEAD)).astype(np.float32)
    v = rng.standard_normal((n, HEAD)).astype(np.float32)
    for channel, scale in ((5, 10.0), (37, 25.0), (100, 50.0), (201, 15.0)):
        k[:, channel] *= scale
        v[:, channel] *= scale / 2
    return q, k, v


def _softmax(scores: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _nmse(ref: npt.NDArray[np.float64], got: npt.NDArray[np.float64]) -> float:
    return float(((ref - got) ** 2).sum() / (ref**2).sum())


def _attention_errors(kv_type: str, rotated: bool = True, seed: int = 0) -> dict[str, float]:
    """One head's attention with K and V stored as ``kv_type``, against exact K and V.

    ``kl``: mean KL(exact || stored) of the attention weights of 64 queries over 512 keys;
    ``out``: the attention output's normalised MSE; ``k``: the keys' own normalised MSE.
    """
    q, k, v = (t.astype(np.float64) for t in _outlier_kv(np.random.default_rng(seed)))
    store = roundtrip if rotated else _unrotated_roundtrip
    k_hat, v_hat = (store(t.astype(np.float32), kv_type).astype(np.float64) for t in (k, v))
    p, p_hat = _softmax(q @ k.T / np.sqrt(HEAD)), _softmax(q @ k_hat.T / np.sqrt(HEAD))
    return {
        "kl": float((p * (np.log(p) - np.log(p_hat))).sum(axis=1).mean()),
        "out": _nmse(p @ v, p_hat @ v_hat),
        "k": _nmse(k, k_hat),
    }


def test_roundtrip_keeps_shape_and_refuses_partial_blocks() -> None:
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    assert roundtrip(x, "f32").tobytes() == x.tobytes()
    assert roundtrip(x, "turbo3").shape == x.shape
    with pytest.raises(ValueError, match="whole 32-value blocks"):
        roundtrip(x[:, :48], "turbo3")
    with pytest.raises(ValueError, match="kv_cache_type must be one of"):
        roundtrip(x, "turbo5")


def _grid_distances(y: npt.NDArray[np.float64], levels: list[float]) -> npt.NDArray[np.float64]:
    """How far each block (row) of |y| is from scale * levels, with the best scale of each block.

    A block's largest magnitude is some level times its scale; every choice of that level is tried.
    """
    grid = np.array(levels)
    out = np.empty(len(y))
    for b, row in enumerate(y):
        fits = [np.abs(row[:, None] * (top / row.max()) - grid[None, :]).min(axis=1).max() for top in grid]
        out[b] = min(fits)
    return out


def _codebooks(decoded: npt.NDArray[np.float64], kv_type: str, rotation: npt.NDArray[np.float64]) -> list[str]:
    """Which codebook each decoded block lies on after ``rotation`` ("gauss", "even", or "none")."""
    y = np.abs(_blocks(decoded) @ rotation.T)
    gauss, even = (_grid_distances(y, levels) for levels in LEVELS[kv_type])
    return ["gauss" if g < 2e-3 else "even" if e < 2e-3 else "none" for g, e in zip(gauss, even, strict=True)]


@pytest.mark.parametrize("kv_type", TURBO)
def test_the_test_rotation_is_the_types_rotation(kv_type: str) -> None:
    """R (from the documented signs) maps each decoded block onto scale * one of the two codebooks:
    the mutation is real."""
    x = np.random.default_rng(2).standard_normal((64, 32)).astype(np.float32)
    decoded = roundtrip(x, kv_type).astype(np.float64)
    assert "none" not in _codebooks(decoded, kv_type, R)
    # a wrong rotation (one sign flipped) lands nowhere near either grid (but a block whose value 7
    # rounds to about zero)
    wrong = R.copy()
    wrong[:, 7] *= -1
    assert _codebooks(decoded, kv_type, wrong).count("none") >= 0.9 * len(x)


@pytest.mark.parametrize("kv_type", ["turbo4", "turbo3"])
def test_two_humped_blocks_take_the_even_codebook(kv_type: str) -> None:
    """A strong outlier channel leaves its block two-humped after the rotation; those blocks are stored
    on the evenly spaced levels (d negative), Gaussian blocks mostly on the Lloyd-Max ones. Measured,
    share of blocks on the even levels: Gaussian turbo4 24 %, turbo3 21 %; with a channel of +-50
    turbo4 100 %, turbo3 98 %."""
    rng = np.random.default_rng(3)
    gaussian = rng.standard_normal((256, 32))
    outlier = rng.standard_normal((256, 32))
    outlier[:, 4] = 50.0 * rng.choice([-1.0, 1.0], 256)
    books = {
        name: _codebooks(roundtrip(x.astype(np.float32), kv_type).astype(np.float64), kv_type, R)
        for name, x in (("gaussian", gaussian), ("outlier", outlier))
    }
    share = {name: b.count("even") / len(b) for name, b in books.items()}
    assert "none" not in books["gaussian"] + books["outlier"]
    assert share["gaussian"] < 0.5, share
    assert share["outlier"] > 0.9, share


@pytest.mark.parametrize("seed", [0, 1])
def test_turbo_rounding_on_outlier_channels_beats_q4_0(seed: int) -> None:
    """On a head with outlier channels, measured (seeds 0 and 1): attention KL q4_0 0.081-0.085,
    turbo4 0.020-0.021 (3.8-4.2x less; 0.036-0.038 with the Lloyd-Max codebook alone, patch 0044),
    turbo3 0.060-0.066; the keys' NMSE 6x less for turbo4."""
    err = {t: _attention_errors(t, seed=seed) for t in ("q8_0", "q4_0", *TURBO)}
    kl = {t: e["kl"] for t, e in err.items()}
    assert kl["q8_0"] < kl["turbo4"] < kl["turbo3"] < kl["turbo2"], err
    assert kl["turbo4"] <= kl["q4_0"] / 3, err
    assert kl["turbo3"] <= kl["q4_0"], err
    assert err["turbo4"]["k"] <= err["q4_0"]["k"] / 3, err
    assert err["turbo4"]["out"] < err["turbo3"]["out"] < err["turbo2"]["out"], err
    assert err["turbo4"]["out"] < err["q4_0"]["out"], err


def test_rounding_of_gaussian_rows() -> None:
    """Gaussian rows (as the fixture's keys, and the keys llama.cpp rotates over a whole head,
    reach the cache): normalised MSE, measured q8_0 0.00003, q4_0 0.0074, turbo4 0.0056 (0.0058
    with the Lloyd-Max codebook alone), turbo3 0.025, turbo2 0.105. No type can beat the Shannon
    bound 2^-2b at b bits a value, so turbo3 (3.5 bits, bound 0.0078) cannot match q4_0 here."""
    x = np.random.default_rng(4).standard_normal((2048, HEAD)).astype(np.float32)
    nmse = {t: _nmse(x.astype(np.float64), roundtrip(x, t).astype(np.float64)) for t in ("q8_0", "q4_0", *TURBO)}
    assert nmse["q8_0"] < nmse["turbo4"] < nmse["turbo3"] < nmse["turbo2"], nmse
    assert nmse["turbo4"] < 0.8 * nmse["q4_0"], nmse
    for kv_type, err in nmse.items():
        assert err > 2.0 ** (-2 * BITS[kv_type]), nmse


@pytest.mark.parametrize("kv_type", TURBO)
def test_rotation_off_makes_the_outlier_case_worse(kv_type: str) -> None:
    """The same codebook and scale search without the rotation: measured 17-33x the KL."""
    rotated = _attention_errors(kv_type)["kl"]
    unrotated = _attention_errors(kv_type, rotated=False)["kl"]
    assert unrotated > 5 * rotated, (rotated, unrotated)


def test_kv_bytes_per_token(target: Model) -> None:
    """The cache's bytes against f16's: 16 / bits-per-value, for every layer of both caches."""
    sizes = {}
    for kv_type in ("f16", "q4_0", *TURBO):
        with Context(target, n_ctx=1024, swa_full=True, kv_cache_type=kv_type) as ctx:
            sizes[kv_type] = ctx.memory()["context"]
    for kv_type in ("q4_0", *TURBO):  # (a GPU pads each buffer: turbo4 3.536 on the H200)
        assert sizes["f16"] / sizes[kv_type] == pytest.approx(16 / BITS[kv_type], rel=1e-2)
    assert sizes["f16"] / sizes["turbo3"] >= 4.5
    assert sizes["f16"] / sizes["turbo4"] >= 3.5
    assert sizes["f16"] / sizes["turbo2"] >= 6


PROMPT = [10 + (i * 37 + i * i) % 400 for i in range(384)]


def _next_token_distributions(target: Model, kv_type: str) -> npt.NDArray[np.float64]:
    with Context(target, n_ctx=512, n_batch=512, n_threads=2, kv_cache_type=kv_type) as ctx:
        ctx.decode(PROMPT, all_logits=True)
        logits = ctx.all_logits().astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def test_kl_against_f16_on_the_fixture(target: Model) -> None:
    """KL(f16 KV || type) of every next-token distribution of a long prompt, mean over positions.

    The fixture's keys are RMS-normed random projections: they reach the cache nearly Gaussian
    (llama.cpp's own head rotation, for head sizes that are multiples of 64, does not touch the
    fixture's 32-wide sliding heads; LLAMA_ATTN_ROT_DISABLE=1 changes nothing here). turbo4 and q4_0
    store the same 4.5 bits a value, and turbo3 and turbo2 trade error for bytes (see
    test_rounding_of_gaussian_rows). Measured: q8_0 0.025, q4_0 0.754, turbo4 0.641, turbo3 1.144,
    turbo2 1.656.
    """
    ref = _next_token_distributions(target, "f16")
    kl = {}
    for kv_type in ("q8_0", "q4_0", *TURBO):
        p = _next_token_distributions(target, kv_type)
        kl[kv_type] = float((ref * (np.log(ref) - np.log(p))).sum(axis=1).mean())
    assert kl["q8_0"] < kl["turbo4"] < kl["turbo3"] < kl["turbo2"], kl
    assert kl["turbo4"] <= kl["q4_0"], kl


@pytest.mark.parametrize("kv_type", TURBO)
def test_draft_mtp_over_a_turbo_cache_equals_the_target_alone(target: Model, drafter: Model, kv_type: str) -> None:
    prompt = "the quick brown fox"
    opts = {"n_ctx": 512, "n_threads": 2, "kv_cache_type": kv_type, "exact": True}
    with MtpSession(target, drafter, n_draft=3, **opts) as mtp, MtpSession(target, None, n_draft=0, **opts) as alone:
        assert mtp.complete(prompt, 48) == alone.complete(prompt, 48)
        assert mtp.stats.n_drafted > 0


WINDOW = PairConfig().sliding_window
SHIFT_PROMPT = [10 + (i * 7) % 200 for i in range(WINDOW + 16)]


def _rms(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(np.sqrt(((a.astype(np.float64) - b) ** 2).mean()))


def _shift_errors(target: Model, kv_type: str, delta: int) -> dict[str, float]:
    """RMS logits differences for the next token after a prompt (logit std 1.6).

    ``own``: the cache type's rounding (unshifted, against an f32 cache); ``moved``: every position
    shifted by ``delta`` against unshifted; ``half``: only the prompt's second half shifted (a gap:
    what attention sees when keys keep rotations that do not match their positions).
    """
    opts = {"n_ctx": 1024, "n_batch": 64, "n_threads": 2, "swa_full": True}
    logits = {}
    for name, kv, start in (("exact", "f32", None), ("unshifted", kv_type, None), ("moved", kv_type, 0),
                            ("half", kv_type, len(SHIFT_PROMPT) // 2)):  # fmt: skip
        with Context(target, kv_cache_type=kv, flash_attn=True, **opts) as ctx:
            if start is None:
                ctx.decode(SHIFT_PROMPT + [50])
            else:
                ctx.decode(SHIFT_PROMPT)
                ctx.shift(delta, start=start)
                ctx.decode([50])
            logits[name] = ctx.logits()
    unshifted = logits["unshifted"]
    return {
        "own": _rms(unshifted, logits["exact"]),
        "moved": _rms(logits["moved"], unshifted),
        "half": _rms(logits["half"], unshifted),
    }


@pytest.mark.parametrize("kv_type", ["q8_0", "q4_0", *TURBO])
def test_context_shift_rerotates_quantized_keys(target: Model, kv_type: str) -> None:
    """As tests/test_context_shift.py checks: moving every position keeps the next token's logits.

    A shift decodes each key, rotates it to its new position and stores it again: the logits move
    by about one more rounding of the type, not by what a gap does. The fixture's attention (RMS-
    normed q and k, scale 1) magnifies rounding: q4_0's own error is 0.84 against a logit std of
    1.6, so for the 4-bit and smaller types the gap stands out by less than for q8_0.
    Measured (RMS; own / moved / half): q8_0 0.21 / 0.05 / 1.83, q4_0 0.84 / 0.39 / 1.83,
    turbo4 0.76 / 1.26 / 1.75, turbo3 1.11 / 0.69 / 1.69, turbo2 2.05 / 1.73 / 1.77.
    (Before patch 0027 a shift of any quantized cache whose keys llama.cpp does not rotate, here
    the 32-wide sliding-window heads, dereferenced a null rotation and crashed the process.)
    """
    err = _shift_errors(target, kv_type, 9)
    assert err["moved"] <= 2 * err["own"] + 0.01, err
    if kv_type != "turbo2":  # its rounding moves the logits as far as the gap does: no contrast left
        assert err["half"] > 1.3 * err["moved"], err
    if kv_type == "q8_0":
        assert err["half"] > 10 * err["moved"], err
