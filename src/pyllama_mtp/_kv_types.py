"""The KV cache types a context accepts, by name (pure Python: the CLI's parser needs them unloaded).

ggml_type values from ggml.h; f16 is llama.cpp's default, f32 the exact one. The turbo types
(patch 0026) rotate each block of 32 values and store 2, 3 or 4 bits of a Gaussian codebook per value
plus a 16-bit scale: 2.5, 3.5 and 4.5 bits a value, against f16's 16.
"""

from __future__ import annotations

KV_CACHE_TYPES = {
    "f32": 0,
    "f16": 1,
    "bf16": 30,
    "q8_0": 8,
    "q4_0": 2,
    "turbo2": 43,
    "turbo3": 44,
    "turbo4": 45,
}

# values per block of the quantized types (ggml-common.h); the float types store each value alone
BLOCK_SIZE = {"q8_0": 32, "q4_0": 32, "turbo2": 32, "turbo3": 32, "turbo4": 32}
