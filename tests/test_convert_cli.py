"""``pyllama-mtp convert`` from the installed package, run from a folder outside any checkout."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gguf_corpus import gguf_reader

import pyllama_mtp
from pyllama_mtp import ConversionError, Model, MtpSession
from pyllama_mtp.convert import convert_hf, converter_dir
from pyllama_mtp.fixtures import PairConfig, build_pair

ROUTED = PairConfig(centroids=32, centroid_top_k=4)  # an Edge-style assistant: centroid-routed head


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The console script of the interpreter running the tests, with no tree override."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYLLAMA_MTP_LLAMA")}
    script = Path(sys.executable).parent / "pyllama-mtp"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "pyllama_mtp"]
    return subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_converter_is_the_installed_packages_own() -> None:
    package = Path(pyllama_mtp.__file__).resolve().parent
    if "PYLLAMA_MTP_LLAMA_TREE" not in os.environ:
        assert converter_dir() == package / "_converter"
    # an installed package: no checkout around it to borrow a converter from
    assert not any((parent / "vendor" / "llama.cpp").exists() for parent in package.parents)


def test_cli_converts_target_and_routed_assistant_outside_a_checkout(tmp_path: Path) -> None:
    pair = build_pair(ROUTED)
    target_out, drafter_out = tmp_path / "target.gguf", tmp_path / "drafter.gguf"
    for hf_dir, out in ((pair.target_hf, target_out), (pair.drafter_hf, drafter_out)):
        res = _cli("convert", str(hf_dir), out.name, "--outtype", "f32", cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.strip() == out.name
    # the same converter as the fixtures' (API), so the same bytes
    assert _sha256(target_out) == _sha256(pair.target_gguf)
    assert _sha256(drafter_out) == _sha256(pair.drafter_gguf)
    tensors = {t.name for t in gguf_reader(drafter_out).tensors}
    assert {"masked_embd_centroids.weight", "masked_embd_ordering"} <= tensors  # upstream's converter drops them
    with (
        Model(target_out) as target,
        Model(drafter_out) as drafter,
        MtpSession(target, drafter, n_draft=2, n_ctx=256) as session,
    ):
        assert len(session.complete("the quick brown fox", 8)) == 8


def test_cli_convert_of_a_folder_without_a_checkpoint_fails_cleanly(tmp_path: Path) -> None:
    res = _cli("convert", str(tmp_path), "out.gguf", cwd=tmp_path)
    assert res.returncode == 1
    assert "pyllama-mtp: error:" in res.stderr and "no config.json" in res.stderr
    assert not (tmp_path / "out.gguf").exists()


def test_a_failed_conversion_raises_with_the_converters_reason(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["NoSuchModelForCausalLM"]}')
    with pytest.raises(ConversionError, match="NoSuchModelForCausalLM"):
        convert_hf(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()
