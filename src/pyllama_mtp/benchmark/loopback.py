"""``pyllama-mtp rpc-server`` processes on free loopback ports, started as a user starts them:
the scale-out tests, the harness's ``--rpc`` rows and ``bench/scale_out.py`` use them."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._serving import free_port

__all__ = ["RpcServer", "free_port", "rpc_servers", "start_rpc_server"]


@dataclass
class RpcServer:
    """A running server: its process and the ``host:port`` a ``Model(rpc=[...])`` names."""

    process: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    def stop(self) -> None:
        """Kill the server (SIGKILL: what a crash looks like to its clients) and reap it."""
        self.process.kill()
        self.process.wait(timeout=30)


def start_rpc_server(*, threads: int = 1, device: str | None = None, timeout: float = 20.0) -> RpcServer:
    """Start ``pyllama-mtp rpc-server`` on a free port (serving ``device``, default its GPUs or else
    its CPU); return once it accepts connections."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix=f"rpc-server-{port}-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "pyllama_mtp", "rpc-server", "--port", str(port), "-t", str(threads)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd + (["--device", device] if device else []),
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"rpc-server on port {port} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            # (the server serves one client at a time: this probe is done before a model connects)
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return RpcServer(proc, f"127.0.0.1:{port}", log)
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"rpc-server on port {port} did not listen within {timeout:.0f} s") from None
            time.sleep(0.1)


@contextlib.contextmanager
def rpc_servers(n: int, *, threads: int = 1, device: str | None = None) -> Iterator[list[RpcServer]]:
    """``n`` servers for the ``with`` block, killed after it."""
    servers: list[RpcServer] = []
    try:
        for _ in range(n):
            servers.append(start_rpc_server(threads=threads, device=device))
        yield servers
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.stop()
