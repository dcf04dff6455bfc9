"""Big random pairs written straight to GGUF: a converted tiny template, every width scaled up.

A pair too big to build through Hugging Face (31B-dense-shaped) starts from a tiny HF pair with
the real depth, heads, window and vocabulary but small, distinct widths, converted by the pinned
tree as usual; this module rewrites both files with each small width replaced by the real one
(``dims``: template width -> real width), so metadata and tensor names stay exactly what the
converter writes. Tensor contents keep the template's structure, which is what the acceptance
regimes rest on: zero tensors stay zero, constant ones (norms) keep their value, an identity
stays an identity, a random block of leading columns stays random over the scaled columns (the
agreeing pair's embedding; the same bytes in target and drafter), and the rest is random Q4_0
(or F16 where a row is not a whole number of blocks) with the template's standard deviation
scaled by sqrt(template width / real width), so products keep the template's magnitudes. Every
layer, and every expert of a layer, reuses its tensors' random bytes: the speed of a step does
not depend on them.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..convert import import_gguf

_Q4_0_BLOCK = 32  # weights per block; a block is an f16 scale and 16 bytes of 4-bit values
_Q4_0_BYTES = 18
_SCALED_KEYS = (
    ".embedding_length",
    ".embedding_length_out",
    ".feed_forward_length",
    ".expert_feed_forward_length",
    ".embedding_length_per_layer_input",
)


def _leading_columns(data: np.ndarray) -> int:
    """How many leading columns hold non-zeros (the rest being zero)."""
    nonzero = np.flatnonzero(np.any(data != 0, axis=0))
    return int(nonzero[-1]) + 1 if nonzero.size else 0


def _random_q4_0(rows: int, cols: int, std: float, seed: int) -> np.ndarray:
    """Q4_0 rows of zero-mean random weights with standard deviation ``std``."""
    n_blocks = cols // _Q4_0_BLOCK
    rng = np.random.default_rng(seed)
    blocks = np.empty((rows, n_blocks, _Q4_0_BYTES), dtype=np.uint8)
    # a weight is d (q - 8); q uniform on 1..15 (std 4.32 d), not on every 4-bit value: that mean of
    # -d/2 (a tenth of the std) adds up coherently over a row, grew with the width, and overflowed
    # the f16 block sums CUDA's quantized activations keep (NaN logits from the E2B-shaped per-layer
    # projection; the CPU's Q4_0 dot product keeps no sums, and the same weights as Q4_1 failed there)
    blocks[:, :, :2] = np.frombuffer(np.float16(std / 4.32).tobytes(), dtype=np.uint8)
    nibbles = rng.integers(1, 16, size=(rows, n_blocks, 16, 2), dtype=np.uint8)
    blocks[:, :, 2:] = nibbles[..., 0] | (nibbles[..., 1] << 4)
    return blocks.reshape(rows, n_blocks * _Q4_0_BYTES)


class _Writer:
    def __init__(self, dims: Mapping[int, int], seed: int) -> None:
        self.dims = dims
        self.seed = seed
        self.cache: dict[tuple[Any, ...], np.ndarray] = {}

    def _seed(self, *parts: Any) -> int:
        return zlib.crc32(repr((self.seed, *parts)).encode())

    def tensor(self, name: str, data: np.ndarray) -> tuple[np.ndarray, Any]:
        """New contents for a template tensor (numpy, rows first) and its GGML type (None: by dtype)."""
        gguf = import_gguf()
        shape = tuple(self.dims.get(int(n), int(n)) for n in data.shape)
        kind = re.sub(r"^blk\.\d+\.", "blk.", name)  # the same bytes in every layer
        if data.ndim == 3:  # experts: every expert gets the first one's contents
            out, kind_of = self.tensor(name, data[0])
            return np.repeat(out[None], data.shape[0], axis=0), kind_of
        flat = data.astype(np.float32)
        if data.ndim == 1:
            if np.all(flat == flat.flat[0]):
                return np.full(shape, flat.flat[0], dtype=np.float32), None
            return np.resize(flat, shape).astype(np.float32), None
        rows, cols = shape
        if not flat.any():
            if cols % _Q4_0_BLOCK == 0:
                return np.zeros((rows, cols // _Q4_0_BLOCK * _Q4_0_BYTES), np.uint8), gguf.GGMLQuantizationType.Q4_0
            return np.zeros(shape, np.float16), None
        if np.array_equal(flat, np.eye(*flat.shape, dtype=np.float32)):
            return np.eye(rows, cols, dtype=np.float16), None
        lead = _leading_columns(flat)
        lead_new = self.dims.get(lead, lead) if lead < flat.shape[1] else cols
        # products over the wider rows keep the template's scale (std / sqrt(width)): with the
        # template's std at the real width, every product would grow as sqrt(width / template's)
        std = float(flat[:, :lead].std()) * (lead / lead_new) ** 0.5
        key = (kind, rows, cols, lead_new)
        if key not in self.cache:
            if lead_new % _Q4_0_BLOCK == 0 and cols % _Q4_0_BLOCK == 0:
                # keyed by name and leading width only: the agreeing drafter's embedding gets the
                # very bytes of the first columns of the target's
                body = _random_q4_0(rows, lead_new, std, self._seed(name.split(".")[-2], rows, lead_new))
                pad = np.zeros((rows, (cols - lead_new) // _Q4_0_BLOCK * _Q4_0_BYTES), np.uint8)
                self.cache[key] = np.concatenate([body, pad], axis=1) if pad.size else body
            else:
                rng = np.random.default_rng(self._seed(kind, rows, cols))
                out = np.zeros(shape, np.float16)
                out[:, :lead_new] = rng.normal(0.0, std, size=(rows, lead_new))
                self.cache[key] = out
        out = self.cache[key]
        return out, (gguf.GGMLQuantizationType.Q4_0 if out.dtype == np.uint8 else None)


def scale_gguf(template: Path, out: Path, dims: Mapping[int, int], seed: int = 0) -> None:
    """Write ``out``: ``template`` with every width in ``dims`` scaled (see the module docstring)."""
    gguf = import_gguf()
    reader = gguf.GGUFReader(template)
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(out, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key.endswith(_SCALED_KEYS):
            value = [dims.get(v, v) for v in value] if isinstance(value, list) else dims.get(value, value)
        if key == "general.file_type":
            value = int(gguf.LlamaFileType.MOSTLY_Q4_0)
        main = field.types[0]
        sub = field.types[-1] if main == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, main, sub_type=sub)
    scaler = _Writer(dims, seed)
    for t in reader.tensors:
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            raise ValueError(f"{template}: {t.name} is {t.tensor_type.name}; the template must be F32 or F16")
        data, raw = scaler.tensor(t.name, np.asarray(t.data))
        writer.add_tensor(t.name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
