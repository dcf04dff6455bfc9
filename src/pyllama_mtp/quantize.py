"""``quantize``: a GGUF's weights rewritten in a smaller type by the pinned llama.cpp (as its
``llama-quantize``), so a converted pair runs as people run it: Q4_K_M target, Q8_0 drafter."""

from __future__ import annotations

import os
from pathlib import Path

from ._gguf_file import check_gguf_file
from ._native import check, cstr, ffi, lib


def quant_types() -> tuple[str, ...]:
    """The type names :func:`quantize` accepts ("Q4_K_M", "Q8_0", ...)."""
    names: list[str] = []
    while (name := lib.llama_mtp_quant_type_name(len(names))) != ffi.NULL:
        names.append(cstr(name))
    return tuple(names)


def quantize(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    quant_type: str = "Q4_K_M",
    n_threads: int = 0,
    allow_requantize: bool = False,
) -> Path:
    """Write ``source``'s weights as ``quant_type`` to ``dest`` and return ``dest``.

    Norms and other 1-d tensors stay in full precision, as llama-quantize keeps them. ``dest``
    appears only once it is whole. ``n_threads <= 0`` uses every core. A ``source`` already
    quantized is refused unless ``allow_requantize`` (as llama-quantize's ``--allow-requantize``:
    each step loses precision).

    Raises ``ValueError`` for an unknown type, :class:`~pyllama_mtp.errors.ModelLoadError` when
    ``source`` is not a model llama.cpp can read, and
    :class:`~pyllama_mtp.errors.OutputFileError` when ``dest`` cannot be written.
    """
    known = quant_types()
    if quant_type not in known:
        raise ValueError(f"quant_type must be one of {', '.join(known)}, got {quant_type!r}")
    src, out = Path(source), Path(dest)
    check_gguf_file(src)
    check(
        lib.llama_mtp_model_quantize(
            str(src).encode(), str(out).encode(), quant_type.encode(), n_threads, allow_requantize
        )
    )
    return out
