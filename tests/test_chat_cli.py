"""``pyllama-mtp chat``: a conversation read line by line, each reply streamed; Ctrl-C stops a reply and
not the program; a model without a chat template is refused before any input is read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from pyllama_mtp import Model, MtpSession
from pyllama_mtp.cli import main
from pyllama_mtp.fixtures import Pair, PairConfig, build_pair


def _chat_cmd(pair: Pair, *args: str) -> list[str]:
    models = ["-m", str(pair.target_gguf), "-md", str(pair.drafter_gguf)]
    return [sys.executable, "-m", "pyllama_mtp", "chat", *models, *args]


def test_a_piped_conversation_gets_the_sessions_replies() -> None:
    pair = build_pair(PairConfig(chat=True))
    turns = ["the quick brown fox", "and the lazy dog"]
    run = subprocess.run(
        _chat_cmd(pair, "-n", "12", "-c", "1024"), input="\n".join(turns) + "\n", capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    messages: list[dict[str, str]] = []
    expected = []
    with (
        Model(pair.target_gguf) as target,
        Model(pair.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_ctx=1024) as session,
    ):
        for turn in turns:  # the same turns on one session, as the command runs them
            messages.append({"role": "user", "content": turn})
            reply = session.chat(messages, 12).text
            messages.append({"role": "assistant", "content": reply})
            expected.append(reply + "\n")
    assert run.stdout == "".join(expected)


def test_ctrl_c_stops_the_reply_not_the_program() -> None:
    # the agreeing pair never ends its turn by itself: only Ctrl-C (or the context) stops a reply
    pair = build_pair(PairConfig(chat=True, agree=True))
    proc = subprocess.Popen(
        _chat_cmd(pair, "-c", "32768"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        bufsize=0,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    out = ""

    def read_until(done: Callable[[str], bool]) -> None:
        nonlocal out
        deadline = time.monotonic() + 120
        while not done(out):
            assert proc.poll() is None and time.monotonic() < deadline, out
            try:
                out += os.read(proc.stdout.fileno(), 1 << 16).decode()  # type: ignore[union-attr]
            except BlockingIOError:
                time.sleep(0.05)

    try:
        os.set_blocking(proc.stdout.fileno(), False)
        for message in ("the quick brown fox", "hello"):
            proc.stdin.write(message.encode() + b"\n")
            proc.stdin.flush()
            n_lines = out.count("\n")
            read_until(lambda text, n=n_lines: len(text.split("\n")[n]) > 100)  # this reply is streaming
            proc.send_signal(signal.SIGINT)
            read_until(lambda text, n=n_lines: text.count("\n") > n)  # ... and stopped
        os.set_blocking(proc.stdout.fileno(), True)
        rest, err = proc.communicate(b"", timeout=60)  # then end of input, as Ctrl-D: leave
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = (out + rest.decode()).split("\n")
    assert len(lines) == 3 and lines[2] == ""
    assert all(line.endswith(" [stopped]") for line in lines[:2])
    assert b"Traceback" not in err


def test_a_model_without_a_template_is_refused(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["chat", "-m", str(pair.target_gguf), "-c", "128"])
    assert rc == 1
    assert "no chat template" in capsys.readouterr().err
