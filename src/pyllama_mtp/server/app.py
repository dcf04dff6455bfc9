"""The ASGI app: OpenAI's ``/v1/completions``, ``/v1/chat/completions`` and ``/v1/models`` over
draft-MTP sessions, with ``/health`` and a Prometheus ``/metrics``.

Each slot is one :class:`MtpSession` driven by its own thread; a request waits for a slot in
arrival order, and a client that goes away cancels its generation at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..chat import ChatTemplate
from ..errors import ChatTemplateError, PyllamaMtpError
from ..model import Model
from ..session import MtpSession, Sampling
from ._requests import GenerationRequest, RequestError, parse
from ._slots import Finished, Job, Slot, SlotPool, Usage


@dataclass(frozen=True)
class ServerConfig:
    """How ``pyllama-mtp serve`` runs: the models, the slots and the default sampling."""

    target: Path
    drafter: Path | None = None
    #: the id ``/v1/models`` lists and requests may name (default: the target file's stem)
    model_name: str = ""
    n_parallel: int = 1
    n_ctx: int = 4096  # per slot
    n_draft: int | Literal["auto"] = 3
    max_draft: int = 3  # with n_draft="auto"
    n_gpu_layers: int = -1
    #: more ``Model`` options for the target alone, e.g. its placement past one device (``rpc``,
    #: ``devices``, ``split_mode``, ``tensor_split``, ``main_device``); the drafter stays local
    target_options: Mapping[str, Any] = field(default_factory=dict)
    #: CPU threads per slot; 0 shares the machine's cores among the slots
    n_threads: int = 0
    chat_template: str | None = None
    #: sampling for requests that set none (OpenAI's own default temperature is 1; ours is greedy)
    sampling: Sampling = Sampling()
    #: verify rows bitwise as one-token decodes (``MtpSession(exact=True)``): replies are the target
    #: alone's, token for token, at any n_draft
    exact: bool = False
    #: each slot's KV cache type (``MtpSession(kv_cache_type=...)``): "turbo3" keeps 4.6x the tokens of "f16"
    kv_cache_type: str = "f16"

    @property
    def name(self) -> str:
        return self.model_name or self.target.stem


class _Metrics:
    def __init__(self) -> None:
        self.requests = {"ok": 0, "error": 0, "cancelled": 0}
        self.prompt_tokens = 0
        self.prompt_tokens_reused = 0
        self.completion_tokens = 0
        self.draft_tokens = 0
        self.accepted_draft_tokens = 0
        self.generate_seconds = 0.0

    def add(self, finished: Finished) -> None:
        u = finished.usage
        self.requests["cancelled" if finished.cancelled else "ok"] += 1
        self.prompt_tokens += u.prompt_tokens
        self.prompt_tokens_reused += u.prompt_tokens_reused
        self.completion_tokens += u.completion_tokens
        self.draft_tokens += u.draft_tokens
        self.accepted_draft_tokens += u.accepted_draft_tokens
        self.generate_seconds += u.generate_seconds

    def render(self, pool: SlotPool) -> str:
        rate = self.accepted_draft_tokens / self.draft_tokens if self.draft_tokens else 0.0
        lines = ["# TYPE pyllama_mtp_requests_total counter"]
        lines += [f'pyllama_mtp_requests_total{{outcome="{k}"}} {v}' for k, v in self.requests.items()]
        for name, kind, value in (
            ("prompt_tokens_total", "counter", self.prompt_tokens),
            ("prompt_tokens_reused_total", "counter", self.prompt_tokens_reused),
            ("completion_tokens_total", "counter", self.completion_tokens),
            ("draft_tokens_total", "counter", self.draft_tokens),
            ("accepted_draft_tokens_total", "counter", self.accepted_draft_tokens),
            ("generate_seconds_total", "counter", round(self.generate_seconds, 6)),
            ("acceptance_rate", "gauge", round(rate, 6)),
            ("slots", "gauge", len(pool.slots)),
            ("slots_busy", "gauge", pool.n_busy),
            ("requests_waiting", "gauge", pool.n_waiting),
        ):
            lines += [f"# TYPE pyllama_mtp_{name} {kind}", f"pyllama_mtp_{name} {value}"]
        return "\n".join(lines) + "\n"


def _threads_per_slot(config: ServerConfig) -> int:
    if config.n_threads > 0:
        return config.n_threads
    return max(1, (os.cpu_count() or 1) // config.n_parallel)


class _Server:
    """The models, the slots and the counters behind the routes."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.target = Model(config.target, n_gpu_layers=config.n_gpu_layers, **config.target_options)
        self.drafter = Model(config.drafter, n_gpu_layers=config.n_gpu_layers) if config.drafter else None
        n_draft = config.n_draft if self.drafter is not None else 0
        threads = _threads_per_slot(config)
        slots = [
            Slot(i, MtpSession(self.target, self.drafter, n_draft=n_draft, max_draft=config.max_draft,
                               n_ctx=config.n_ctx, n_threads=threads, sampling=config.sampling, exact=config.exact,
                               kv_cache_type=config.kv_cache_type))
            for i in range(config.n_parallel)
        ]  # fmt: skip
        self.pool = SlotPool(slots)
        self.n_ctx = slots[0].session.n_ctx
        self.metrics = _Metrics()
        self.jobs: set[Job] = set()
        self._template: ChatTemplate | None = None
        self._template_lock = threading.Lock()
        self.created = int(time.time())

    def close(self) -> None:
        for job in self.jobs:
            job.cancel.set()
        for slot in self.pool.slots:
            slot.close()
        if self._template is not None:
            self._template.close()
        if self.drafter is not None:
            self.drafter.close()
        self.target.close()

    # -- requests -> token ids ----------------------------------------------------
    def prompt_ids(self, req: GenerationRequest) -> tuple[list[int], tuple[str, ...]]:
        if req.messages is not None:
            with self._template_lock:
                if self._template is None:
                    self._template = ChatTemplate(self.target, template=self.config.chat_template)
                try:
                    ids, stops = self._template.tokens(req.messages)
                except ChatTemplateError as exc:
                    raise RequestError(str(exc), param="messages") from None
            return ids, stops + req.stop
        if isinstance(req.prompt, str):
            return self.target.tokenize(req.prompt), req.stop
        assert req.prompt is not None
        try:
            self.target.check_tokens(req.prompt)
        except PyllamaMtpError as exc:
            raise RequestError(str(exc), param="prompt") from None
        return req.prompt, req.stop

    def budget(self, ids: list[int], req: GenerationRequest) -> int:
        """Tokens the request may generate: its max_tokens, within what the context has left."""
        room = self.pool.slots[0].session.room(len(ids))
        if room < 1:
            raise RequestError(
                f"the prompt ({len(ids)} tokens) leaves no room in the context ({self.n_ctx} tokens per slot)",
                code="context_length_exceeded",
                param="messages" if req.messages is not None else "prompt",
            )
        return room if req.max_tokens is None else min(req.max_tokens, room)

    def sampling(self, req: GenerationRequest) -> Sampling:
        base = self.config.sampling
        try:
            return Sampling(
                temperature=base.temperature if req.temperature is None else req.temperature,
                top_k=base.top_k if req.top_k is None else req.top_k,
                top_p=base.top_p if req.top_p is None else req.top_p,
                seed=base.seed if req.seed is None else req.seed,
            )
        except ValueError as exc:
            raise RequestError(str(exc)) from None

    # -- generation ---------------------------------------------------------------
    async def generate(self, request: Request, req: GenerationRequest) -> AsyncGenerator[str | Finished, None]:
        """Text pieces, then a :class:`Finished`; the client going away cancels the generation."""
        ids, stops = self.prompt_ids(req)
        job = Job(ids, self.budget(ids, req), self.sampling(req), stops, req.cache_prompt, asyncio.get_running_loop())
        slot = await self.pool.acquire(ids)

        def done() -> None:  # counted here: a client that left no longer reads its stream
            self.jobs.discard(job)
            self.pool.release(slot)
            if job.finished is not None:
                self.metrics.add(job.finished)
            else:
                self.metrics.requests["error"] += 1

        try:
            self.jobs.add(job)
            slot.submit(job, done)
        except BaseException:
            done()  # the slot goes back whatever failed
            raise
        watch = asyncio.create_task(_cancel_on_disconnect(request, job))
        try:
            while True:
                item = await job.queue.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Finished):
                    yield item
                    return
                yield item
        finally:
            job.cancel.set()  # a no-op when it finished; otherwise the client left mid-stream
            watch.cancel()


async def _cancel_on_disconnect(request: Request, job: Job) -> None:
    # the body has been read, so the next message the server receives is the disconnect
    while (await request.receive())["type"] != "http.disconnect":
        pass
    job.cancel.set()


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def create_app(config: ServerConfig) -> Starlette:
    """The server as an ASGI app; the models load when the app starts (its lifespan)."""
    state: dict[str, _Server] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["server"] = await asyncio.to_thread(_Server, config)
        try:
            yield
        finally:
            await asyncio.to_thread(state.pop("server").close)

    async def read_request(request: Request, *, chat: bool) -> GenerationRequest:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"the request body is not valid JSON: {exc}") from None
        req = parse(body, chat=chat)
        if req.model is not None and req.model not in (config.name, str(config.target)):
            raise RequestError(
                f"the model '{req.model}' does not exist; this server serves '{config.name}'",
                status=404,
                param="model",
                code="model_not_found",
            )
        return req

    async def completions(request: Request, *, chat: bool) -> Response:
        server = state["server"]
        try:
            req = await read_request(request, chat=chat)
            events = server.generate(request, req)
            first = await anext(events)  # errors before the first piece become a 4xx, not a broken stream
        except RequestError as exc:
            return _error(exc)
        except PyllamaMtpError as exc:
            return _error(RequestError(str(exc), status=400 if isinstance(exc, ValueError) else 500))
        response_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        shape = _Shape(response_id, config.name, chat)

        async def all_events() -> AsyncIterator[str | Finished]:
            yield first
            async for item in events:
                yield item

        if req.stream:
            return StreamingResponse(
                _stream(shape, all_events(), events, req.include_usage), media_type="text/event-stream"
            )
        parts: list[str] = []
        try:
            async for item in all_events():
                if isinstance(item, Finished):
                    return JSONResponse(shape.whole("".join(parts), item))
                parts.append(item)
        except PyllamaMtpError as exc:
            return _error(RequestError(str(exc), status=500))
        finally:
            await events.aclose()
        raise AssertionError("a generation ended without a Finished item")

    async def chat_completions(request: Request) -> Response:
        return await completions(request, chat=True)

    async def text_completions(request: Request) -> Response:
        return await completions(request, chat=False)

    async def models(request: Request) -> Response:
        server = state["server"]
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": config.name, "object": "model", "created": server.created, "owned_by": "pyllama-mtp"}],
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        server = state["server"]
        return PlainTextResponse(server.metrics.render(server.pool), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", text_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

    async def unexpected(request: Request, exc: Exception) -> Response:
        # a bug of ours: still an OpenAI-shaped JSON error, and the server keeps serving
        return _error(RequestError(f"internal error: {type(exc).__name__}: {exc}", status=500))

    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: unexpected})


@dataclass(frozen=True)
class _Shape:
    """OpenAI's response and chunk objects for one request."""

    id: str
    model: str
    chat: bool

    def _base(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": int(time.time()), "model": self.model}

    def whole(self, text: str, finished: Finished) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "logprobs": None}
        choice["finish_reason"] = finished.finish_reason
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self._base(kind), "choices": [choice], "usage": finished.usage.as_openai()}

    def chunks(self, item: str | Finished, first: bool) -> Iterator[dict[str, Any]]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        text = item if isinstance(item, str) else ""
        reason = item.finish_reason if isinstance(item, Finished) else None
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text or first:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        yield {**self._base(kind), "choices": [choice]}

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {**self._base(kind), "choices": [], "usage": usage.as_openai()}


async def _stream(
    shape: _Shape,
    items: AsyncIterator[str | Finished],
    events: AsyncGenerator[str | Finished, None],
    include_usage: bool,
) -> AsyncIterator[str]:
    """Server-sent events; closing this generator (the client left) closes the generation's."""
    first = True
    try:
        async for item in items:
            for chunk in shape.chunks(item, first):
                yield _sse(chunk)
            first = False
            if isinstance(item, Finished) and include_usage:
                yield _sse(shape.usage_chunk(item.usage))
        yield _sse("[DONE]")
    except PyllamaMtpError as exc:
        yield _sse(RequestError(str(exc), status=500).body())
    finally:
        with contextlib.suppress(RuntimeError):
            await events.aclose()
