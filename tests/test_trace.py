"""The NDJSON acceptance trace and ``pyllama-mtp trace-report``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyllama_mtp import Model, MtpSession
from pyllama_mtp.cli import main
from pyllama_mtp.fixtures import Pair
from pyllama_mtp.trace import read_trace

from parity import EXACT


def _run(target: Model, drafter: Model, trace: Path | None) -> MtpSession:
    session = MtpSession(target, drafter, n_draft=3, n_ctx=512, **EXACT, trace=trace)
    for text in ("the quick brown fox", "9 8 7 6 5", "lazy dog"):
        session.complete(text, 24)
    return session


@pytest.mark.parametrize("which", ["random", "agreeing"])
def test_trace_counts_equal_stats(
    tmp_path: Path, target: Model, drafter: Model, agreeing_pair: Pair, which: str
) -> None:
    path = tmp_path / "trace.ndjson"
    if which == "random":
        with _run(target, drafter, path) as session:
            stats = session.stats
    else:
        with (
            Model(agreeing_pair.target_gguf) as t,
            Model(agreeing_pair.drafter_gguf) as d,
            _run(t, d, path) as session,
        ):
            stats = session.stats
    summary = read_trace(path)
    assert summary.n_drafted == stats.n_drafted > 0
    assert summary.n_accepted == stats.n_accepted
    assert summary.drafted_by_position == stats.drafted_by_position
    assert summary.accepted_by_position == stats.accepted_by_position
    events = [json.loads(line) for line in path.read_text().splitlines()]
    for ev in events:
        # an accepted draft is the target's own token at that row
        assert not ev["accepted"] or ev["drafted"] == ev["target"]
        assert ev["draft_us"] >= 0 and ev["verify_us"] > 0


def test_trace_from_the_environment_and_off_by_default(
    tmp_path: Path, target: Model, drafter: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "env.ndjson"
    monkeypatch.setenv("LLAMA_MTP_ACC_TRACE", str(path))
    with _run(target, drafter, None) as session:
        n = session.stats.n_drafted
    assert read_trace(path).n_drafted == n
    monkeypatch.delenv("LLAMA_MTP_ACC_TRACE")
    before = set(tmp_path.iterdir())
    with _run(target, drafter, None):
        pass
    assert set(tmp_path.iterdir()) == before


def test_unwritable_trace_path_raises(tmp_path: Path, target: Model, drafter: Model) -> None:
    with pytest.raises(OSError, match="cannot open the acceptance trace"):
        MtpSession(target, drafter, trace=tmp_path / "missing-dir" / "t.ndjson")


def test_trace_report_cli(tmp_path: Path, target: Model, drafter: Model, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.ndjson"
    with _run(target, drafter, path) as session:
        stats = session.stats
    png = tmp_path / "acc.png"
    assert main(["trace-report", str(path), "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert f"drafted {stats.n_drafted}, accepted {stats.n_accepted}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path.write_text('{"step": 0}\n')
    assert main(["trace-report", str(path)]) == 1
    assert "not an acceptance-trace event" in capsys.readouterr().err
