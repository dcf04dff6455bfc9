"""Seed inputs for the GGUF header fuzzer: small files written by the tree's own gguf-py, with a
value of every GGUF type, string and numeric arrays, and tensors of several types and ranks; and
the regression inputs of what the fuzzer found (each fixed by a patch in patches/)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gguf_corpus import parse, put  # noqa: E402

# a type id far outside the enum's range, and a file ending before a key's type: both had the
# parser hold a value outside an enum's range, undefined behaviour
# (0001-gguf-reject-out-of-range-type-ids.patch)
OUT_OF_ENUM = 65544


def main(gguf_py: Path, out: Path) -> None:
    sys.path.insert(0, str(gguf_py))
    import gguf  # the tree's own writer, so the seeds are in the format the parser expects

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n_tensors in (0, 1, 4):
        path = out / f"seed-{n_tensors}.gguf"
        w = gguf.GGUFWriter(str(path), "gemma4")
        w.add_uint8("t.u8", 7)
        w.add_int8("t.i8", -7)
        w.add_uint16("t.u16", 700)
        w.add_int16("t.i16", -700)
        w.add_uint32("t.u32", 70000)
        w.add_int32("t.i32", -70000)
        w.add_uint64("t.u64", 7 << 40)
        w.add_int64("t.i64", -(7 << 40))
        w.add_float32("t.f32", 0.5)
        w.add_float64("t.f64", 0.25)
        w.add_bool("t.bool", True)
        w.add_string("t.str", "héllo")
        w.add_array("t.arr.str", ["<pad>", "<eos>", "a", "bc"])
        w.add_array("t.arr.i32", [1, -2, 3])
        w.add_array("t.arr.f32", [0.5, 1.5])
        shapes = [(8,), (4, 8), (32, 2), (2, 3, 32)][:n_tensors]
        for i, shape in enumerate(shapes):
            dtype = (np.float32, np.float16)[i % 2]
            w.add_tensor(f"blk.{i}.w", rng.standard_normal(shape).astype(dtype))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    with_tensor = (out / "seed-1.gguf").read_bytes()
    lay = parse(with_tensor)
    (out / "regress-kv-type-out-of-enum.gguf").write_bytes(put(with_tensor, lay.key_spans[0][1], "<I", OUT_OF_ENUM))
    (out / "regress-truncated-before-kv-type.gguf").write_bytes(with_tensor[: lay.key_spans[0][1]])
    tensor_type_at = lay.tensor_fields[0]["type"]
    (out / "regress-tensor-type-out-of-enum.gguf").write_bytes(put(with_tensor, tensor_type_at, "<I", OUT_OF_ENUM))
    # the last tensor (3-D) with a zero between two dims whose product overflows: the parser
    # counted it as empty, ggml_new_tensor aborted (0003-gguf-shape-check-as-strict-as-ggml.patch)
    four = (out / "seed-4.gguf").read_bytes()
    dim0 = parse(four).tensor_fields[-1]["dim0"]
    for i, ne in enumerate((2**34, 0, 2**39)):
        four = put(four, dim0 + 8 * i, "<Q", ne)
    (out / "regress-zero-dim-between-huge.gguf").write_bytes(four)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
