"""benchmark.scaled: a converted tiny template rewritten at bigger widths still loads, keeps the
converter's metadata, quantizes to Q4_0, and keeps the agreeing pair agreeing (what the 31B-shaped
bench pair rests on)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gguf_corpus import gguf_reader

from pyllama_mtp import Model, MtpSession
from pyllama_mtp.benchmark.scaled import scale_gguf
from pyllama_mtp.benchmark.shapes import scaled_pair
from pyllama_mtp.fixtures import PairConfig, build_pair

# distinct small widths (target 40, its MLP 72, the drafter's input 80, drafter 24, its MLP 48)
TEMPLATE = dict(target_hidden=40, intermediate=72, drafter_hidden=24, target_layers=3, drafter_layers=2)
DIMS = {40: 256, 80: 512, 72: 320, 24: 128, 48: 192}


def _pairs(agree: bool) -> tuple[Any, Any]:
    template = build_pair(PairConfig(**TEMPLATE, agree=agree))
    return template, scaled_pair(template, DIMS)


@pytest.mark.parametrize("agree", [True, False], ids=["agree", "random"])
def test_metadata_and_shapes_are_scaled(agree: bool) -> None:
    template, scaled = _pairs(agree)
    for which in ("target_gguf", "drafter_gguf"):
        old, new = gguf_reader(getattr(template, which)), gguf_reader(getattr(scaled, which))
        arch = str(old.fields["general.architecture"].contents())
        assert str(new.fields["general.architecture"].contents()) == arch
        width = old.fields[f"{arch}.embedding_length"].contents()
        assert new.fields[f"{arch}.embedding_length"].contents() == DIMS[width]
        assert new.fields["tokenizer.ggml.tokens"].contents() == old.fields["tokenizer.ggml.tokens"].contents()
        old_t = {t.name: t for t in old.tensors}
        assert [t.name for t in new.tensors] == list(old_t)
        for t in new.tensors:
            assert [int(n) for n in t.shape] == [DIMS.get(int(n), int(n)) for n in old_t[t.name].shape], t.name
        assert "Q4_0" in {t.tensor_type.name for t in new.tensors if len(t.shape) == 2}


@pytest.mark.parametrize("agree", [True, False], ids=["agree", "random"])
def test_scaled_pair_runs_and_agreement_survives(agree: bool) -> None:
    _, scaled = _pairs(agree)
    with Model(scaled.target_gguf) as target, Model(scaled.drafter_gguf) as drafter:
        assert target.n_embd == 256 and drafter.n_embd_out == 256
        with MtpSession(target, drafter, n_draft=3) as session:
            session.complete("the quick brown fox", 24)
            acceptance = session.stats.acceptance_rate
    if agree:
        assert acceptance > 0.95
    else:
        assert acceptance < 0.5


def test_the_agreeing_drafter_embeds_with_the_targets_bytes() -> None:
    _, scaled = _pairs(True)
    target = {t.name: t for t in gguf_reader(scaled.target_gguf).tensors}["token_embd.weight"]
    drafter = {t.name: t for t in gguf_reader(scaled.drafter_gguf).tensors}["token_embd.weight"]
    n = np.asarray(drafter.data).shape[1]
    assert np.array_equal(np.asarray(target.data)[:, :n], np.asarray(drafter.data))
    assert not np.asarray(target.data)[:, n:].any()


def test_a_quantized_template_is_refused(tmp_path: Any) -> None:
    _, scaled = _pairs(False)
    with pytest.raises(ValueError, match="must be F32 or F16"):
        scale_gguf(scaled.target_gguf, tmp_path / "again.gguf", DIMS)


# Experts (3-D tensors) and per-layer inputs too, as the 26B-A4B and E2B/E4B bench shapes have them:
# 4 experts of 56 (gate and up together 112), per-layer inputs of 12 (36 over the 3 layers)
PARTS = dict(TEMPLATE, experts=4, experts_used=2, expert_intermediate=56, per_layer_input=12)
PARTS_DIMS = {**DIMS, 56: 128, 112: 256, 12: 64, 36: 192}


@pytest.mark.parametrize("agree", [True, False], ids=["agree", "random"])
def test_experts_and_per_layer_inputs_are_scaled(agree: bool) -> None:
    template = build_pair(PairConfig(**PARTS, agree=agree))
    scaled = scaled_pair(template, PARTS_DIMS)
    old = {t.name: t for t in gguf_reader(template.target_gguf).tensors}
    new = gguf_reader(scaled.target_gguf)
    arch = str(new.fields["general.architecture"].contents())
    assert new.fields[f"{arch}.expert_feed_forward_length"].contents() == 128
    assert new.fields[f"{arch}.embedding_length_per_layer_input"].contents() == 64
    for t in new.tensors:
        assert [int(n) for n in t.shape] == [PARTS_DIMS.get(int(n), int(n)) for n in old[t.name].shape], t.name
    experts = {t.name: t for t in new.tensors}["blk.0.ffn_down_exps.weight"]
    assert experts.tensor_type.name == "Q4_0" and [int(n) for n in experts.shape] == [128, 256, 4]
    with (
        Model(scaled.target_gguf) as target,
        Model(scaled.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_draft=3) as session,
    ):
        assert len(session.complete("the quick brown fox", 24)) == 24
        acceptance = session.stats.acceptance_rate
    assert acceptance > 0.95 if agree else acceptance < 0.5


def test_random_weights_are_zero_mean_at_the_asked_std() -> None:
    # a per-weight bias adds up over a row: it made the E2B-shaped random pair's activations
    # overflow the f16 block sums of CUDA's quantized products (NaN logits)
    from pyllama_mtp.benchmark.scaled import _random_q4_0
    from pyllama_mtp.convert import import_gguf

    gguf = import_gguf()
    blocks = _random_q4_0(256, 1536, 0.02, seed=1)
    weights = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q4_0)
    assert weights.shape == (256, 1536)
    assert abs(float(weights.mean())) < 0.01 * 0.02
    assert float(weights.std()) == pytest.approx(0.02, rel=0.02)
    # a row's sum grows as sqrt(width), as it does for zero-mean weights, not as the width
    assert float(np.abs(weights.sum(axis=1)).mean()) < 0.02 * 1536**0.5 * 1.5
