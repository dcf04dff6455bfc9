"""``pyllama_mtp.quantize`` and ``pyllama-mtp quantize``: a pair rewritten as people run it (Q4_K_M
target, Q8_0 drafter) loads and drafts; bad input raises and leaves no file behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf_corpus import gguf_reader

from pyllama_mtp import Model, MtpSession, quantize
from pyllama_mtp.benchmark.shapes import quantized_pair
from pyllama_mtp.cli import main
from pyllama_mtp.errors import ModelLoadError, OutputFileError
from pyllama_mtp.fixtures import Pair
from pyllama_mtp.quantize import quant_types


def _types(path: Path) -> dict[str, str]:
    reader = gguf_reader(path)
    return {t.name: t.tensor_type.name for t in reader.tensors}


def test_a_quantized_pair_loads_and_drafts_as_the_original(agreeing_pair: Pair) -> None:
    # the tiny target is 256 wide: its weight rows fill whole K-quant super-blocks
    k_pair = agreeing_pair
    q = quantized_pair(k_pair, "Q4_K_M", "Q8_0")
    target_types, drafter_types = _types(q.target_gguf), _types(q.drafter_gguf)
    assert "Q4_K" in target_types.values() and "Q8_0" in drafter_types.values()
    assert all(t in ("F32", "F16") for name, t in target_types.items() if "norm" in name)
    assert q.target_gguf.stat().st_size < k_pair.target_gguf.stat().st_size / 3
    prompt = "the quick brown fox"
    with Model(q.target_gguf) as target, Model(q.drafter_gguf) as drafter:
        with MtpSession(target, drafter, n_draft=3, n_ctx=256) as session:
            out = session.complete(prompt, 24)
            stats = session.stats
        with MtpSession(target, None, n_draft=0, n_ctx=256) as alone:
            base = alone.complete(prompt, 24)
    assert len(out) == 24
    # the agreeing pair still agrees after quantization: its drafts are accepted
    assert stats.acceptance_rate > 0.5
    assert out[:4] == base[:4]


def test_every_listed_type_is_accepted(pair: Pair, tmp_path: Path) -> None:
    assert {"Q4_K_M", "Q8_0", "F16"} <= set(quant_types())
    out = quantize(pair.drafter_gguf, tmp_path / "d.gguf", quant_type="Q8_0", n_threads=1)
    with Model(out) as drafter:
        assert drafter.n_vocab > 0


def test_bad_input_raises_and_writes_nothing(pair: Pair, tmp_path: Path) -> None:
    dest = tmp_path / "out.gguf"
    with pytest.raises(ValueError, match="Q4_K_M"):
        quantize(pair.target_gguf, dest, quant_type="Q3_XYZ")
    with pytest.raises(ModelLoadError, match="no such file"):
        quantize(tmp_path / "missing.gguf", dest)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(pair.target_gguf.read_bytes()[:4096])  # a header without its tensors
    with pytest.raises(ModelLoadError):
        quantize(broken, dest)
    with pytest.raises(OutputFileError):
        quantize(pair.target_gguf, tmp_path / "no-such-dir" / "out.gguf", quant_type="Q8_0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.gguf"]


def test_requantizing_is_refused_unless_allowed(pair: Pair, tmp_path: Path) -> None:
    # the scaled bench shapes are written as Q4_0 and requantized to what people run
    q8 = quantize(pair.drafter_gguf, tmp_path / "q8.gguf", quant_type="Q8_0", n_threads=1)
    with pytest.raises(ModelLoadError, match="requantiz"):
        quantize(q8, tmp_path / "q4.gguf", quant_type="Q4_0", n_threads=1)
    assert not (tmp_path / "q4.gguf").exists()
    q4 = quantize(q8, tmp_path / "q4.gguf", quant_type="Q4_0", n_threads=1, allow_requantize=True)
    assert "Q4_0" in _types(q4).values()
    with Model(q4) as drafter:
        assert drafter.n_vocab > 0


def test_cli_quantize(pair: Pair, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.gguf"
    assert main(["quantize", str(pair.target_gguf), str(out), "Q8_0", "-t", "2"]) == 0
    assert out.is_file() and "MiB" in capsys.readouterr().err
    assert main(["quantize", str(pair.target_gguf), str(tmp_path / "x.gguf"), "Q9"]) == 2
    assert "Q4_K_M" in capsys.readouterr().err
    assert main(["quantize", str(tmp_path / "none.gguf"), str(tmp_path / "x.gguf")]) == 1
    assert main(["quantize", str(out), str(tmp_path / "y.gguf"), "Q4_0", "--allow-requantize"]) == 0
