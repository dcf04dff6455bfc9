"""``MtpSession``: draft-MTP speculative decoding with the loop in C++.

Each native call runs one draft -> verify -> accept step (up to ``n_draft + 1``
tokens) or a whole generation, so Python pays per step, never per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._native import check, ffi, lib
from ._native import context_memory as _context_memory
from ._native import kv_cache_type as _kv_type
from ._resource import NativeResource
from ._text import TextStream
from .chat import ChatReply, ChatTemplate, FinishReason, Message
from .errors import ConcurrentUseError, ContextOverflowError, IncompatibleModelsError
from .model import Model

MAX_DRAFT = int(lib.LLAMA_MTP_MAX_DRAFT)
_DEFAULT_SEED = 0xFFFFFFFF

#: ``"sync"``: draft, verify, accept, one after the other. ``"async"``: the next step's draft is
#: queued on the device behind the verify pass (see :class:`MtpSession`).
Pipeline = Literal["sync", "async"]
_PIPELINES: dict[str, int] = {"sync": int(lib.LLAMA_MTP_PIPELINE_SYNC), "async": int(lib.LLAMA_MTP_PIPELINE_ASYNC)}


@dataclass(frozen=True)
class Sampling:
    """How the target picks tokens. ``temperature <= 0`` is greedy; ``seed=None`` draws a random seed.

    A session's random stream runs on across generations, so the sequence of generations of a
    seeded session is reproducible; :meth:`MtpSession.reset` rewinds it to the seed.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_k must be >= 0 and top_p in (0, 1], got {self.top_k}, {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < _DEFAULT_SEED:
            raise ValueError(f"seed must be in [0, 2**32 - 1), got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class Step:
    """One draft -> verify -> accept step: the tokens it emitted and the draft it verified."""

    tokens: list[int]
    draft: list[int]
    n_accepted: int
    done: bool


@dataclass(frozen=True)
class MtpStats:
    """Counters since the session was created or last :meth:`MtpSession.reset`."""

    n_prompt: int
    n_prompt_reused: int
    n_generated: int
    n_drafted: int
    n_accepted: int
    n_steps: int
    target_passes: int
    drafter_calls: int
    prompt_seconds: float
    generate_seconds: float
    drafted_by_position: tuple[int, ...] = ()
    accepted_by_position: tuple[int, ...] = ()
    #: generated tokens that the target's graph sampled (``backend_sampling``), not the host
    n_sampled_on_backend: int = 0
    #: ``pipeline="async"``: drafts queued behind a verify pass before its result was known
    n_draft_speculative: int = 0
    #: ... of which the verification made useless (it accepted another number of drafts)
    n_draft_cancelled: int = 0
    #: steps that verified k drafts, k = 0 .. max_draft (``n_draft="auto"`` chooses k per step)
    steps_by_draft_length: tuple[int, ...] = ()

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / drafted tokens (0 when nothing was drafted)."""
        return self.n_accepted / self.n_drafted if self.n_drafted else 0.0

    @property
    def acceptance_by_position(self) -> tuple[float, ...]:
        """Acceptance rate of the i-th draft token of a step."""
        return tuple(
            a / d if d else 0.0 for a, d in zip(self.accepted_by_position, self.drafted_by_position, strict=True)
        )

    @property
    def tokens_per_second(self) -> float:
        return self.n_generated / self.generate_seconds if self.generate_seconds > 0 else 0.0

    @property
    def tokens_per_step(self) -> float:
        """Generated tokens per verify pass: 1.0 without speculation, up to n_draft + 1."""
        return self.n_generated / self.n_steps if self.n_steps else 0.0

    def format(self) -> str:
        """A small table for terminals."""
        by_length = " ".join(f"{k}:{n}" for k, n in enumerate(self.steps_by_draft_length) if n)
        rows = [
            ("prompt tokens (reused)", f"{self.n_prompt} ({self.n_prompt_reused})"),
            ("generated tokens", f"{self.n_generated}"),
            ("drafted / accepted", f"{self.n_drafted} / {self.n_accepted}"),
            ("acceptance rate", f"{self.acceptance_rate:.3f}"),
            ("by draft position", " ".join(f"{r:.2f}" for r in self.acceptance_by_position) or "-"),
            ("steps by draft length", by_length or "-"),
            ("target passes", f"{self.target_passes}"),
            ("drafter calls", f"{self.drafter_calls}"),
            ("tokens per verify pass", f"{self.tokens_per_step:.2f}"),
            ("generation speed", f"{self.tokens_per_second:.1f} tokens/s"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class MtpSession(NativeResource):
    """A target model and an MTP drafter (``gemma4_assistant``) decoding together.

    ``drafter=None`` drafts with the target's own MTP head (archs with in-file nextn
    layers); ``n_draft=0`` runs the target alone with the same sampler, the baseline
    that greedy draft-MTP output must equal token for token. ``n_draft="auto"`` lets each step
    verify the number of drafts, 0 to ``max_draft``, that the session's own measured times and
    running acceptance say pays best (0 skips the drafter); ``stats.steps_by_draft_length`` counts
    the choices. ``exact=True`` computes each verify row bitwise as a one-token decode of it
    would, so greedy and seeded output at any ``n_draft`` equals ``n_draft=0`` exactly, not just up
    to rounding at near-ties (``ContextError`` where a backend cannot). A new prompt that repeats the
    start of the previous prompt and its output reuses that part of the KV cache
    (``stats.n_prompt_reused``). ``backend_sampling=False`` samples the target's verify rows and
    picks draft tokens on the host from full logits rows, instead of in the models' graphs
    on the device (slower; same tokens up to float rounding, same random stream). A
    ``gemma4_assistant`` drafter drafts all ``n_draft`` tokens in one graph on
    the backend, each step's argmax feeding the next (``fused_draft=False``, or ``p_min > 0``:
    upstream's loop, one decode and host round trip per draft token; same greedy drafts).
    ``pipeline="async"`` (a fused ``gemma4_assistant`` drafter with ``backend_sampling``) queues
    each step's next draft on the device behind its verify pass, from the row the session predicts
    will be the last accepted one, and cancels it when the verification ends elsewhere: the same
    tokens, drafts and acceptance as ``"sync"``, with the drafter's host work off the critical path
    (``stats.n_draft_speculative``, ``stats.n_draft_cancelled``).
    ``kv_cache_type`` is the target's KV cache type, which a ``gemma4_assistant`` drafter reads too
    (see :class:`Context`: ``"turbo3"`` keeps 4.6 times as many tokens as ``"f16"`` in the same bytes).
    The models must stay open while the session is.
    :meth:`chat` and :meth:`chat_stream` render a conversation with the target's own chat template
    (``chat_template`` replaces it) and stop at the end of the assistant's turn; a conversation
    that grows turn by turn reuses the KV of the turns before.
    Not thread-safe: use one session per thread (sessions on separate threads run in parallel;
    every native call releases the GIL). :meth:`agenerate` streams to ``asyncio`` code.
    """

    _kind = "session"

    def __init__(
        self,
        target: Model,
        drafter: Model | None = None,
        *,
        n_draft: int | Literal["auto"] = 3,
        max_draft: int = 3,
        p_min: float = 0.0,
        n_ctx: int = 2048,
        n_batch: int = 512,
        n_threads: int = 0,
        swa_full: bool = False,
        offload_kqv: bool = True,
        kv_cache_type: str = "f16",
        flash_attn: bool | None = None,
        sampling: Sampling | None = None,
        trace: str | os.PathLike[str] | None = None,
        backend_sampling: bool = True,
        fused_draft: bool = True,
        pipeline: Pipeline = "sync",
        speculate_row: int | None = None,
        chat_template: str | None = None,
        exact: bool = False,
    ) -> None:
        auto = n_draft == "auto"
        longest = max_draft if auto else n_draft
        if not isinstance(longest, int) or isinstance(longest, bool) or not 0 <= longest <= MAX_DRAFT:
            what = "max_draft" if auto else "n_draft"
            raise ValueError(f"{what} must be in [0, {MAX_DRAFT}] (or n_draft='auto'), got {longest!r}")
        if pipeline not in _PIPELINES:
            raise ValueError(f"pipeline must be one of {sorted(_PIPELINES)}, got {pipeline!r}")
        self.pipeline = pipeline
        self.target = target
        self.drafter = drafter
        self.n_draft = n_draft
        #: the most drafts a step verifies: n_draft, or max_draft with n_draft="auto"
        self.max_draft: int = longest
        self.sampling = sampling or Sampling()
        params = lib.llama_mtp_session_default_params()
        params.n_draft = longest
        params.draft_policy = lib.LLAMA_MTP_DRAFT_AUTO if auto else lib.LLAMA_MTP_DRAFT_FIXED
        params.p_min = p_min
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_threads = n_threads
        params.swa_full = swa_full
        params.offload_kqv = offload_kqv
        params.type_kv = _kv_type(kv_cache_type)
        params.flash_attn = -1 if flash_attn is None else int(flash_attn)
        params.backend_sampling = backend_sampling
        params.fused_draft = fused_draft
        params.pipeline = _PIPELINES[pipeline]
        # diagnostics: queue every next draft from this verify row, not the predicted one
        params.speculate_row = -1 if speculate_row is None else speculate_row
        params.temperature = self.sampling.temperature
        params.top_k = self.sampling.top_k
        params.top_p = self.sampling.top_p
        params.seed = _DEFAULT_SEED if self.sampling.seed is None else self.sampling.seed
        params.exact = exact
        # NDJSON acceptance trace (None: $LLAMA_MTP_ACC_TRACE if set); see pyllama_mtp.trace
        trace_path = ffi.new("char[]", os.fsencode(trace)) if trace is not None else ffi.NULL
        params.trace_path = trace_path
        out = ffi.new("struct llama_mtp_session **")
        drafter_ptr = drafter.ptr if drafter is not None else ffi.NULL
        where = f"{target.path} + {drafter.path}: " if drafter is not None else f"{target.path}: "
        check(lib.llama_mtp_session_create(target.ptr, drafter_ptr, params, out), where, IncompatibleModelsError)
        self._ptr = out[0]
        self._generation = 0
        self._chat_template_source = chat_template
        self._chat_template: ChatTemplate | None = None
        # native calls release the GIL; one session's state must never see two at once
        self._busy = threading.Lock()

    def _free(self, ptr: Any) -> None:
        lib.llama_mtp_session_free(ptr)

    def close(self) -> None:
        """Free the session (after a call running on another thread returns). Idempotent."""
        busy = getattr(self, "_busy", None)
        if busy is None:  # __init__ failed before the lock existed
            super().close()
            return
        with busy:
            if self._chat_template is not None:
                self._chat_template.close()
            super().close()

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise ConcurrentUseError("this session is running a call on another thread; use one session per thread")
        try:
            yield
        finally:
            self._busy.release()

    @property
    def n_ctx(self) -> int:
        return int(lib.llama_n_ctx(lib.llama_mtp_session_target_context(self.ptr)))

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        ids = self.target.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("the prompt must hold at least one token")
        self.target.check_tokens(ids)
        if len(ids) + 1 > self.n_ctx:
            raise ContextOverflowError(f"the prompt ({len(ids)} tokens) does not fit n_ctx={self.n_ctx}")
        return ids

    def _start(self, ids: list[int], max_tokens: int) -> int:
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        with self._exclusive():
            check(lib.llama_mtp_session_start(self.ptr, ffi.new("llama_token[]", ids), len(ids), max_tokens))
        self._generation += 1
        return self._generation

    def steps(self, prompt: str | Sequence[int], max_tokens: int) -> Generator[Step, None, None]:
        """Decode ``prompt`` and yield each draft/verify step until ``max_tokens`` or end of generation.

        Starting another generation on this session ends this iterator.
        """
        generation = self._start(self._prompt_ids(prompt), max_tokens)
        while (step := self._step(generation)) is not None:
            yield step
            if step.done:
                return

    def _step(self, generation: int) -> Step | None:
        """One native step of ``generation``; None when it had already ended."""
        if generation != self._generation:
            raise RuntimeError("this generation was superseded by a newer one on the same session")
        buf = ffi.new("llama_token[]", MAX_DRAFT + 1)
        res = ffi.new("struct llama_mtp_step_result *")
        with self._exclusive():
            check(lib.llama_mtp_session_step(self.ptr, buf, MAX_DRAFT + 1, res))
        if res.n_tokens == 0 and res.done:
            return None
        return Step(
            tokens=list(ffi.unpack(buf, res.n_tokens)),
            draft=list(ffi.unpack(res.draft, res.n_drafted)),
            n_accepted=int(res.n_accepted),
            done=bool(res.done),
        )

    async def agenerate(self, prompt: str | Sequence[int], max_tokens: int) -> AsyncIterator[int]:
        """Stream generated token ids to ``asyncio`` code: ``async for tok in session.agenerate(...)``.

        Each native call runs on a worker thread with the GIL released, so the event loop keeps
        running while the models compute. Starting another generation on this session ends it.
        """
        ids = self._prompt_ids(prompt)
        generation = await asyncio.to_thread(self._start, ids, max_tokens)
        while (step := await asyncio.to_thread(self._step, generation)) is not None:
            for token in step.tokens:
                yield token
            if step.done:
                return

    def generate(self, prompt: str | Sequence[int], max_tokens: int) -> Iterator[int]:
        """Stream generated token ids (the prompt is text or ids)."""
        for step in self.steps(prompt, max_tokens):
            yield from step.tokens

    def generate_text(self, prompt: str | Sequence[int], max_tokens: int) -> Iterator[str]:
        """Stream generated text; a UTF-8 character split across tokens comes out whole."""
        text = TextStream()
        for step in self.steps(prompt, max_tokens):
            piece = text.push(b"".join(self.target.token_to_piece(t) for t in step.tokens))
            if piece:
                yield piece
        tail = text.finish()
        if tail:
            yield tail

    # -- chat -----------------------------------------------------------------
    @property
    def chat_template(self) -> ChatTemplate:
        """The template :meth:`chat` renders with (the target's own unless ``chat_template`` was given)."""
        if self._chat_template is None:
            self._chat_template = ChatTemplate(self.target, template=self._chat_template_source)
        return self._chat_template

    def chat_stream(
        self,
        messages: Sequence[Message],
        max_tokens: int | None = None,
        *,
        stop: Sequence[str] = (),
        enable_thinking: bool = False,
    ) -> Iterator[str]:
        """Stream the assistant's reply to ``messages`` as text pieces (see :meth:`chat`)."""
        ids, stops = self.chat_template.tokens(messages, enable_thinking=enable_thinking)
        for piece, _ in self._reply(ids, max_tokens, [*stops, *stop], []):
            if piece:
                yield piece

    def chat(
        self,
        messages: Sequence[Message],
        max_tokens: int | None = None,
        *,
        stop: Sequence[str] = (),
        enable_thinking: bool = False,
    ) -> ChatReply:
        """The assistant's reply to ``messages`` (``[{"role": "user", "content": "..."}, ...]``).

        The conversation is rendered by the chat template and generation stops at the end of the
        turn, at a string of ``stop`` (not included), after ``max_tokens`` or when the context is
        full (``max_tokens=None``: only the last two). Raises
        :class:`~pyllama_mtp.errors.ChatTemplateError` when the messages cannot be rendered.
        """
        ids, stops = self.chat_template.tokens(messages, enable_thinking=enable_thinking)
        parts: list[str] = []
        tokens: list[int] = []
        finish: FinishReason = "length"
        for piece, reason in self._reply(ids, max_tokens, [*stops, *stop], tokens):
            parts.append(piece)
            finish = reason or finish
        return ChatReply(text="".join(parts), tokens=tokens, finish_reason=finish, n_prompt=len(ids))

    def room(self, n_prompt: int) -> int:
        """Tokens a generation after an ``n_prompt``-token prompt can add before the context is full."""
        return max(0, self.n_ctx - n_prompt - self.max_draft - 1)  # a verify batch writes max_draft + 1 rows

    def _reply(
        self, ids: list[int], max_tokens: int | None, stops: Sequence[str], tokens: list[int]
    ) -> Iterator[tuple[str, FinishReason | None]]:
        """Text pieces of a reply (its ids appended to ``tokens``); the last one carries the finish reason."""
        if len(ids) + 1 > self.n_ctx:
            raise ContextOverflowError(f"the conversation ({len(ids)} tokens) does not fit n_ctx={self.n_ctx}")
        max_tokens = self.room(len(ids)) if max_tokens is None else min(max_tokens, self.room(len(ids)))
        text = TextStream(stops)
        finish: FinishReason = "length"
        for step in self.steps(ids, max_tokens):
            tokens.extend(step.tokens)
            if step.tokens and self.target.is_eog(step.tokens[-1]):
                finish = "stop"
            yield text.push(b"".join(self.target.token_to_piece(t) for t in step.tokens)), None
            if text.stopped:
                yield "", "stop"
                return
        yield text.finish(), finish

    def complete(self, prompt: str | Sequence[int], max_tokens: int) -> list[int]:
        """The whole generation in one native call (no streaming): the fastest path."""
        ids = self._prompt_ids(prompt)
        if max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        out = ffi.new("llama_token[]", max(1, max_tokens))
        n_out = ffi.new("int32_t *")
        self._generation += 1
        with self._exclusive():
            check(
                lib.llama_mtp_session_generate(
                    self.ptr, ffi.new("llama_token[]", ids), len(ids), max_tokens, out, n_out
                )
            )
        return list(ffi.unpack(out, n_out[0]))

    @property
    def stats(self) -> MtpStats:
        s = ffi.new("struct llama_mtp_stats *")
        with self._busy:  # a step in flight finishes first: counters are never read torn
            lib.llama_mtp_session_stats(self.ptr, s)
        n = self.max_draft
        return MtpStats(
            n_prompt=int(s.n_prompt),
            n_prompt_reused=int(s.n_prompt_reused),
            n_generated=int(s.n_generated),
            n_drafted=int(s.n_drafted),
            n_accepted=int(s.n_accepted),
            n_steps=int(s.n_steps),
            target_passes=int(s.n_target_passes),
            drafter_calls=int(s.n_draft_calls),
            prompt_seconds=s.t_prompt_us / 1e6,
            generate_seconds=s.t_generate_us / 1e6,
            drafted_by_position=tuple(int(x) for x in s.drafted_by_pos[0:n]),
            accepted_by_position=tuple(int(x) for x in s.accepted_by_pos[0:n]),
            n_sampled_on_backend=int(s.n_sampled_on_backend),
            n_draft_speculative=int(s.n_draft_speculative),
            n_draft_cancelled=int(s.n_draft_cancelled),
            steps_by_draft_length=tuple(int(x) for x in s.steps_by_k[0 : n + 1]),
        )

    def reset(self) -> None:
        """Clear the KV caches and the counters, and rewind the sampler to its seed."""
        self._generation += 1
        with self._exclusive():
            check(lib.llama_mtp_session_reset(self.ptr))

    def set_sampling(self, sampling: Sampling) -> None:
        """Sample the next generations with ``sampling`` (its seed restarts the random stream)."""
        seed = _DEFAULT_SEED if sampling.seed is None else sampling.seed
        with self._exclusive():
            check(
                lib.llama_mtp_session_set_sampling(self.ptr, sampling.temperature, sampling.top_k, sampling.top_p, seed)
            )
        self.sampling = sampling

    def memory(self) -> dict[str, dict[str, int]]:
        """Bytes held by the target and draft contexts: ``{"target": {...}, "drafter": {...}}``."""
        result: dict[str, dict[str, int]] = {}
        for name, ctx in (
            ("target", lib.llama_mtp_session_target_context(self.ptr)),
            ("drafter", lib.llama_mtp_session_draft_context(self.ptr)),
        ):
            if ctx == ffi.NULL:
                continue
            with self._busy:
                result[name] = _context_memory(ctx)
        return result
