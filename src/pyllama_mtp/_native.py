"""Access to the compiled cffi module and translation of its status codes into exceptions."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from . import _build_config, _cuda_libs, errors
from ._kv_types import KV_CACHE_TYPES

# before the library loads: a source build's libggml links ggml-cuda, and ggml-cuda its libraries
CUDA_LIBRARIES_FROM_WHEELS = _cuda_libs.preload(_build_config.PACKAGE_DIR)

try:
    from ._lib import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError("pyllama_mtp._lib is not built; install the package with `pip install .` (see README)") from exc

__all__ = [
    "ffi",
    "lib",
    "check",
    "raise_status",
    "cstr",
    "kv_cache_type",
    "context_memory",
    "CUDA_LIBRARIES_FROM_WHEELS",
]

lib.llama_mtp_init(int(os.environ.get("PYLLAMA_MTP_VERBOSITY", "0")))

_BY_STATUS: dict[int, type[errors.PyllamaMtpError]] = {
    lib.LLAMA_MTP_ERR_INVALID_ARG: errors.InvalidTokenError,
    lib.LLAMA_MTP_ERR_LOAD: errors.ModelLoadError,
    lib.LLAMA_MTP_ERR_CONTEXT: errors.ContextError,
    lib.LLAMA_MTP_ERR_DECODE: errors.DecodeError,
    lib.LLAMA_MTP_ERR_KV_FULL: errors.ContextOverflowError,
    lib.LLAMA_MTP_ERR_INTERNAL: errors.PyllamaMtpError,
    lib.LLAMA_MTP_ERR_IO: errors.OutputFileError,
    lib.LLAMA_MTP_ERR_REMOTE: errors.RemoteDeviceError,
}


def kv_cache_type(name: str) -> int:
    try:
        return KV_CACHE_TYPES[name]
    except KeyError:
        raise ValueError(f"kv_cache_type must be one of {sorted(KV_CACHE_TYPES)}, got {name!r}") from None


def context_memory(ctx: Any) -> dict[str, int]:
    """Bytes a native context holds: ``model`` (weights), ``context`` (KV cache), ``compute`` (buffers)."""
    m = ffi.new("struct llama_mtp_memory *")
    check(lib.llama_mtp_context_memory(ctx, m))
    return {"model": int(m.model), "context": int(m.context), "compute": int(m.compute)}


def cstr(ptr: Any) -> str:
    """A NUL-terminated C string as ``str`` ('' for NULL)."""
    return "" if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", errors="replace")


def raise_status(status: int, prefix: str = "", invalid_arg: type[errors.PyllamaMtpError] | None = None) -> NoReturn:
    message = cstr(lib.llama_mtp_last_error()) or f"native call failed with status {status}"
    cls = invalid_arg if invalid_arg is not None and status == lib.LLAMA_MTP_ERR_INVALID_ARG else None
    raise (cls or _BY_STATUS.get(status, errors.PyllamaMtpError))(f"{prefix}{message}")


def check(status: int, prefix: str = "", invalid_arg: type[errors.PyllamaMtpError] | None = None) -> None:
    """Raise the exception for a non-OK status; ``invalid_arg`` overrides the class for bad arguments."""
    if status != lib.LLAMA_MTP_OK:
        raise_status(status, prefix, invalid_arg)
