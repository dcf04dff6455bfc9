"""VRAM across create/free cycles on a GPU build (run by hand; CI has no GPU).

    python bench/vram_cycles.py [--cycles 300] [--out bench/results/DATE-DEVICE-vram.json]

Each cycle loads the fixture pair with every layer offloaded, creates a Context and an
MtpSession, decodes, generates, frees everything; then loads a Segmenter on the GPU and runs
one window. Device memory in use (total - free, from the CUDA driver through torch) is read
after the warm-up cycles and at the end; the bound is stated in the JSON and is the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import git_commit

from pyllama_mtp import Context, Model, MtpSession, Segmenter, build_info
from pyllama_mtp import seg_fixtures as sf
from pyllama_mtp.convert_segmentation import convert
from pyllama_mtp.fixtures import build_pair

WARMUP = 20
BOUND_MIB = 64  # a leak of one 256 KiB buffer per cycle would pass 64 MiB within 256 cycles


def used_mib() -> float:
    free, total = torch.cuda.mem_get_info()
    return (total - free) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--commit", help="the commit to record (default: git rev-parse HEAD)")
    args = parser.parse_args()
    pair = build_pair()
    wav = np.zeros(sf.WINDOW_SAMPLES, dtype=np.float32)
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        seg_path = convert(sf.pyannet(seed=0), Path(tmp) / "seg.gguf")
        start = 0.0
        for i in range(args.cycles):
            if i == WARMUP:
                start = used_mib()
            with (
                Model(pair.target_gguf, n_gpu_layers=-1) as target,
                Model(pair.drafter_gguf, n_gpu_layers=-1) as drafter,
                Context(target, n_ctx=256) as ctx,
                MtpSession(target, drafter, n_ctx=256) as session,
            ):
                ctx.decode([2, 40])
                session.complete([2, 40, 41], 4)
            with Segmenter(seg_path, use_gpu=True) as seg:
                seg.segment(wav)
            if i % 50 == 0:
                samples.append((i, used_mib()))
    grown = used_mib() - start
    commit = args.commit or git_commit()
    result = {
        "device": ", ".join(build_info().devices),
        "commit": commit,
        "cycles": args.cycles,
        "warmup": WARMUP,
        "used_mib_after_warmup": start,
        "grown_mib": grown,
        "bound_mib": BOUND_MIB,
        "samples": samples,
        "flat": grown < BOUND_MIB,
    }
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
