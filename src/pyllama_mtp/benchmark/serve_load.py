"""A bounded load test of ``pyllama-mtp serve`` through the official ``openai`` client.

Many concurrent clients each send a few chat requests (half streamed, half whole) to a server on
127.0.0.1; every reply is checked against the greedy reply its own conversation gets from a local
:class:`MtpSession`, so a lost, mixed-up or truncated reply fails the run. Latency percentiles and
the total tokens/s are reported for each contender (the server drafting with MTP, and the target
alone), side by side in one run::

    python -m pyllama_mtp.benchmark.serve_load --out-dir bench/results
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import platform
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..chat import Message
from ..fixtures import Pair, PairConfig, build_pair
from ..info import build_info
from ..model import Model
from ..session import MtpSession
from ._serving import free_port, serving
from .harness import device_name, git_commit, slug

WORDS = ["fox", "dog", "model", "target", "drafter", "quick", "lazy", "head"]


def conversations(n: int) -> list[list[Message]]:
    """``n`` distinct one-turn conversations."""
    return [
        [{"role": "user", "content": f"the {WORDS[i % len(WORDS)]} and the {WORDS[i // len(WORDS) % len(WORDS)]} {i}"}]
        for i in range(n)
    ]


def expected_replies(
    pair: Pair, convs: Sequence[list[Message]], max_tokens: int, n_ctx: int, n_draft: int
) -> list[str]:
    """Each conversation's greedy reply from a fresh session (the server is asked for no KV reuse).

    Drafting changes greedy output at near-ties, so the reference drafts as the server does.
    """
    with (
        Model(pair.target_gguf) as target,
        Model(pair.drafter_gguf) as drafter,
        MtpSession(target, drafter if n_draft else None, n_draft=n_draft, n_ctx=n_ctx) as session,
    ):
        replies = []
        for messages in convs:
            session.reset()
            replies.append(session.chat(messages, max_tokens).text)
        return replies


@contextlib.contextmanager
def running_server(args: Sequence[str], *, timeout: float = 120.0) -> Iterator[str]:
    """Start ``pyllama-mtp serve ARGS`` on a free loopback port; yield its base URL; stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "pyllama_mtp", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with serving(cmd, port, timeout=timeout) as base:
        yield base


@dataclass(frozen=True)
class LoadResult:
    clients: int
    requests_per_client: int
    answered: int
    mismatched: int
    errors: int
    completion_tokens: int
    wall_seconds: float
    latency_p50_s: float
    latency_p95_s: float
    acceptance_rate: float
    #: seconds the server's sessions spent generating (its /metrics), summed over the slots
    generate_seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_second": round(self.tokens_per_second, 2)}


def _generate_seconds(base_url: str) -> float:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=30) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("pyllama_mtp_generate_seconds_total "):
                return float(line.split()[1])
    raise RuntimeError(f"{base_url}/metrics has no pyllama_mtp_generate_seconds_total")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def run_load(
    base_url: str,
    model: str,
    convs: Sequence[list[Message]],
    expected: Sequence[str],
    *,
    clients: int = 32,
    requests_per_client: int = 4,
    max_tokens: int = 16,
) -> LoadResult:
    """``clients`` concurrent clients, each sending ``requests_per_client`` requests one after another."""
    from openai import AsyncOpenAI

    api = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=600)
    latencies: list[float] = []
    counts = {"mismatched": 0, "errors": 0, "tokens": 0, "drafted": 0, "accepted": 0}

    async def one(index: int, stream: bool) -> None:
        messages: Any = convs[index]
        start = time.perf_counter()
        try:
            if stream:
                parts: list[str] = []
                chunks = await api.chat.completions.create(
                    model=model, messages=messages, max_tokens=max_tokens, stream=True,
                    stream_options={"include_usage": True}, extra_body={"cache_prompt": False},
                )  # fmt: skip
                usage = None
                async for chunk in chunks:
                    parts.extend(c.delta.content or "" for c in chunk.choices)
                    usage = chunk.usage or usage
                text = "".join(parts)
            else:
                reply = await api.chat.completions.create(
                    model=model, messages=messages, max_tokens=max_tokens, extra_body={"cache_prompt": False}
                )
                text, usage = reply.choices[0].message.content or "", reply.usage
        except Exception:  # noqa: BLE001 - counted: a load test reports failures, it does not stop at one
            counts["errors"] += 1
            return
        latencies.append(time.perf_counter() - start)
        counts["mismatched"] += text != expected[index]
        if usage is not None:
            extra = usage.model_extra or {}
            counts["tokens"] += usage.completion_tokens
            counts["drafted"] += int(extra.get("draft_tokens", 0))
            counts["accepted"] += int(extra.get("accepted_draft_tokens", 0))

    async def client(c: int) -> None:
        for r in range(requests_per_client):
            await one((c * requests_per_client + r) % len(convs), stream=(c + r) % 2 == 0)

    busy_before = await asyncio.to_thread(_generate_seconds, base_url)
    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    wall = time.perf_counter() - start
    await api.close()
    busy = await asyncio.to_thread(_generate_seconds, base_url) - busy_before
    return LoadResult(
        clients=clients,
        requests_per_client=requests_per_client,
        answered=len(latencies),
        mismatched=counts["mismatched"],
        errors=counts["errors"],
        completion_tokens=counts["tokens"],
        wall_seconds=round(wall, 4),
        latency_p50_s=round(_percentile(latencies, 0.5), 4),
        latency_p95_s=round(_percentile(latencies, 0.95), 4),
        acceptance_rate=round(counts["accepted"] / counts["drafted"], 4) if counts["drafted"] else 0.0,
        generate_seconds=round(busy, 4),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--parallel", type=int, default=2, help="server slots")
    parser.add_argument("-n", "--max-tokens", type=int, default=32)
    parser.add_argument("--agree", action="store_true", help="the agreeing pair (acceptance ~1), not the random one")
    parser.add_argument("-o", "--out-dir", default="bench/results")
    parser.add_argument("--commit", help="our commit, where git cannot tell (a copied tree)")
    args = parser.parse_args(argv)
    n_ctx = 1024
    pair = build_pair(PairConfig(chat=True, agree=args.agree))
    convs = conversations(args.clients)
    rows = []
    for name, n_draft in (("draft-mtp k=3", 3), ("target alone", 0)):
        expected = expected_replies(pair, convs, args.max_tokens, n_ctx, n_draft)
        server_args = ["-m", str(pair.target_gguf), "-c", str(n_ctx), "-np", str(args.parallel), "--alias", "fixture"]
        if n_draft:
            server_args += ["-md", str(pair.drafter_gguf), "--n-draft", str(n_draft)]
        with running_server(server_args) as base:
            result = asyncio.run(
                run_load(base, "fixture", convs, expected, clients=args.clients,
                         requests_per_client=args.requests, max_tokens=args.max_tokens)
            )  # fmt: skip
        # the share of the slots' time spent inside the sessions: the rest is the server's own cost
        # (HTTP, JSON, templates, queueing, thread hand-offs), the bound this test can show
        busy = result.generate_seconds / (result.wall_seconds * args.parallel)
        rows.append({"contender": name, **result.as_dict(), "slot_busy_fraction": round(busy, 4)})
        print(f"{name}: {json.dumps(rows[-1])}", file=sys.stderr)
    device = device_name("gpu" if build_info().gpu_offload else "cpu")
    by = {r["contender"]: r for r in rows}
    all_correct = all(r["answered"] == r["clients"] * r["requests_per_client"] and r["mismatched"] == 0 for r in rows)
    out: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "commit": args.commit or git_commit(),
        "device": device,
        "machine": platform.platform(),
        "command": "python -m pyllama_mtp.benchmark.serve_load " + " ".join(argv if argv is not None else sys.argv[1:]),
        "pair": "chat fixture, agreeing" if args.agree else "chat fixture, random",
        "rows": rows,
        "summary": {
            "all_answered_and_correct": all_correct,
            "mtp_over_target_alone_tokens_per_second": round(
                by["draft-mtp k=3"]["tokens_per_second"] / by["target alone"]["tokens_per_second"], 3
            ),
        },  # fmt: skip
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{out['date']}-{slug(device)}-serve-load{'-agree' if args.agree else ''}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(path)
    return 0 if all_correct else 1


if __name__ == "__main__":
    raise SystemExit(main())
