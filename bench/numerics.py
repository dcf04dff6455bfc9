"""How far this build's logits move with batch shape and against Hugging Face (tiny fixture).

The parity tests' near-tie thresholds come from these numbers. Prints one JSON object:
for each (flash attention, KV type) setting, the max |logit difference| between one batched
decode and token-by-token decodes of the same sequence, and between the batched decode and HF.

    python bench/numerics.py [--out FILE]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main() -> int:
    import torch
    from _common import write_result  # bench/ is on sys.path when a script here runs

    from pyllama_mtp import Context, Model, build_info
    from pyllama_mtp.fixtures import build_pair, hf_target

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    args = parser.parse_args()
    pair = build_pair()
    info = build_info()
    rows = []
    with Model(pair.target_gguf) as target:
        seq = target.tokenize("drafter head target model quick brown fox jumps over the lazy dog") * 2
        with torch.no_grad():
            ref = hf_target(pair)(torch.tensor([seq])).logits[0].numpy()
        for flash_attn in (None, False):
            for kv in ("f16", "f32"):
                kw = {"n_ctx": 256, "kv_cache_type": kv, "flash_attn": flash_attn}
                with Context(target, **kw) as batched, Context(target, **kw) as single:  # type: ignore[arg-type]
                    batched.decode(seq, all_logits=True)
                    a = batched.all_logits()
                    b = []
                    for token in seq:
                        single.decode([token])
                        b.append(single.logits())
                    s = np.stack(b)
                nmse = ((a - ref) ** 2).sum(axis=1) / (ref**2).sum(axis=1)
                rows.append(
                    {
                        "flash_attn": "auto" if flash_attn is None else flash_attn,
                        "kv_cache_type": kv,
                        "batch_vs_single_max_abs": float(np.abs(a - s).max()),
                        "vs_hf_max_abs": float(np.abs(a - ref).max()),
                        "vs_hf_nmse_max": float(nmse.max()),
                    }
                )
    result = {"backends": info.backends, "gpu_offload": info.gpu_offload, "logit_std": float(ref.std()), "rows": rows}
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
