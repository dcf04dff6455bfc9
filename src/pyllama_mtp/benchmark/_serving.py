"""An HTTP server as a child process on a free loopback port: ``pyllama-mtp serve`` in the load
test and upstream's ``llama-server`` in the harness. Its log goes to a file, not a pipe, so a
chatty server never blocks on a full pipe buffer; the log's tail is in every error."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.is_file() else ""


@contextlib.contextmanager
def serving(cmd: Sequence[str], port: int, *, timeout: float = 120.0) -> Iterator[str]:
    """Run ``cmd`` (a server listening on 127.0.0.1:``port``), wait until ``/health`` answers 200,
    yield the base URL, then stop the server."""
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with log.open("w") as sink:
            proc = subprocess.Popen(list(cmd), stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}:\n{_tail(log)}")
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:  # not listening yet, or 503 while the model loads
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} did not answer /health within {timeout:.0f} s:\n{_tail(log)}")
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def post_json(url: str, body: dict[str, Any], *, timeout: float = 600.0) -> dict[str, Any]:
    """POST ``body`` as JSON and return the JSON answer; an HTTP error raises with its body."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url} answered {exc.code}: {exc.read()[:2000]!r}") from exc
