"""The cheap check every GGUF-loading class runs before native code sees a path."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelLoadError

GGUF_MAGIC = b"GGUF"


def check_gguf_file(path: Path) -> None:
    """Refuse what is plainly not a GGUF before native code sees it, with the path in the message."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a regular file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(head) < 8:
        raise ModelLoadError(f"{path}: file is empty or truncated ({len(head)} bytes)")
    if head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path}: not a GGUF file (magic {head[:4]!r})")
