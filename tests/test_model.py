"""Model and Context on the tiny Gemma-4 target, and bad model files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyllama_mtp import ClosedError, Context, ContextOverflowError, InvalidTokenError, Model, ModelLoadError
from pyllama_mtp.fixtures import Pair


def test_target_facts(target: Model, pair: Pair) -> None:
    assert target.arch == "gemma4"
    assert target.n_embd == 256
    assert target.n_layer == 4
    assert target.n_vocab > 256
    assert target.metadata["general.architecture"] == "gemma4"


def test_drafter_reports_target_width_as_n_embd_out(pair: Pair) -> None:
    with Model(pair.drafter_gguf) as drafter:
        assert drafter.arch == "gemma4-assistant"
        assert drafter.n_embd == 128
        assert drafter.n_embd_out == 256


def test_tokenize_round_trip(target: Model) -> None:
    text = "the quick brown fox jumps over the lazy dog"
    tokens = target.tokenize(text, add_special=False)
    assert tokens
    assert target.detokenize(tokens) == text


def test_tokenize_matches_hf_tokenizer(target: Model, pair: Pair) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(pair.target_hf)
    # ASCII only: the fixture's HF tokenizer maps non-ASCII to <unk> where llama.cpp uses byte fallback.
    for text in ("the quick brown fox", "speculative decoding", "zebra 123 dog"):
        assert target.tokenize(text, add_special=False) == hf(text, add_special_tokens=False).input_ids


def test_logits_shape_and_all_rows(ctx: Context, target: Model) -> None:
    tokens = target.tokenize("the quick brown fox")
    ctx.decode(tokens, all_logits=True)
    rows = ctx.all_logits()
    assert rows.shape == (len(tokens), target.n_vocab)
    assert np.isfinite(rows).all()
    np.testing.assert_array_equal(rows[-1], ctx.logits())


def test_target_logits_match_hf(ctx: Context, target: Model, pair: Pair) -> None:
    import torch
    from transformers import Gemma4ForCausalLM

    hf = Gemma4ForCausalLM.from_pretrained(pair.target_hf, dtype=torch.float32).eval()
    tokens = target.tokenize("the quick brown fox jumps over the lazy dog")
    with torch.no_grad():
        ref = hf(torch.tensor([tokens])).logits[0].numpy()
    ctx.decode(tokens, all_logits=True)
    ours = ctx.all_logits()
    nmse = ((ours - ref) ** 2).sum(axis=1) / (ref**2).sum(axis=1)
    assert nmse.max() < 1e-4, nmse


def test_greedy_32_tokens_is_deterministic(ctx: Context, target: Model) -> None:
    prompt = target.tokenize("the quick brown fox")
    first = ctx.generate_greedy(prompt, 32)
    second = ctx.generate_greedy(prompt, 32)
    assert first == second
    assert 1 <= len(first) <= 32
    # the native loop equals stepping in Python one token at a time
    ctx.clear()
    ctx.decode(prompt)
    stepped = []
    for _ in range(len(first)):
        tok = int(np.argmax(ctx.logits()))
        stepped.append(tok)
        if target.is_eog(tok) or len(stepped) == len(first):
            break
        ctx.decode([tok])
    assert stepped == first


def test_invalid_tokens_raise_and_context_stays_usable(ctx: Context, target: Model) -> None:
    with pytest.raises(InvalidTokenError, match="outside the vocabulary"):
        ctx.decode([1, target.n_vocab + 5])
    with pytest.raises(InvalidTokenError):
        ctx.decode([-1])
    ctx.decode(target.tokenize("fox"))
    assert np.isfinite(ctx.logits()).all()


def test_context_overflow_raises(target: Model) -> None:
    with Context(target, n_ctx=32, n_batch=32) as small:
        n_ctx = small.n_ctx  # llama.cpp pads n_ctx up; overflow is judged against what it gave
        with pytest.raises(ContextOverflowError):
            small.decode([5] * (n_ctx + 1))
        with pytest.raises(ContextOverflowError):
            small.generate_greedy([5] * 20, n_ctx)
        small.decode([5] * 40)  # longer than n_batch: split into batches natively
        assert small.n_past == 40
        with pytest.raises(ContextOverflowError):
            small.decode([5] * (n_ctx - 39))


def test_kv_truncate_and_state_size(ctx: Context, target: Model) -> None:
    tokens = target.tokenize("the quick brown fox jumps")
    ctx.decode(tokens)
    full = ctx.logits()
    ctx.truncate(len(tokens) - 1)
    ctx.decode(tokens[-1:])
    # a 1-token decode is not summed in the same order as the batch (and differs more on CUDA):
    # allow rounding (NMSE ~1e-5), not a wrong cache (NMSE ~1)
    again = ctx.logits()
    assert ((again - full) ** 2).sum() / (full**2).sum() < 1e-4
    assert ctx.state_size > 0


def test_use_after_close_raises(pair: Pair) -> None:
    model = Model(pair.target_gguf)
    model.close()
    model.close()
    with pytest.raises(ClosedError):
        Context(model)


@pytest.mark.parametrize("content", [None, b"", b"GGUF", b"PK\x03\x04notgguf!", b"GGUF" + b"\xff" * 64])
def test_bad_files_raise_model_load_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.gguf"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="bad.gguf"):
        Model(path)


def test_truncated_gguf_raises_in_a_child_that_survives(tmp_path: Path, pair: Pair) -> None:
    data = pair.target_gguf.read_bytes()
    cuts = [16, 24, 100, 1000, len(data) // 2, len(data) - 1]
    script = (
        "import sys\nfrom pyllama_mtp import Model, ModelLoadError\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n        Model(p)\n        print('LOADED', p)\n"
        "    except ModelLoadError as e:\n        assert p in str(e), e\n        print('RAISED', p)\n"
    )
    paths = []
    for cut in cuts:
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(data[:cut])
        paths.append(str(p))
    res = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("RAISED") == len(cuts), res.stdout
