"""``Model``: one loaded GGUF file (weights + vocabulary)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ._gguf_file import check_gguf_file
from ._native import check, cstr, ffi, lib
from ._resource import NativeResource
from .errors import InvalidTokenError, TensorOverrideError

_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}


def _strings(values: Sequence[str] | None, keep_alive: list[Any]) -> tuple[Any, int]:
    """A ``const char * const *`` array of ``values`` and its length (NULL, 0 for none)."""
    if not values:
        return ffi.NULL, 0
    if isinstance(values, str):
        raise TypeError("give a list of strings, not one string")
    encoded = [ffi.new("char[]", v.encode()) for v in values]
    array = ffi.new("const char *[]", encoded)
    keep_alive.extend([encoded, array])
    return array, len(values)


def _fill(ctype: str, cap: int, call: Callable[[Any, int], int]) -> tuple[Any, int]:
    """Run a llama.cpp fill-a-buffer call; it returns -needed when ``cap`` is too small, so retry once."""
    buf = ffi.new(ctype, cap)
    n = call(buf, cap)
    if n < 0:
        buf = ffi.new(ctype, -n)
        n = call(buf, -n)
    return buf, n


class Model(NativeResource):
    """A GGUF model loaded by llama.cpp.

    Use as a context manager, or call :meth:`close`; contexts made from a model
    must be closed before it.

    ``tensor_overrides`` maps regular expressions (searched in the in-memory tensor name) to a
    device: ``"CPU"`` or a ggml device name such as ``"CUDA0"``; the first match wins, as
    ``llama-server -ot``. A drafter's tensors are named ``mtp.<name in the file>`` in memory,
    so ``{r"^mtp\\.": "CUDA0"}`` places a drafter without touching its target's rules.
    :meth:`tensor_placement` shows where every tensor went.

    Past one device: ``rpc`` names running ``pyllama-mtp rpc-server`` processes (``"host:port"``),
    ``devices`` the local ones (``["CUDA0", "CUDA1"]``; default every local GPU). The offloaded
    layers (``n_gpu_layers``) go to the remote devices first, then the local ones, so the last
    layers, the output and the KV cache a drafter shares stay local; the layers not offloaded are
    the first ones and run on the CPU. ``split_mode`` is ``"layer"`` (whole layers per device),
    ``"row"`` (matrices split by rows where the backend can) or ``"none"`` (all on
    ``main_device``, an index into the device list); ``tensor_split`` gives each device's share of
    the layers. By default with ``rpc``, the servers share the first layers equally and the local
    devices keep the last two layers that hold KV cache, what follows them and the output: a
    drafter loaded without ``rpc`` then attends to that KV locally, and a draft step never crosses
    the network. (Without ``rpc``, the default follows free memory, as llama.cpp's.)
    :attr:`devices` lists what the model uses. A server that cannot be reached raises
    :class:`~pyllama_mtp.errors.RemoteDeviceError` here; one lost later raises it from the call
    that needed it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_gpu_layers: int = -1,
        use_mmap: bool = True,
        vocab_only: bool = False,
        tensor_overrides: Mapping[str, str] | None = None,
        devices: Sequence[str] | None = None,
        rpc: Sequence[str] | None = None,
        split_mode: Literal["none", "layer", "row"] = "layer",
        tensor_split: Sequence[float] | None = None,
        main_device: int = 0,
    ) -> None:
        self.path = Path(path)
        check_gguf_file(self.path)
        if split_mode not in _SPLIT_MODES:
            raise ValueError(f"split_mode must be one of {sorted(_SPLIT_MODES)}, got {split_mode!r}")
        params = lib.llama_mtp_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_mmap = use_mmap
        params.vocab_only = vocab_only
        params.split_mode = _SPLIT_MODES[split_mode]
        params.main_device = main_device
        keep_alive: list[Any] = []  # cffi buffers the call reads, alive until it returns
        params.rpc_servers, params.n_rpc_servers = _strings(rpc, keep_alive)
        params.devices, params.n_devices = _strings(devices, keep_alive)
        if tensor_split:
            shares = ffi.new("float[]", [float(x) for x in tensor_split])
            keep_alive.append(shares)
            params.tensor_split, params.n_tensor_split = shares, len(tensor_split)
        rules = list((tensor_overrides or {}).items())
        keep = [(ffi.new("char[]", p.encode()), ffi.new("char[]", d.encode())) for p, d in rules]
        table = ffi.new("struct llama_mtp_tensor_override[]", len(rules) or 1)
        for i, (pattern, device) in enumerate(keep):
            table[i].pattern = pattern
            table[i].device = device
        params.tensor_overrides = table if rules else ffi.NULL
        params.n_tensor_overrides = len(rules)
        out = ffi.new("struct llama_model **")
        check(lib.llama_mtp_model_load(os.fsencode(self.path), params, out), invalid_arg=TensorOverrideError)
        self._kind = f"model {self.path}"
        self._ptr = out[0]
        self._vocab = lib.llama_model_get_vocab(self._ptr)
        self.metadata: dict[str, str] = self._read_metadata()

    def _free(self, ptr: Any) -> None:
        lib.llama_model_free(ptr)

    # -- facts ----------------------------------------------------------------
    def _read_metadata(self) -> dict[str, str]:
        buf = ffi.new("char[]", 1 << 16)
        meta = {}
        for i in range(lib.llama_model_meta_count(self._ptr)):
            if lib.llama_model_meta_key_by_index(self._ptr, i, buf, len(buf)) < 0:
                continue
            key = cstr(buf)
            if lib.llama_model_meta_val_str_by_index(self._ptr, i, buf, len(buf)) >= 0:
                meta[key] = cstr(buf)
        return meta

    @property
    def arch(self) -> str:
        """``general.architecture`` (e.g. ``gemma4``, ``gemma4_assistant``)."""
        return self.metadata.get("general.architecture", "")

    def tensor_placement(self) -> dict[str, str]:
        """Every tensor's in-memory name and the buffer it was placed in (``"CPU"``, ``"CUDA0"``, ...)."""
        name = ffi.new("const char **")
        buffer = ffi.new("const char **")
        placement = {}
        i = 0
        while lib.llama_mtp_model_tensor_placement(self.ptr, i, name, buffer) == lib.LLAMA_MTP_OK:
            placement[cstr(name[0])] = cstr(buffer[0])
            i += 1
        return placement

    @property
    def devices(self) -> dict[str, str]:
        """The devices the model's offloaded layers run on, in layer order: name to description
        (an RPC device's description is its server's ``host:port``). Empty when all runs on the CPU."""
        lines = cstr(lib.llama_mtp_model_devices(self.ptr)).splitlines()
        return dict(line.split(": ", 1) for line in lines if ": " in line)

    @property
    def n_vocab(self) -> int:
        return int(lib.llama_vocab_n_tokens(self._vocab))

    @property
    def n_embd(self) -> int:
        """Width of the model's own hidden state."""
        return int(lib.llama_model_n_embd(self.ptr))

    @property
    def n_embd_out(self) -> int:
        """Width of the hidden rows the model publishes (a drafter's is its target's width)."""
        return int(lib.llama_model_n_embd_out(self.ptr))

    @property
    def n_layer(self) -> int:
        return int(lib.llama_model_n_layer(self.ptr))

    @property
    def size_bytes(self) -> int:
        return int(lib.llama_model_size(self.ptr))

    @property
    def description(self) -> str:
        buf = ffi.new("char[]", 256)
        lib.llama_model_desc(self.ptr, buf, len(buf))
        return cstr(buf)

    @property
    def bos(self) -> int:
        return int(lib.llama_vocab_bos(self._vocab))

    @property
    def eos(self) -> int:
        return int(lib.llama_vocab_eos(self._vocab))

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT and the like)."""
        return bool(lib.llama_vocab_is_eog(self._vocab, token))

    # -- vocabulary -----------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds BOS where the model wants one."""
        self.ptr  # noqa: B018  (raises when closed)
        data = text.encode("utf-8")
        out, n = _fill(
            "llama_token[]",
            len(data) + 8,
            lambda buf, cap: lib.llama_tokenize(self._vocab, data, len(data), buf, cap, add_special, parse_special),
        )
        return list(ffi.unpack(out, n))

    def check_tokens(self, tokens: list[int]) -> None:
        """Raise :class:`InvalidTokenError` for any id outside the vocabulary."""
        n_vocab = self.n_vocab
        for i, t in enumerate(tokens):
            if not 0 <= t < n_vocab:
                raise InvalidTokenError(f"token id {t} at index {i} is outside the vocabulary [0, {n_vocab})")

    def token_to_piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes one token stands for (may be part of a UTF-8 character)."""
        self.check_tokens([token])
        buf, n = _fill("char[]", 64, lambda b, cap: lib.llama_token_to_piece(self._vocab, token, b, cap, 0, special))
        return bytes(ffi.buffer(buf, n))

    def detokenize(self, tokens: list[int], *, remove_special: bool = False, unparse_special: bool = False) -> str:
        """Text of ``tokens`` (invalid UTF-8 replaced)."""
        self.check_tokens(tokens)
        arr = ffi.new("llama_token[]", tokens or [0])
        buf, n = _fill(
            "char[]",
            max(16, 8 * len(tokens)),
            lambda b, cap: lib.llama_detokenize(self._vocab, arr, len(tokens), b, cap, remove_special, unparse_special),
        )
        return bytes(ffi.buffer(buf, n)).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        state = "closed" if self._ptr is None else f"{self.arch}, {self.n_vocab} tokens"
        return f"Model({str(self.path)!r}, {state})"
