"""Access to the compiled cffi module and translation of its status codes into exceptions."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from . import errors

try:
    from ._lib import ffi, lib
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError("pyllama_mtp._lib is not built; install the package with `pip install .` (see README)") from exc

__all__ = ["ffi", "lib", "check", "raise_status", "cstr"]

lib.llama_mtp_init(int(os.environ.get("PYLLAMA_MTP_VERBOSITY", "0")))

_BY_STATUS: dict[int, type[errors.PyllamaMtpError]] = {
    lib.LLAMA_MTP_ERR_INVALID_ARG: errors.InvalidTokenError,
    lib.LLAMA_MTP_ERR_LOAD: errors.ModelLoadError,
    lib.LLAMA_MTP_ERR_CONTEXT: errors.ContextError,
    lib.LLAMA_MTP_ERR_DECODE: errors.DecodeError,
    lib.LLAMA_MTP_ERR_KV_FULL: errors.ContextOverflowError,
    lib.LLAMA_MTP_ERR_INTERNAL: errors.PyllamaMtpError,
}


def cstr(ptr: Any) -> str:
    """A NUL-terminated C string as ``str`` ('' for NULL)."""
    return "" if ptr == ffi.NULL else ffi.string(ptr).decode("utf-8", errors="replace")


def raise_status(status: int, prefix: str = "") -> NoReturn:
    message = cstr(lib.llama_mtp_last_error()) or f"native call failed with status {status}"
    raise _BY_STATUS.get(status, errors.PyllamaMtpError)(f"{prefix}{message}")


def check(status: int, prefix: str = "") -> None:
    if status != lib.LLAMA_MTP_OK:
        raise_status(status, prefix)
