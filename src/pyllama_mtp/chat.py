"""Conversations rendered by the model's own chat template.

The template is the one the GGUF carries (``tokenizer.chat_template``), run by llama.cpp's chat
layer and jinja engine in the patched tree, the same code that renders ``llama-server``'s
``/v1/chat/completions``. Its end-of-turn token (``<turn|>`` for Gemma 4) is an end-of-generation
token of the vocabulary, so a session stops there by itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ._native import check, cstr, ffi, lib
from ._resource import NativeResource
from .errors import ChatTemplateError
from .model import Model

#: A message as OpenAI's API writes it: ``{"role": "user", "content": "..."}``; ``content`` may also
#: be a list of ``{"type": "text", "text": "..."}`` parts.
Message = Mapping[str, Any]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class RenderedChat:
    """A conversation as the template wrote it."""

    #: the prompt text (the BOS token, where the model wants one, is added by tokenizing it)
    prompt: str
    #: stop strings the template asks for beyond the vocabulary's end-of-generation tokens
    stops: tuple[str, ...]


@dataclass(frozen=True)
class ChatReply:
    """One assistant turn: its text, its token ids and why it ended."""

    text: str
    tokens: list[int]
    #: ``"stop"``: the model ended its turn or a stop string appeared; ``"length"``: ``max_tokens``
    finish_reason: FinishReason
    n_prompt: int


def message_text(message: Message, index: int) -> tuple[str, str]:
    """The role and text of one message; raises :class:`ChatTemplateError` for anything but text."""
    if not isinstance(message, Mapping):
        raise ChatTemplateError(f"message {index} must be a mapping with 'role' and 'content', got {message!r}")
    role, content = message.get("role"), message.get("content")
    if not isinstance(role, str) or not role:
        raise ChatTemplateError(f"message {index} needs a 'role' string")
    if content is None:
        return role, ""
    if isinstance(content, str):
        return role, content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise ChatTemplateError(f"message {index}: only text content is supported, got a {kind!r} part")
            parts.append(part["text"])
        return role, "".join(parts)
    raise ChatTemplateError(f"message {index}: 'content' must be a string or a list of text parts")


class ChatTemplate(NativeResource):
    """A model's chat template, or ``template`` (jinja source) in its place.

    Raises :class:`ChatTemplateError` when the model carries no template and none is given, or
    the source does not parse. The model must stay open while the template is used.
    """

    _kind = "chat template"

    def __init__(self, model: Model, *, template: str | None = None) -> None:
        self.model = model
        out = ffi.new("struct llama_mtp_chat_template **")
        source = ffi.new("char[]", template.encode()) if template is not None else ffi.NULL
        check(lib.llama_mtp_chat_template_init(model.ptr, source, out), f"{model.path}: ", ChatTemplateError)
        self._ptr = out[0]

    def _free(self, ptr: Any) -> None:
        lib.llama_mtp_chat_template_free(ptr)

    def render(
        self, messages: Sequence[Message], *, add_generation_prompt: bool = True, enable_thinking: bool = False
    ) -> RenderedChat:
        """The prompt for ``messages``, ending with the opening of the assistant's turn."""
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
            raise ChatTemplateError("messages must be a non-empty list of {'role': ..., 'content': ...} mappings")
        pairs = [message_text(m, i) for i, m in enumerate(messages)]
        keep = [(ffi.new("char[]", r.encode()), ffi.new("char[]", c.encode())) for r, c in pairs]
        table = ffi.new("struct llama_mtp_chat_message[]", len(keep))
        for i, (role, content) in enumerate(keep):
            table[i].role = role
            table[i].content = content
        params = lib.llama_mtp_chat_default_params()
        params.add_generation_prompt = add_generation_prompt
        params.enable_thinking = enable_thinking
        check(lib.llama_mtp_chat_template_apply(self.ptr, table, len(keep), params), "", ChatTemplateError)
        n_stops = lib.llama_mtp_chat_template_n_stops(self.ptr)
        stops = tuple(cstr(lib.llama_mtp_chat_template_stop(self.ptr, i)) for i in range(n_stops))
        return RenderedChat(prompt=cstr(lib.llama_mtp_chat_template_prompt(self.ptr)), stops=stops)

    def tokens(
        self, messages: Sequence[Message], *, enable_thinking: bool = False
    ) -> tuple[list[int], tuple[str, ...]]:
        """The rendered prompt's token ids (special tokens parsed) and the template's stop strings."""
        rendered = self.render(messages, enable_thinking=enable_thinking)
        return self.model.tokenize(rendered.prompt, add_special=True, parse_special=True), rendered.stops
