"""What a KV cache type does to the values stored in it.

:func:`roundtrip` stores values as a cache of a given ``kv_cache_type`` would (the same ggml code a
context's cache writes with) and reads them back, so the rounding a type adds to a model's own keys
and values can be measured before choosing it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ._kv_types import BLOCK_SIZE
from ._native import check, ffi, lib
from ._native import kv_cache_type as _kv_type


def roundtrip(values: npt.ArrayLike, kv_cache_type: str) -> npt.NDArray[np.float32]:
    """``values`` stored as ``kv_cache_type`` and read back, as float32 of the same shape.

    The last axis is the row a cache stores (a head's keys or values); its length must be a whole
    number of the type's blocks (32 for the quantized types). Raises ``ValueError`` otherwise.
    """
    type_id = _kv_type(kv_cache_type)
    src = np.ascontiguousarray(values, dtype=np.float32)
    block = BLOCK_SIZE.get(kv_cache_type, 1)
    if src.ndim == 0 or src.shape[-1] % block != 0:
        raise ValueError(f"{kv_cache_type} stores rows of whole {block}-value blocks; got shape {src.shape}")
    out = np.empty_like(src)
    if src.size:
        check(
            lib.llama_mtp_kv_roundtrip(
                type_id, ffi.from_buffer("float[]", src), src.size, ffi.from_buffer("float[]", out)
            )
        )
    return out
