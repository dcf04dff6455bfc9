"""Pairing validation and runtime misuse: clear exceptions, a living process, a usable session."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from gguf_corpus import with_string_kv, with_token_renamed

from pyllama_mtp import ClosedError, ConcurrentUseError, IncompatibleModelsError, Model, MtpSession
from pyllama_mtp.fixtures import Pair

from parity import EXACT


@pytest.mark.parametrize(
    ("required", "ok"), [("gemma4", True), ("llama", False), ("qwen35", False)], ids=["same", "llama", "qwen35"]
)
def test_requires_target_arch(tmp_path: Path, pair: Pair, target: Model, required: str, ok: bool) -> None:
    path = tmp_path / "drafter.gguf"
    path.write_bytes(with_string_kv(pair.drafter_gguf.read_bytes(), "gemma4-assistant.requires_target_arch", required))
    with Model(path) as drafter:
        assert drafter.metadata["gemma4-assistant.requires_target_arch"] == required
        if ok:
            with MtpSession(target, drafter, n_ctx=256) as session:
                assert session.complete("fox", 4)
        else:
            with pytest.raises(
                IncompatibleModelsError, match=f"requires a {required} target, but the target is gemma4"
            ):
                MtpSession(target, drafter, n_ctx=256)


def test_different_tokenizer_is_refused(tmp_path: Path, pair: Pair, target: Model) -> None:
    path = tmp_path / "drafter.gguf"
    path.write_bytes(with_token_renamed(pair.drafter_gguf.read_bytes(), b"<pad>", b"<paX>"))
    with Model(path) as drafter:
        assert drafter.n_vocab == target.n_vocab
        with pytest.raises(IncompatibleModelsError, match="tokenizers differ at token 0"):
            MtpSession(target, drafter, n_ctx=256)


def test_bad_n_draft_raises(target: Model, drafter: Model) -> None:
    for n in (-1, 17, 10**6):
        with pytest.raises(ValueError, match="n_draft"):
            MtpSession(target, drafter, n_draft=n)


def test_session_after_close_raises(target: Model, drafter: Model) -> None:
    session = MtpSession(target, drafter, n_ctx=256)
    session.close()
    session.close()
    with pytest.raises(ClosedError):
        session.complete("fox", 4)
    with pytest.raises(ClosedError):
        _ = session.stats


def test_second_thread_on_one_session_raises_and_the_session_survives(agreeing_pair: Pair) -> None:
    with (
        Model(agreeing_pair.target_gguf) as target,
        Model(agreeing_pair.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_ctx=4096, **EXACT) as session,
    ):
        results: list[int] = []
        worker = threading.Thread(target=lambda: results.append(len(session.complete("the quick brown fox", 4000))))
        worker.start()
        deadline = time.monotonic() + 30
        while not session._busy.locked() and time.monotonic() < deadline:
            time.sleep(0.0005)
        if worker.is_alive():  # the long call is running (it almost always is)
            with pytest.raises(ConcurrentUseError, match="one session per thread"):
                session.complete("lazy dog", 4)
        worker.join()
        assert results and results[0] > 0
        assert session.complete("lazy dog", 4)  # usable afterwards


def test_two_sessions_on_two_threads(target: Model, drafter: Model) -> None:
    outputs: dict[int, list[int]] = {}

    def run(i: int) -> None:
        with MtpSession(target, drafter, n_ctx=512, n_threads=1, **EXACT) as session:
            outputs[i] = session.complete("the quick brown fox", 48)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with MtpSession(target, drafter, n_ctx=512, n_threads=1, **EXACT) as alone:
        expected = alone.complete("the quick brown fox", 48)
    assert outputs == {0: expected, 1: expected}
