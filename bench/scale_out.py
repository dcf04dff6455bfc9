"""Scale-out study: a target split across two loopback ``pyllama-mtp rpc-server`` processes and the
local CPU, side by side with the same pair in one process, and what crosses the link per step.

Contenders, each greedy over the same prompts, k = 0 and k (default 3):
- ``local``: target and drafter in this process;
- ``split``: the target's first layers on the two servers, its last two layers and output here
  (the default split with ``rpc``), the drafter here;
- ``remote-drafter`` (k only): every target layer on the servers, the drafter on the server that
  holds the target's last layers (the KV it reads): each draft step crosses the link too.

Per contender: decode tokens/s, target passes, and the bytes each direction of each server's TCP
connection carried per decode step (``ss -ti`` counters around the generations, the prompt passes
measured apart and taken out). The link model of ``docs/scale-out.md`` is then checked: the step
time a split adds over ``local`` against ``n_sync`` round trips plus the bytes at loopback speed.

    python bench/scale_out.py [--shape tiny] [-n 64] [-k 3] [-o bench/results/DATE-cpu-scale-out-COMMIT.json]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from _common import git_commit, write_result

from pyllama_mtp import Model, MtpSession, build_info
from pyllama_mtp.benchmark import shapes
from pyllama_mtp.benchmark.loopback import RpcServer, rpc_servers

PROMPTS = ("the quick brown fox jumps over the lazy dog", "speculative decoding with a drafter", "9 8 7 6 5 4")
# bytes each way, and segments carrying data each way (a server's answer is at least one: the
# segments in per step count the synchronous round trips)
_COUNTER = re.compile(r"\b(bytes_sent|bytes_received|data_segs_out|data_segs_in):(\d+)")
_KINDS = ("bytes_sent", "bytes_received", "data_segs_out", "data_segs_in")


def link_counters(servers: list[RpcServer]) -> dict[str, int]:
    """What this machine sent to and received from the servers so far, over their open connections."""
    total = dict.fromkeys(_KINDS, 0)
    if shutil.which("ss") is None:  # (iproute2 missing: no counters, the timings still stand)
        return total
    for server in servers:
        port = server.endpoint.rsplit(":", 1)[1]
        out = subprocess.run(
            ["ss", "-tinH", "state", "established", f"( dport = :{port} )"], capture_output=True, text=True, check=True
        ).stdout
        for kind, value in _COUNTER.findall(out):
            total[kind] += int(value)
    return total


def loopback_rtt_us(n: int = 2000) -> float:
    """Median round trip of one small message over loopback TCP between two threads (an upper
    bound for ggml's: Python's own overhead is in it)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def echo() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    times = []
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            t0 = time.perf_counter()
            client.sendall(b"x" * 16)
            client.recv(64)
            times.append(time.perf_counter() - t0)
    listener.close()
    return 1e6 * statistics.median(times)


def loopback_bandwidth_gbps(megabytes: int = 256) -> float:
    """Loopback TCP throughput, one stream."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    got = [0]

    def sink() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(1 << 20):
                got[0] += len(data)

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    block = b"\0" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port)) as client:
        t0 = time.perf_counter()
        for _ in range(megabytes):
            client.sendall(block)
    thread.join()
    seconds = time.perf_counter() - t0
    listener.close()
    return 8 * got[0] / seconds / 1e9


def measure(
    name: str, target: Model, drafter: Model | None, k: int, servers: list[RpcServer], n_predict: int, threads: int
) -> dict[str, Any]:
    with MtpSession(target, drafter if k else None, n_draft=k, n_ctx=1024, n_threads=threads) as session:
        session.complete(PROMPTS[0], 8)  # warm-up: graphs allocated, weights touched
        rates, steps = [], 0
        decode = dict.fromkeys(_KINDS, 0)
        for prompt in PROMPTS:
            session.reset()
            before = link_counters(servers)
            session.complete(prompt, 0)  # the prompt pass alone
            prompt_only = link_counters(servers)
            session.reset()
            start = link_counters(servers)
            stats0 = session.stats
            session.complete(prompt, n_predict)
            stats1 = session.stats
            end = link_counters(servers)
            seconds = stats1.generate_seconds - stats0.generate_seconds
            rates.append((stats1.n_generated - stats0.n_generated) / seconds)
            steps += stats1.n_steps - stats0.n_steps
            for kind in _KINDS:
                decode[kind] += end[kind] - start[kind] - (prompt_only[kind] - before[kind])
        acceptance = session.stats.acceptance_rate if k else None
    tokens_per_step = (n_predict * len(PROMPTS)) / steps
    row = {
        "name": name,
        "k": k,
        "tokens_per_s": statistics.median(rates),
        "ms_per_step": 1e3 * tokens_per_step / statistics.median(rates),
        "steps": steps,
        "acceptance": acceptance,
        **{f"{kind}_per_step": decode[kind] / steps for kind in _KINDS},
    }
    print(
        f"  {name:<16} k={k}  {row['tokens_per_s']:8.1f} tokens/s  {row['ms_per_step']:7.3f} ms/step  "
        f"sent {row['bytes_sent_per_step']:8.0f} B/step  received {row['bytes_received_per_step']:8.0f} B/step  "
        f"answers {row['data_segs_in_per_step']:5.1f}/step",
        file=sys.stderr,
        flush=True,
    )
    return row


def hidden_bytes_per_token(target: Model) -> int:
    """One f32 hidden row: what a layer boundary carries per token of a batch."""
    return 4 * target.n_embd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="tiny", help="a benchmark shape (default tiny: the CPU harness's)")
    parser.add_argument("-n", "--n-predict", type=int, default=64)
    parser.add_argument("-k", type=int, default=3)
    parser.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 1, help="threads, here and per server")
    parser.add_argument("--cpu", action="store_true", help="the CPU alone, here and in the servers")
    parser.add_argument("-o", "--out", help="write the result JSON here")
    args = parser.parse_args()

    info = build_info()
    rtt_us = loopback_rtt_us()
    bandwidth = loopback_bandwidth_gbps()
    print(f"loopback: rtt {rtt_us:.1f} us (Python ping-pong), {bandwidth:.1f} Gbit/s", file=sys.stderr)
    gpu = info.gpu_offload and not args.cpu
    here: dict[str, Any] = {} if gpu else {"n_gpu_layers": 0}  # where the local contender runs
    local_device: dict[str, Any] = {} if gpu else {"devices": ["CPU"]}  # the split's local part
    regimes: dict[str, Any] = {}
    for regime in ("agree", "random"):
        pair = shapes.build(args.shape, regime, "cuda" if gpu else None)
        print(f"{args.shape} / {regime}", file=sys.stderr, flush=True)
        rows = []
        with Model(pair.target_gguf, **here) as target, Model(pair.drafter_gguf, **here) as drafter:
            n_layer, row_bytes = target.n_layer, hidden_bytes_per_token(target)
            for k in (0, args.k):
                rows.append(measure("local", target, drafter, k, [], args.n_predict, args.threads))
        with rpc_servers(2, threads=args.threads, device=None if gpu else "CPU") as servers:
            endpoints = [s.endpoint for s in servers]
            with (
                Model(pair.target_gguf, rpc=endpoints, **local_device) as target,
                Model(pair.drafter_gguf, **here) as drafter,
            ):
                placement = target.tensor_placement()
                layout = {
                    il: sorted({b for n, b in placement.items() if n.startswith(f"blk.{il}.")}) for il in range(n_layer)
                }
                for k in (0, args.k):
                    rows.append(measure("split", target, drafter, k, servers, args.n_predict, args.threads))
            with (
                Model(pair.target_gguf, rpc=endpoints, tensor_split=[1.0, 1.0]) as target,
                Model(pair.drafter_gguf, rpc=endpoints, tensor_split=[0.0, 1.0]) as drafter,
            ):
                rows.append(measure("remote-drafter", target, drafter, args.k, servers, args.n_predict, args.threads))
        regimes[regime] = {"rows": rows, "layers": layout, "n_layer": n_layer, "hidden_row_bytes": row_bytes}

    # The link model: a split step = the local step + n_sync round trips + its bytes at link speed,
    # n_sync = the servers' answers per step. Its check: the time per round trip this implies,
    # against the loopback ping-pong's.
    checks = []
    for regime, data in regimes.items():
        by = {(r["name"], r["k"]): r for r in data["rows"]}
        for (name, k), row in by.items():
            if name == "local":
                continue
            local = by[("local", k)]
            added_ms = row["ms_per_step"] - local["ms_per_step"]
            wire_ms = 8e3 * (row["bytes_sent_per_step"] + row["bytes_received_per_step"]) / (bandwidth * 1e9)
            checks.append(
                {
                    "regime": regime,
                    "name": name,
                    "k": k,
                    "added_ms_per_step": added_ms,
                    "wire_ms_per_step": wire_ms,
                    "round_trips_per_step": row["data_segs_in_per_step"],
                    "implied_us_per_round_trip": 1e3 * (added_ms - wire_ms) / row["data_segs_in_per_step"]
                    if row["data_segs_in_per_step"]
                    else None,
                }
            )
    # The model on real links: this run's local step times plus the split's measured answers and
    # bytes per step, over a LAN and a WAN (tokens/s of a k-step at acceptance 1 and of k=0).
    links = {
        "LAN 10 Gbit/s, 50 us": (50.0, 10.0),
        "LAN 1 Gbit/s, 200 us": (200.0, 1.0),
        "WAN 1 Gbit/s, 2 ms": (2000.0, 1.0),
    }
    table = []
    for regime, data in regimes.items():
        by = {(r["name"], r["k"]): r for r in data["rows"]}
        for k in (0, args.k):
            split, local = by[("split", k)], by[("local", k)]
            tokens_per_step = local["tokens_per_s"] * local["ms_per_step"] / 1e3
            for link, (rtt, gbps) in links.items():
                wire = 8e3 * (split["bytes_sent_per_step"] + split["bytes_received_per_step"]) / (gbps * 1e9)
                ms = local["ms_per_step"] + split["data_segs_in_per_step"] * rtt / 1e3 + wire
                table.append({"regime": regime, "k": k, "link": link, "ms_per_step": ms,
                              "tokens_per_s": 1e3 * tokens_per_step / ms})  # fmt: skip
    result = {
        "study": "scale-out",
        "command": shlex.join(["python", *sys.argv]),
        "commit": git_commit(),
        "llama_cpp_commit": info.llama_cpp_commit,
        "device": next(d for d in info.devices if not d.startswith("CPU"))
        if gpu
        else f"cpu: {platform.machine()}, {os.cpu_count()} threads",
        "backend": "gpu" if gpu else "cpu",
        "date": datetime.date.today().isoformat(),
        "shape": args.shape,
        "n_predict": args.n_predict,
        "threads": args.threads,
        "loopback": {"rtt_us": rtt_us, "bandwidth_gbps": bandwidth},
        "regimes": regimes,
        "model_check": checks,
        "model_table": table,
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
