"""The ``pyllama-mtp`` command line: generate with a drafter, errors, and the demo."""

from __future__ import annotations

import pytest

from pyllama_mtp import Model, MtpSession
from pyllama_mtp.cli import main
from pyllama_mtp.fixtures import Pair


@pytest.mark.parametrize("pipeline", ["sync", "async"])
def test_generate_with_drafter_streams_the_session_output(
    pair: Pair, target: Model, drafter: Model, pipeline: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "-m", str(pair.target_gguf), "-md", str(pair.drafter_gguf), "-p", "the quick brown fox"]
    assert main([*args, "-n", "24", "--n-draft", "2", "-c", "256", "--pipeline", pipeline]) == 0
    out, err = capsys.readouterr()
    with MtpSession(target, drafter, n_draft=2, n_ctx=256) as session:
        expected = session.complete("the quick brown fox", 24)
    assert out == target.detokenize(expected) + "\n"
    assert "acceptance rate" in err and f"generated tokens        {len(expected)}" in err


def test_generate_without_drafter_is_target_only(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "-m", str(pair.target_gguf), "-p", "fox", "-n", "8", "-c", "256"]) == 0
    _, err = capsys.readouterr()
    assert "drafted / accepted      0 / 0" in err


def test_generate_exact_prints_the_target_alones_text(
    pair: Pair, target: Model, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "-m", str(pair.target_gguf), "-p", "the lazy dog", "-n", "48", "-c", "256", "--exact"]
    assert main([*args, "-md", str(pair.drafter_gguf), "--n-draft", "3"]) == 0
    drafted, err = capsys.readouterr()
    assert main(args) == 0  # no drafter: the target alone
    alone, _ = capsys.readouterr()
    assert drafted == alone and "drafted / accepted      0 / 0" not in err


def test_generate_cache_type_reaches_the_session(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    """--cache-type turbo3 decodes over a turbo cache: with --exact, draft-MTP prints the target alone's text."""
    args = ["generate", "-m", str(pair.target_gguf), "-p", "the lazy dog", "-n", "32", "-c", "256", "--exact"]
    assert main([*args, "-ct", "turbo3", "-md", str(pair.drafter_gguf)]) == 0
    turbo_drafted, _ = capsys.readouterr()
    assert main([*args, "-ct", "turbo3"]) == 0
    turbo_alone, _ = capsys.readouterr()
    assert main(args) == 0
    f16, _ = capsys.readouterr()
    assert turbo_drafted == turbo_alone
    assert turbo_alone != f16  # the fixture's logits move with a 3.5-bit cache: the option was used
    with pytest.raises(SystemExit):
        main([*args, "-ct", "turbo5"])


def test_generate_with_a_wrong_drafter_fails_cleanly(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["generate", "-m", str(pair.target_gguf), "-md", str(pair.target_gguf), "-p", "fox"])
    assert rc == 1
    assert "drafter has no MTP" in capsys.readouterr().err


def test_demo_reports_parity_and_acceptance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "-n", "32"]) == 0
    out = capsys.readouterr().out
    assert out.count("parity:") == 2 and "MISMATCH" not in out
    assert "acceptance: 1.000" in out  # the agreeing pair
