"""The fields of OpenAI completion and chat requests that the server honours, checked.

Unknown fields are ignored, as OpenAI-compatible servers do (clients send ``user``, ``logprobs``
and the like); known fields of the wrong type or out of range raise :class:`RequestError`,
which the app answers with a 4xx JSON error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..chat import Message


class RequestError(Exception):
    """A request the server refuses; ``status`` and ``code`` go into the JSON error."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class GenerationRequest:
    """What a completion or chat request asks for, once checked."""

    model: str | None
    prompt: str | list[int] | None  # /v1/completions
    messages: list[Message] | None  # /v1/chat/completions
    max_tokens: int | None  # None: as many as the context allows
    temperature: float | None  # None: the server's default sampling
    top_p: float | None
    top_k: int | None
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage block
    # llama-server's cache_prompt: false starts from an empty KV (reproducible to the bit; slower)
    cache_prompt: bool = True


def _number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise RequestError(f"'{name}' must be a number in [{lo}, {hi}], got {value!r}", param=name)
    return float(value)


def _integer(body: Mapping[str, Any], name: str, lo: int, hi: int = 2**31 - 1) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RequestError(f"'{name}' must be an integer in [{lo}, {hi}], got {value!r}", param=name)
    return value


def _prompt(value: Any) -> str | list[int]:
    # OpenAI's prompt: a string, a list of token ids, or a list of one of those (batches are not served)
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], (str, list)):
        value = value[0]
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value and all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return list(value)
    raise RequestError(
        "'prompt' must be a non-empty string or list of token ids (one prompt per request)", param="prompt"
    )


def parse(body: Any, *, chat: bool) -> GenerationRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError("'model' must be a string", param="model")
    n = _integer(body, "n", 1, 1)
    del n  # one choice per request
    prompt: str | list[int] | None = None
    messages: list[Message] | None = None
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty list", param="messages")
        max_tokens = _integer(body, "max_completion_tokens", 0)
        if max_tokens is None:
            max_tokens = _integer(body, "max_tokens", 0)
    else:
        prompt = _prompt(body.get("prompt"))
        max_tokens = _integer(body, "max_tokens", 0)
        if max_tokens is None:
            max_tokens = 16  # OpenAI's default for completions
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise RequestError("'stop' must be a string or a list of at most 4 strings", param="stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError("'stream' must be true or false", param="stream")
    cache_prompt = body.get("cache_prompt", True)
    if not isinstance(cache_prompt, bool):
        raise RequestError("'cache_prompt' must be true or false", param="cache_prompt")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", param="stream_options")
    return GenerationRequest(
        model=model,
        prompt=prompt,
        messages=messages,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 1e-9, 1.0),
        top_k=_integer(body, "top_k", 0),
        seed=_integer(body, "seed", 0, 2**32 - 2),
        stop=stops,
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        cache_prompt=cache_prompt,
    )
