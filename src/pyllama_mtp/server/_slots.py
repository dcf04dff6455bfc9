"""Slots: one :class:`MtpSession` each, a worker thread each, handed to requests first come, first served."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .._text import TextStream
from ..chat import FinishReason
from ..session import MtpSession, Sampling


@dataclass(frozen=True)
class Usage:
    """What one generation cost and what speculation bought."""

    prompt_tokens: int
    prompt_tokens_reused: int
    completion_tokens: int
    draft_tokens: int
    accepted_draft_tokens: int
    generate_seconds: float

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_draft_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.generate_seconds if self.generate_seconds > 0 else 0.0

    def as_openai(self) -> dict[str, float | int]:
        """OpenAI's usage block, with the draft-MTP figures beside its three counts."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_reused": self.prompt_tokens_reused,
            "draft_tokens": self.draft_tokens,
            "accepted_draft_tokens": self.accepted_draft_tokens,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "tokens_per_second": round(self.tokens_per_second, 2),
        }


@dataclass(frozen=True)
class Finished:
    """The last item of a generation's stream."""

    finish_reason: FinishReason
    usage: Usage
    cancelled: bool


@dataclass(eq=False)  # compared and hashed by identity: the server keeps a set of running jobs
class Job:
    """One generation: what to run, and the queue its text pieces and end arrive on."""

    ids: list[int]
    max_tokens: int
    sampling: Sampling
    stops: Sequence[str]
    reuse_kv: bool  # False: start from an empty KV, so the output does not depend on earlier requests
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[str | Finished | BaseException] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    #: how it ended, set on the slot's thread before the slot is released (None: it raised)
    finished: Finished | None = None

    def put(self, item: str | Finished | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class Slot:
    """A session and the one thread that drives it (a session must see one call at a time)."""

    def __init__(self, index: int, session: MtpSession) -> None:
        self.index = index
        self.session = session
        self.tokens: list[int] = []  # the prompt and output of its last generation: what its KV holds
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"pyllama-mtp-slot{index}")

    def shared_prefix(self, ids: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self.tokens, ids, strict=False):
            if a != b:
                break
            n += 1
        return n

    def submit(self, job: Job, on_done: Callable[[], None]) -> None:
        future = self._thread.submit(self._run, job)
        future.add_done_callback(lambda _: job.loop.call_soon_threadsafe(on_done))

    def _run(self, job: Job) -> None:
        """On the slot's thread: generate, pushing text pieces, then a :class:`Finished`."""
        session = self.session
        try:
            if not job.reuse_kv:
                session.reset()
            # a seed restarts the random stream, so the same request gives the same text
            if job.sampling != session.sampling or job.sampling.seed is not None:
                session.set_sampling(job.sampling)
            before = session.stats
            text = TextStream(job.stops)
            finish: FinishReason = "length"
            out: list[int] = []
            self.tokens = []
            for step in session.steps(job.ids, job.max_tokens):
                out.extend(step.tokens)
                if step.tokens and session.target.is_eog(step.tokens[-1]):
                    finish = "stop"
                piece = text.push(b"".join(session.target.token_to_piece(t) for t in step.tokens))
                if piece:
                    job.put(piece)
                if text.stopped:
                    finish = "stop"
                    break
                if job.cancel.is_set():
                    break
            else:
                tail = text.finish()
                if tail:
                    job.put(tail)
            self.tokens = job.ids + out
            after = session.stats
            usage = Usage(
                prompt_tokens=len(job.ids),
                prompt_tokens_reused=after.n_prompt_reused - before.n_prompt_reused,
                completion_tokens=len(out),
                draft_tokens=after.n_drafted - before.n_drafted,
                accepted_draft_tokens=after.n_accepted - before.n_accepted,
                generate_seconds=after.generate_seconds - before.generate_seconds,
            )
            job.finished = Finished(finish, usage, cancelled=job.cancel.is_set())
            job.put(job.finished)
        except BaseException as exc:  # noqa: BLE001 - handed to the request, which reports it
            job.put(exc)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.session.close()


class SlotPool:
    """Free slots and the requests waiting for one, served in arrival order.

    A request gets the free slot whose KV shares the longest prefix with its prompt, so the turns of
    a conversation keep landing where the earlier turns are cached.
    """

    def __init__(self, slots: list[Slot]) -> None:
        self.slots = slots
        self._free = list(slots)
        self._waiting: deque[asyncio.Future[Slot]] = deque()

    @property
    def n_busy(self) -> int:
        return len(self.slots) - len(self._free)

    @property
    def n_waiting(self) -> int:
        return sum(1 for w in self._waiting if not w.done())

    async def acquire(self, ids: Sequence[int]) -> Slot:
        if self._free and not self.n_waiting:
            best = max(self._free, key=lambda s: s.shared_prefix(ids))
            self._free.remove(best)
            return best
        waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot just as it gave up
                self.release(waiter.result())
            raise

    def release(self, slot: Slot) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)
