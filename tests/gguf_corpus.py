"""Malformed GGUF files derived from a valid one, for the loader's robustness tests.

A minimal reader finds the file's structural boundaries (header, each key/value pair, each
tensor info, the data section); the mutations then truncate at those boundaries, flip bits
inside each section, make counts, offsets, dimensions and types lie, duplicate keys and break
UTF-8 in names. Deterministic: the same input gives the same corpus.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# GGUF value types and their fixed sizes (strings and arrays are variable).
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_I8 = 24  # ggml's GGML_TYPE_I8


@dataclass
class Layout:
    n_tensors_at: int  # offset of the u64 tensor count
    n_kv_at: int
    kv_spans: list[tuple[int, int]]  # [start, end) of each key/value pair
    key_spans: list[tuple[int, int]]  # the key string bytes of each pair
    tensor_spans: list[tuple[int, int]]  # each tensor info
    tensor_fields: list[dict[str, int]]  # offsets of n_dims, dims[0], type, offset fields
    data_start: int  # first byte after the tensor infos (before alignment padding)


def _u32(b: bytes, at: int) -> int:
    return int(struct.unpack_from("<I", b, at)[0])


def _u64(b: bytes, at: int) -> int:
    return int(struct.unpack_from("<Q", b, at)[0])


def _skip_value(b: bytes, at: int, vtype: int) -> int:
    if vtype in _FIXED:
        return at + _FIXED[vtype]
    if vtype == _STRING:
        return at + 8 + _u64(b, at)
    if vtype == _ARRAY:
        etype, n = _u32(b, at), _u64(b, at + 4)
        at += 12
        if etype in _FIXED:
            return at + n * _FIXED[etype]
        for _ in range(n):
            at = _skip_value(b, at, etype)
        return at
    raise ValueError(f"unknown GGUF value type {vtype} at {at}")


def parse(b: bytes) -> Layout:
    if b[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    n_tensors, n_kv = _u64(b, 8), _u64(b, 16)
    at = 24
    kv_spans, key_spans = [], []
    for _ in range(n_kv):
        start = at
        key_len = _u64(b, at)
        key_spans.append((at + 8, at + 8 + key_len))
        at += 8 + key_len
        vtype = _u32(b, at)
        at = _skip_value(b, at + 4, vtype)
        kv_spans.append((start, at))
    tensor_spans, fields = [], []
    for _ in range(n_tensors):
        start = at
        at += 8 + _u64(b, at)
        n_dims = _u32(b, at)
        f = {"n_dims": at, "dim0": at + 4}
        at += 4 + 8 * n_dims
        f["type"] = at
        f["offset"] = at + 4
        at += 12
        tensor_spans.append((start, at))
        fields.append(f)
    return Layout(8, 16, kv_spans, key_spans, tensor_spans, fields, at)


def put(b: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(b)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def corpus(data: bytes, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) pairs; names say what was broken."""
    lay = parse(data)
    rng = random.Random(seed)

    # truncation at every structural boundary, and one byte either side of some
    bounds = {4, 8, 16, 24, lay.data_start, len(data) - 1}
    bounds.update(e for _, e in lay.kv_spans)
    bounds.update(e for _, e in lay.tensor_spans)
    for cut in sorted(bounds):
        if 0 < cut < len(data):
            yield f"truncate-{cut}", data[:cut]
    for _, end in lay.kv_spans[::7] + lay.tensor_spans[::7]:
        for cut in (end - 1, end + 1):
            if 0 < cut < len(data):
                yield f"truncate-near-{cut}", data[:cut]

    # bit flips inside each section
    sections = {
        "header": (4, 24),
        "kv": (24, lay.kv_spans[-1][1]),
        "tensor-info": (lay.tensor_spans[0][0], lay.data_start),
    }
    # the scalar pairs (the tokenizer's arrays hold most of the bytes; flips there mostly load)
    small = [span for span in lay.kv_spans if span[1] - span[0] < 256]
    for name, (lo, hi) in sections.items():
        for i in range(25):
            if name == "kv":
                lo, hi = small[i % len(small)]
            at = rng.randrange(lo, hi)
            out = bytearray(data)
            out[at] ^= 1 << rng.randrange(8)
            yield f"flip-{name}-{i}-at{at}", bytes(out)

    # lying counts
    n_tensors, n_kv = _u64(data, 8), _u64(data, 16)
    for label, value in (("plus1", n_tensors + 1), ("minus1", n_tensors - 1), ("huge", 2**62), ("zero", 0)):
        yield f"tensor-count-{label}", put(data, lay.n_tensors_at, "<Q", value)
    for label, value in (("plus1", n_kv + 1), ("minus1", n_kv - 1), ("huge", 2**62)):
        yield f"kv-count-{label}", put(data, lay.n_kv_at, "<Q", value)
    yield "version-0", put(data, 4, "<I", 0)
    yield "version-99", put(data, 4, "<I", 99)

    # per tensor (every third one): offsets past EOF, huge dims, bad dims count, wrong types
    for i, f in list(enumerate(lay.tensor_fields))[::3]:
        yield f"t{i}-offset-past-eof", put(data, f["offset"], "<Q", len(data) * 4)
        yield f"t{i}-offset-unaligned", put(data, f["offset"], "<Q", _u64(data, f["offset"]) + 1)
        yield f"t{i}-dim-huge", put(data, f["dim0"], "<Q", 2**40)
        yield f"t{i}-dim-zero", put(data, f["dim0"], "<Q", 0)
        yield f"t{i}-dim-overflow", put(data, f["dim0"], "<Q", 2**63 - 1)
        yield f"t{i}-ndims-9", put(data, f["n_dims"], "<I", 9)
        yield f"t{i}-type-999", put(data, f["type"], "<I", 999)
        yield f"t{i}-type-q4_0", put(data, f["type"], "<I", 2)
        yield f"t{i}-type-f16", put(data, f["type"], "<I", 1)

    # the last tensor (its data may grow without moving another's): one byte per element and as
    # many elements as int64 holds, a shape ggml cannot create
    last = lay.tensor_fields[-1]
    if _u32(data, last["n_dims"]) >= 2:
        ne1 = _u64(data, last["dim0"] + 8)
        at_limit = put(put(data, last["type"], "<I", _I8), last["dim0"], "<Q", (2**63 - 1) // max(ne1, 2))
        yield "last-tensor-elements-at-int64-limit", at_limit

    # key/value pairs: string lengths that lie, unknown value types, duplicates, bad UTF-8
    for i, ((start, end), (k0, k1)) in list(enumerate(zip(lay.kv_spans, lay.key_spans, strict=True)))[::4]:
        yield f"kv{i}-key-len-huge", put(data, start, "<Q", 2**62)
        yield f"kv{i}-key-len-past-pair", put(data, start, "<Q", (end - start) + 64)
        yield f"kv{i}-value-type-77", put(data, k1, "<I", 77)
        dup = data[:end] + data[start:end] + data[end:]
        yield f"kv{i}-duplicate", put(dup, lay.n_kv_at, "<Q", n_kv + 1)
        bad = bytearray(data)
        bad[k0 : k0 + 2] = b"\xff\xfe"
        yield f"kv{i}-key-not-utf8", bytes(bad)
    for i, (start, _) in list(enumerate(lay.tensor_spans))[::5]:
        bad = bytearray(data)
        bad[start + 8 : start + 10] = b"\xc3\x28"  # an invalid 2-byte UTF-8 sequence
        yield f"t{i}-name-not-utf8", bytes(bad)
        yield f"t{i}-name-len-huge", put(data, start, "<Q", 2**62)


def _string_pair(key: str, value: bytes) -> bytes:
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", _STRING) + struct.pack("<Q", len(value)) + value


def with_string_kv(data: bytes, key: str, value: str, alignment: int = 32) -> bytes:
    """``data`` plus one string key/value pair, and a filler pair sized so the data section keeps
    its alignment (tensor offsets are relative to it)."""
    lay = parse(data)
    pair = _string_pair(key, value.encode())
    filler_len = (-(len(pair) + len(_string_pair("pyllama_mtp.pad", b"")))) % alignment
    pair += _string_pair("pyllama_mtp.pad", b"-" * filler_len)
    at = lay.kv_spans[-1][1]
    out = data[:at] + pair + data[at:]
    return put(out, lay.n_kv_at, "<Q", _u64(data, lay.n_kv_at) + 2)


def with_u32_value(data: bytes, key: str, value: int) -> bytes:
    """``data`` with the uint32 value of ``key`` replaced by ``value``."""
    lay = parse(data)
    for k0, k1 in lay.key_spans:
        if data[k0:k1] == key.encode():
            assert _u32(data, k1) == 4, f"{key} is not a uint32"
            return put(data, k1 + 4, "<I", value)
    raise KeyError(key)


def with_token_renamed(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` with the first token string ``old`` replaced by ``new`` (same length)."""
    assert len(old) == len(new)
    lay = parse(data)
    at = data.index(struct.pack("<Q", len(old)) + old, 24, lay.kv_spans[-1][1])
    return data[: at + 8] + new + data[at + 8 + len(old) :]


def with_f32_tensor_filled(data: bytes, name: str, value: float, alignment: int = 32) -> bytes:
    """``data`` with every element of the f32 tensor ``name`` set to ``value``."""
    lay = parse(data)
    base = lay.data_start + (-lay.data_start) % alignment
    i = tensor_names(data).index(name)
    f = lay.tensor_fields[i]
    assert _u32(data, f["type"]) == 0, f"{name} is not f32"
    count = 1
    for d in range(_u32(data, f["n_dims"])):
        count *= _u64(data, f["dim0"] + 8 * d)
    at = base + _u64(data, f["offset"])
    return data[:at] + struct.pack(f"<{count}f", *([value] * count)) + data[at + 4 * count :]


def tensor_names(data: bytes) -> list[str]:
    lay = parse(data)
    return [data[s + 8 : s + 8 + _u64(data, s)].decode() for s, _ in lay.tensor_spans]


def arch_mismatches(data: bytes, alignment: int = 32) -> Iterator[tuple[str, bytes, str]]:
    """Well-formed files whose tensors do not match their architecture: (name, bytes, the tensor
    the loader must name). A renamed tensor (so one is missing), a 2-D tensor with its dimensions
    swapped (same bytes, wrong shape) and one tensor too many."""
    lay = parse(data)
    names = tensor_names(data)

    first, (start, _) = names[0], lay.tensor_spans[0]
    renamed = first[:-1] + ("X" if first[-1] != "X" else "Y")
    yield "tensor-missing", data[: start + 8] + renamed.encode() + data[start + 8 + len(first) :], first

    for i, f in enumerate(lay.tensor_fields):
        d0, d1 = _u64(data, f["dim0"]), _u64(data, f["dim0"] + 8)
        if _u32(data, f["n_dims"]) == 2 and d0 != d1:
            swapped = put(put(data, f["dim0"], "<Q", d1), f["dim0"] + 8, "<Q", d0)
            yield "tensor-shape-swapped", swapped, names[i]
            break

    # a 1-D f32 tensor of 8 elements; a 32-character name makes its info entry 64 bytes long,
    # a multiple of the alignment, so the existing tensors' data keeps its aligned offsets
    name = b"pyllama_mtp.extra_tensor_0000000"
    info_end = lay.tensor_spans[-1][1]
    data_start = info_end + (-info_end) % alignment
    data_size = len(data) - data_start
    entry = struct.pack("<Q", len(name)) + name + struct.pack("<IQIQ", 1, 8, 0, data_size + (-data_size) % alignment)
    assert len(entry) % alignment == 0
    tail = data[info_end:] + b"\0" * ((-data_size) % alignment) + struct.pack("<8f", *range(8))
    extra = put(data[:info_end] + entry + tail, lay.n_tensors_at, "<Q", len(names) + 1)
    yield "tensor-extra", extra, name.decode()


def gguf_reader(path: Path) -> Any:
    """gguf-py's reader from the converter the package ships (it knows what the patches add)."""
    from pyllama_mtp.convert import import_gguf  # here: the fuzzer's seed script imports this module bare

    return import_gguf().GGUFReader(path)
