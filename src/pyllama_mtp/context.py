"""``Context``: a KV cache and compute state over a :class:`Model`."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ._native import check, ffi, lib
from ._native import context_memory as _context_memory
from ._native import kv_cache_type as _kv_type
from ._resource import NativeResource
from .errors import ContextError, ContextOverflowError
from .model import Model


class Context(NativeResource):
    """One sequence of decoding state on ``model``.

    Logits returned by :meth:`logits` are copies: the native buffer is reused by
    the next decode, so a view would silently change under the caller.
    ``kv_cache_type`` is the KV cache's element type: ``"f16"`` (default), ``"f32"``, ``"bf16"``,
    ``"q8_0"``, ``"q4_0"``, or ``"turbo4"`` / ``"turbo3"`` / ``"turbo2"`` (4.5, 3.5 and 2.5 bits a value;
    quantized V needs flash attention, which ``flash_attn=None`` turns on). A device without kernels for
    the type raises ``ContextError`` (Metal, for the turbo types). :meth:`memory` reports the bytes.
    ``exact=True`` computes each row of a decode of up to 32 tokens bitwise as a one-token
    decode of it would (``ContextError`` where a backend cannot).
    """

    _kind = "context"

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int | None = None,
        n_threads: int = 0,
        embeddings: bool = False,
        offload_kqv: bool = True,
        ctx_other: Context | None = None,
        mtp: bool = False,
        swa_full: bool = True,
        kv_cache_type: str = "f16",
        flash_attn: bool | None = None,
        exact: bool = False,
    ) -> None:
        if n_ctx < 0 or n_batch <= 0:
            raise ContextError(f"n_ctx must be >= 0 and n_batch > 0 (got n_ctx={n_ctx}, n_batch={n_batch})")
        self.model = model
        params = lib.llama_mtp_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_ubatch or n_batch
        params.n_threads = n_threads
        params.embeddings = embeddings
        params.offload_kqv = offload_kqv
        params.ctx_other = ctx_other.ptr if ctx_other is not None else ffi.NULL
        params.ctx_type = 1 if mtp else 0
        params.swa_full = swa_full
        params.type_kv = _kv_type(kv_cache_type)
        params.flash_attn = -1 if flash_attn is None else int(flash_attn)
        params.exact = exact
        out = ffi.new("struct llama_context **")
        check(lib.llama_mtp_context_create(model.ptr, params, out), f"{model.path}: ")
        self._ptr = out[0]
        self.n_past = 0
        self._n_outputs = 0

    def _free(self, ptr: Any) -> None:
        lib.llama_free(ptr)

    @property
    def n_ctx(self) -> int:
        return int(lib.llama_n_ctx(self.ptr))

    @property
    def n_vocab(self) -> int:
        return self.model.n_vocab

    def decode(self, tokens: list[int], *, all_logits: bool = False) -> None:
        """Append ``tokens`` to the sequence. Logits are kept for the last token, or all with ``all_logits``."""
        if not tokens:
            raise ValueError("decode needs at least one token")
        self.model.check_tokens(tokens)
        if self.n_past + len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"{len(tokens)} tokens after {self.n_past} do not fit in n_ctx={self.n_ctx}")
        arr = ffi.new("llama_token[]", tokens)
        check(lib.llama_mtp_decode(self.ptr, arr, len(tokens), self.n_past, 0, 1 if all_logits else 0))
        self.n_past += len(tokens)
        self._n_outputs = len(tokens) if all_logits else 1

    def logits(self, i: int = -1) -> npt.NDArray[np.float32]:
        """Logits of output row ``i`` of the last decode (``-1``: the last), a copy of shape ``(n_vocab,)``."""
        if not -self._n_outputs <= i < self._n_outputs:
            raise IndexError(f"output {i} out of range: the last decode produced {self._n_outputs} rows")
        ptr = lib.llama_get_logits_ith(self.ptr, i)
        if ptr == ffi.NULL:
            raise ContextError(f"no logits for output {i}")
        return np.frombuffer(ffi.buffer(ptr, 4 * self.n_vocab), dtype=np.float32).copy()

    def all_logits(self) -> npt.NDArray[np.float32]:
        """Every output row of the last decode, shape ``(n_outputs, n_vocab)``."""
        return np.stack([self.logits(i) for i in range(self._n_outputs)])

    def embeddings(self, i: int = -1) -> npt.NDArray[np.float32]:
        """Embedding row ``i`` of the last decode (needs ``embeddings=True``), shape ``(n_embd_out,)``."""
        ptr = lib.llama_get_embeddings_ith(self.ptr, i)
        if ptr == ffi.NULL:
            raise ContextError("no embeddings: create the context with embeddings=True")
        return np.frombuffer(ffi.buffer(ptr, 4 * self.model.n_embd_out), dtype=np.float32).copy()

    def clear(self) -> None:
        """Drop the whole KV cache."""
        lib.llama_memory_clear(lib.llama_get_memory(self.ptr), True)
        self.n_past = 0
        self._n_outputs = 0

    def truncate(self, n_keep: int) -> None:
        """Keep the first ``n_keep`` positions of the sequence and drop the rest."""
        if not 0 <= n_keep <= self.n_past:
            raise ValueError(f"n_keep must be in [0, {self.n_past}], got {n_keep}")
        if not lib.llama_memory_seq_rm(lib.llama_get_memory(self.ptr), 0, n_keep, -1):
            raise ContextError("this KV cache cannot remove a partial sequence")
        self.n_past = n_keep
        self._n_outputs = 0

    @property
    def can_shift(self) -> bool:
        """Whether cached positions can be moved (:meth:`shift`): RoPE keys are re-rotated in place."""
        return bool(lib.llama_memory_can_shift(lib.llama_get_memory(self.ptr)))

    def shift(self, delta: int, start: int = 0) -> None:
        """Move every cached position >= ``start`` by ``delta``; decoding goes on after the last one.

        The building block of a context shift: after ``truncate``-style removal of a span, moving
        what follows it down keeps positions contiguous. Keys are re-rotated before the next
        decode, so attention sees the same relative distances as before the move.
        """
        if not self.can_shift:
            raise ContextError("this model's KV cache cannot shift positions")
        if start < 0 or start + delta < 0:
            raise ValueError(f"positions must stay >= 0 (start={start}, delta={delta})")
        mem = lib.llama_get_memory(self.ptr)
        lib.llama_memory_seq_add(mem, 0, start, -1, delta)
        self.n_past = int(lib.llama_memory_seq_pos_max(mem, 0)) + 1
        self._n_outputs = 0

    def memory(self) -> dict[str, int]:
        """Bytes this context holds: ``model`` (weights), ``context`` (KV cache), ``compute`` (buffers)."""
        return _context_memory(self.ptr)

    @property
    def state_size(self) -> int:
        """Bytes needed to save this context's state."""
        return int(lib.llama_state_get_size(self.ptr))

    def generate_greedy(self, prompt: list[int], max_tokens: int) -> list[int]:
        """Greedy target-only generation, the loop in C: clears the cache, decodes ``prompt``, returns new ids."""
        if not prompt:
            raise ValueError("prompt must hold at least one token")
        self.model.check_tokens(prompt)
        if len(prompt) + max_tokens > self.n_ctx:
            raise ContextOverflowError(f"{len(prompt)} prompt + {max_tokens} new tokens exceed n_ctx={self.n_ctx}")
        self.clear()
        arr = ffi.new("llama_token[]", prompt)
        out = ffi.new("llama_token[]", max(1, max_tokens))
        n_out = ffi.new("int32_t *")
        check(lib.llama_mtp_generate_greedy(self.ptr, arr, len(prompt), max_tokens, out, n_out))
        tokens = list(ffi.unpack(out, n_out[0]))
        self.n_past = len(prompt) + max(0, len(tokens) - 1)
        return tokens
