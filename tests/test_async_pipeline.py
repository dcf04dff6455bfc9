"""The async pipeline (patch 0012): while the target verifies step t, the draft for step t+1 is
queued behind it on the device, from the verify row the session predicts will be the last
accepted one, and cancelled when the verification ends elsewhere. It must change nothing but
speed: the same tokens, the same drafts at every step and the same acceptance counts as the sync
pipeline, whether its guesses hold or not."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pyllama_mtp import IncompatibleModelsError, Model, MtpSession, MtpStats, Sampling
from pyllama_mtp.fixtures import VARIANTS, Pair, PairConfig, build_pair

from parity import ON_GPU

# the random and agreeing pairs, and the tiny targets with per-layer inputs and with experts
PAIRS = {"random": PairConfig(), "agree": PairConfig(agree=True), **VARIANTS}
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "1",
    "2",
    "3",
    "zebra",
    "draft",
    "verify",
    "accept",
    "token",
    "model",
    "speed",
]


def _prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def _drafts(trace: Path) -> list[tuple[int, int, int, bool]]:
    lines = trace.read_text().splitlines()
    return [(e["step"], e["pos"], e["drafted"], e["accepted"]) for e in map(json.loads, lines)]


def _run(pair: Pair, prompts: list[str], trace: Path, **kwargs: Any) -> tuple[list[list[int]], MtpStats]:
    with (
        Model(pair.target_gguf) as target,
        Model(pair.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_ctx=512, n_threads=2, trace=trace, **kwargs) as session,
    ):
        outputs = [session.complete(p, 24) for p in prompts]
        return outputs, session.stats


def _same_but_speed(async_stats: MtpStats, sync_stats: MtpStats) -> bool:
    return async_stats == replace(
        sync_stats,
        prompt_seconds=async_stats.prompt_seconds,
        generate_seconds=async_stats.generate_seconds,
        n_draft_speculative=async_stats.n_draft_speculative,
        n_draft_cancelled=async_stats.n_draft_cancelled,
    )


@pytest.fixture(params=["default", "worker"])
def worker_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How queued drafts run: the build's default (deferred to the wait on the CPU, a worker thread
    where the drafter computes on a GPU) or a worker thread forced (patch 0012's environment switch)."""
    if request.param == "worker":
        monkeypatch.setenv("LLAMA_MTP_ASYNC_WORKER", "1")
    return str(request.param)


@pytest.mark.parametrize("name", list(PAIRS))
def test_async_equals_sync_on_many_prompts(name: str, worker_mode: str, tmp_path: Path) -> None:
    pair = build_pair(PAIRS[name])
    # a forced worker thread on the CPU competes with the target's threads: fewer prompts there
    prompts = _prompts(60 if worker_mode == "default" or ON_GPU else 20)
    sync_out, sync_stats = _run(pair, prompts, tmp_path / "sync.ndjson")
    async_out, async_stats = _run(pair, prompts, tmp_path / "async.ndjson", pipeline="async")
    assert async_out == sync_out
    assert _drafts(tmp_path / "async.ndjson") == _drafts(tmp_path / "sync.ndjson")
    assert _same_but_speed(async_stats, sync_stats)
    assert sync_stats.n_draft_speculative == 0
    # the guesses were made and mostly held (random: nothing accepted; agree: everything)
    assert async_stats.n_draft_speculative > 0.5 * async_stats.drafter_calls
    assert async_stats.n_draft_cancelled < 0.2 * async_stats.n_draft_speculative


@pytest.mark.parametrize(
    ("name", "row", "sampling"),
    [
        ("random", 3, None),  # guesses "all accepted" where nearly nothing is
        ("agree", 1, None),  # guesses "one accepted" where everything is
        ("random", 2, Sampling(temperature=0.9, top_k=40, seed=7)),
        ("agree", 0, Sampling(temperature=0.7, top_p=0.9, seed=11)),
    ],
)
def test_async_equals_sync_when_its_guesses_fail(
    name: str, row: int, sampling: Sampling | None, worker_mode: str, tmp_path: Path
) -> None:
    pair = build_pair(PAIRS[name])
    prompts = _prompts(12, seed=1)
    kwargs: dict[str, Any] = {"sampling": sampling} if sampling else {}
    sync_out, sync_stats = _run(pair, prompts, tmp_path / "sync.ndjson", **kwargs)
    async_out, async_stats = _run(
        pair, prompts, tmp_path / "async.ndjson", pipeline="async", speculate_row=row, **kwargs
    )
    assert async_out == sync_out
    assert _drafts(tmp_path / "async.ndjson") == _drafts(tmp_path / "sync.ndjson")
    assert _same_but_speed(async_stats, sync_stats)
    assert async_stats.n_draft_cancelled > 0.5 * async_stats.n_draft_speculative > 0


def test_async_streaming_steps_equal_sync(pair: Pair) -> None:
    with (
        Model(pair.target_gguf) as target,
        Model(pair.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_ctx=256) as sync,
        MtpSession(target, drafter, n_ctx=256, pipeline="async") as pipelined,
    ):
        for prompt in _prompts(5, seed=2):
            assert list(pipelined.steps(prompt, 20)) == list(sync.steps(prompt, 20))


def test_async_needs_a_fused_drafter_and_backend_sampling(pair: Pair) -> None:
    with Model(pair.target_gguf) as target, Model(pair.drafter_gguf) as drafter:
        for kwargs in ({"backend_sampling": False}, {"fused_draft": False}, {"p_min": 0.5}):
            with pytest.raises(IncompatibleModelsError, match="pipeline async needs"):
                MtpSession(target, drafter, n_ctx=256, pipeline="async", **kwargs)
        with pytest.raises(IncompatibleModelsError, match="pipeline async needs"):
            MtpSession(target, None, n_draft=0, n_ctx=256, pipeline="async")
        with pytest.raises(IncompatibleModelsError, match="speculate_row"):
            MtpSession(target, drafter, n_ctx=256, pipeline="async", speculate_row=4)
        with pytest.raises(ValueError, match="pipeline must be"):
            MtpSession(target, drafter, n_ctx=256, pipeline="eager")  # type: ignore[arg-type]


def test_two_async_sessions_on_two_threads(pair: Pair) -> None:
    prompts = _prompts(6, seed=3)
    with Model(pair.target_gguf) as target, Model(pair.drafter_gguf) as drafter:
        with MtpSession(target, drafter, n_ctx=256, n_threads=1) as alone:
            expected = [alone.complete(p, 24) for p in prompts]
        results: dict[int, list[list[int]]] = {}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                with MtpSession(target, drafter, n_ctx=256, n_threads=1, pipeline="async") as session:
                    results[i] = [session.complete(p, 24) for p in prompts]
            except BaseException as err:  # surfaced below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors and not any(t.is_alive() for t in threads)
        assert results == {0: expected, 1: expected}


def test_agenerate_streams_without_blocking_the_loop(pair: Pair) -> None:
    prompt = "the quick brown fox"

    async def main(session: MtpSession) -> tuple[list[int], int, int]:
        ticks = 0
        running = True

        async def ticker() -> None:
            nonlocal ticks
            while running:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        tokens = [tok async for tok in session.agenerate(prompt, 32)]
        running = False
        await task
        return tokens, ticks, session.stats.n_steps

    with (
        Model(pair.target_gguf) as target,
        Model(pair.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_ctx=256, pipeline="async") as session,
    ):
        expected = list(session.generate(prompt, 32))
        tokens, ticks, n_steps_total = asyncio.run(main(session))
    assert tokens == expected
    # the loop kept turning while steps ran on their threads: a blocking call would allow about
    # one tick per step
    n_steps = n_steps_total // 2
    assert ticks > 4 * n_steps
