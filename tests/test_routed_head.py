"""Edge assistants' centroid-routed LM head (patch 0006) against HF's own Gemma4AssistantMaskedEmbedder."""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf_corpus import gguf_reader, parse
from test_session import PROMPTS

from pyllama_mtp import Model, ModelLoadError, MtpSession
from pyllama_mtp._native import ffi, lib
from pyllama_mtp.fixtures import Pair, PairConfig, build_pair, hf_draft_logits, hf_drafter, hf_first_draft

from parity import EXACT, NEAR_TIE_HF, NMSE_PROMPT, compare

ROUTED = PairConfig(centroids=32, centroid_top_k=4)
GGML_TYPE_F32, GGML_TYPE_I32 = 0, 26


@pytest.fixture(scope="module")
def routed_pair() -> Pair:
    return build_pair(ROUTED)


@pytest.fixture(scope="module")
def models(routed_pair: Pair) -> Iterator[tuple[Model, Model]]:
    with Model(routed_pair.target_gguf) as target, Model(routed_pair.drafter_gguf) as drafter:
        yield target, drafter


def _prompts(target: Model) -> list[list[int]]:
    extra = ["the quick brown fox jumps", "a drafter and a target", "over the lazy dog 42", "model model"]
    ids = [target.tokenize(text) for text in PROMPTS + extra]
    return [p for p in ids if len(p) >= 2]


def test_converter_keeps_the_routing_tensors(routed_pair: Pair) -> None:
    reader = gguf_reader(routed_pair.drafter_gguf)
    tensors = {t.name: t for t in reader.tensors}
    hf = hf_drafter(routed_pair).masked_embedding
    ordering = tensors["masked_embd_ordering"]
    assert ordering.tensor_type.name == "I32"
    assert np.array_equal(np.asarray(ordering.data), hf.token_ordering.numpy())
    centroids = tensors["masked_embd_centroids.weight"]
    assert centroids.tensor_type.name == "F32"
    assert np.array_equal(np.asarray(centroids.data), hf.centroids.weight.detach().numpy())
    top_k = reader.fields["gemma4-assistant.masked_embd_top_k"].contents()
    assert top_k == ROUTED.centroid_top_k


def test_routed_logits_match_hf(models: tuple[Model, Model], routed_pair: Pair) -> None:
    """Same routed tokens, same logits on them (NMSE), every other token below them, same argmax.

    Where HF's k-th and (k+1)-th cluster scores are nearly tied, either choice is right and the
    routed sets may differ; such prompts are counted, not compared. The logit NMSE is checked on
    prompts inside the sliding window: past it this build's drafter and HF's differ by ~1e-3
    with the full head as well (see the parity notes in docs/development.md), which is not the head's doing.
    """
    target, drafter = models
    n_vocab = target.n_vocab
    k = ROUTED.centroid_top_k
    n_routed = k * n_vocab // ROUTED.centroids
    prompts = _prompts(target)
    assert len(prompts) >= 20
    scores: dict[str, np.ndarray] = {}
    hook = hf_drafter(routed_pair).masked_embedding.centroids.register_forward_hook(
        lambda _m, _i, out: scores.__setitem__("last", out.detach()[0, -1].numpy().copy())
    )
    compared = 0
    try:
        with MtpSession(target, drafter, n_draft=1, n_ctx=256, n_threads=2, backend_sampling=False, **EXACT) as session:
            for prompt in prompts:
                step = next(session.steps(prompt, 8))
                assert len(step.draft) == 1
                ctx_dft = lib.llama_mtp_session_draft_context(session.ptr)
                row = lib.llama_get_logits_ith(ctx_dft, 0)
                ours = np.frombuffer(ffi.buffer(row, 4 * n_vocab), np.float32).copy()
                (ref,) = hf_draft_logits(routed_pair, prompt, 1)
                cluster = np.sort(scores["last"])[::-1]

                routed = ours > ours.min()
                assert routed.sum() == n_routed
                # masked tokens: one value, below every routed logit (HF: the minimum minus one)
                assert np.all(ours[~routed] == ours[~routed][0])
                assert ours[~routed][0] == pytest.approx(ours[routed].min() - 1.0, abs=1e-5)
                assert step.draft[0] == int(ours.argmax())
                if cluster[k - 1] - cluster[k] < NEAR_TIE_HF:
                    continue
                ref_routed = ref > ref.min()
                assert np.array_equal(routed, ref_routed), prompt
                if len(prompt) <= ROUTED.sliding_window:
                    nmse = ((ours[routed] - ref[routed]) ** 2).sum() / (ref[routed] ** 2).sum()
                    assert nmse < NMSE_PROMPT, (prompt, nmse)
                top2 = np.sort(ref)[-2:]
                assert ours.argmax() == ref.argmax() or top2[1] - top2[0] < NEAR_TIE_HF
                compared += 1
    finally:
        hook.remove()
    assert compared >= 20


def test_routed_drafts_match_hf(models: tuple[Model, Model], routed_pair: Pair) -> None:
    """k=3 with the device-side draft sampler: every drafted token is HF's (the chain runs through h_next).

    Prompts inside the sliding window only: past it the drafter's attention differs from HF's
    with either head (test_routed_logits_match_hf).
    """
    target, drafter = models
    checked = 0
    with MtpSession(target, drafter, n_draft=3, n_ctx=256, n_threads=2, **EXACT) as session:
        prompts = [p for p in _prompts(target) if len(p) <= ROUTED.sliding_window]
        assert len(prompts) >= 20
        for prompt in prompts:
            first = next(session.steps(prompt, 16))
            ref, margins = hf_first_draft(routed_pair, prompt, 3)
            cmp = compare(first.draft, ref, margins)
            assert cmp.ok(NEAR_TIE_HF), f"{prompt}: draft {first.draft} vs HF {ref} (margins {margins})"
            checked += cmp.compared
    assert checked >= 2 * len(prompts)


def test_routed_session_output_is_the_targets(models: tuple[Model, Model]) -> None:
    target, drafter = models
    with (
        MtpSession(target, drafter, n_draft=3, n_ctx=256, n_threads=2, **EXACT) as mtp,
        MtpSession(target, None, n_draft=0, n_ctx=256, n_threads=2, **EXACT) as alone,
    ):
        for text in PROMPTS[:6]:
            assert mtp.complete(text, 24) == alone.complete(text, 24)
        assert mtp.stats.n_drafted > 0


def _tensor_at(path: Path, name: str) -> tuple[int, int]:
    """(offset of the tensor's type field, offset of its data) in the file."""
    reader = gguf_reader(path)
    index = [t.name for t in reader.tensors].index(name)
    layout = parse(path.read_bytes())
    return layout.tensor_fields[index]["type"], int(reader.tensors[index].data_offset)


@pytest.mark.parametrize("defect", ["duplicate-id", "float-type"])
def test_a_bad_ordering_is_refused(routed_pair: Pair, tmp_path: Path, defect: str) -> None:
    bad = tmp_path / f"{defect}.gguf"
    shutil.copy(routed_pair.drafter_gguf, bad)
    type_at, data_at = _tensor_at(bad, "masked_embd_ordering")
    with open(bad, "r+b") as f:
        if defect == "duplicate-id":  # entry 1 = entry 0: one token twice, another never
            f.seek(data_at)
            f.write(f.read(4))
            message = "not a permutation"
        else:
            f.seek(type_at)
            assert struct.unpack("<I", f.read(4))[0] == GGML_TYPE_I32
            f.seek(type_at)
            f.write(struct.pack("<I", GGML_TYPE_F32))
            message = "int32"
    with pytest.raises(ModelLoadError, match=message):
        Model(bad)
