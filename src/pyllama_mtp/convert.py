"""Hugging Face checkpoints to GGUF, with the converter this package ships.

The wheel carries the patched llama.cpp tree's ``convert_hf_to_gguf.py``, its ``conversion/``
modules and its ``gguf-py`` (``pyllama_mtp/_converter``), so an installed package converts a
Gemma 4 target and a ``gemma4_assistant`` drafter, Edge assistants' centroid-routed heads
included, which upstream's converter drops. ``PYLLAMA_MTP_LLAMA_TREE`` points at another tree
holding ``convert_hf_to_gguf.py`` instead. The converter needs the ``[convert]`` extra and torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from .errors import ConversionError, ConverterMissingError

# convert_hf_to_gguf.py's --outtype values
OUTTYPES = ("f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0", "auto")
_SCRIPT = "convert_hf_to_gguf.py"


def converter_dir() -> Path:
    """The folder holding ``convert_hf_to_gguf.py`` with its ``conversion/`` and ``gguf-py/``."""
    override = os.environ.get("PYLLAMA_MTP_LLAMA_TREE")
    where = Path(override) if override else Path(__file__).resolve().parent / "_converter"
    if not (where / _SCRIPT).is_file():
        origin = f"PYLLAMA_MTP_LLAMA_TREE={override}" if override else "this installation"
        raise ConverterMissingError(f"{origin} has no {_SCRIPT} (looked in {where})")
    return where


def gguf_py_dir() -> Path:
    """The converter's own ``gguf-py`` (it knows the tensor names the patches add)."""
    return converter_dir() / "gguf-py"


def import_gguf() -> Any:  # gguf-py ships no stubs the package could check against
    """gguf-py's ``gguf`` module, from :func:`gguf_py_dir` ahead of any installed ``gguf``."""
    path = str(gguf_py_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    import gguf

    if not str(Path(gguf.__file__).resolve()).startswith(str(Path(path).resolve())):
        raise ConverterMissingError(f"'gguf' was already imported from {gguf.__file__}, not from {path}")
    return gguf


def convert_hf(
    hf_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    outtype: str = "f16",
    verbose: bool = False,
) -> Path:
    """Convert a Hugging Face checkpoint folder (a Gemma 4 target or assistant) to ``out``.

    ``verbose`` passes the converter's progress log through to stderr; otherwise it is kept and
    its end goes into the :class:`ConversionError` raised when the conversion fails.
    """
    source, dest = Path(hf_dir), Path(out)
    if outtype not in OUTTYPES:
        raise ConversionError(f"outtype must be one of {', '.join(OUTTYPES)}, not {outtype!r}")
    if not (source / "config.json").is_file():
        raise ConversionError(f"{source}: not a Hugging Face checkpoint folder (no config.json)")
    if dest.is_dir():
        raise ConversionError(f"{dest}: is a folder; give the GGUF file's path")
    dest.parent.mkdir(parents=True, exist_ok=True)
    script = converter_dir() / _SCRIPT
    cmd = [sys.executable, str(script), str(source), "--outfile", str(dest), "--outtype", outtype]
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # it would skip the shipped gguf-py
    stdout, stderr = (None, None) if verbose else (subprocess.DEVNULL, subprocess.PIPE)
    res = subprocess.run(cmd, env=env, stdout=stdout, stderr=stderr, text=True)
    if res.returncode != 0 or not dest.is_file():
        log = "" if verbose else "\n" + res.stderr[-4000:]
        raise ConversionError(f"{_SCRIPT} failed for {source} (exit code {res.returncode}){log}")
    return dest
