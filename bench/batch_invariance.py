"""Which rows of a small batch differ from one-token decodes, per weight type and kernel switch.

    python bench/batch_invariance.py [--out FILE] [--commit C]

For the fixture target (f32 as converted, f16, Q8_0, Q4_0), f16 KV with flash attention and f32
KV without: decode a prompt, then 2, 4, 8 and 17 tokens in one batch, and the same tokens one at
a time; count the rows whose logits are not bitwise equal and the largest difference. Each
ggml-cuda switch that changes a kernel choice (GGML_CUDA_DISABLE_MMVF_COLS, ..._FUSION) runs in a
child process, since ggml reads them once. ``exact=True`` rows where the
build supports it. Issue 27; the results name the kernels a batch-invariant CUDA mode must pin.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BATCHES = (2, 4, 8, 17)
SWITCHES = {
    "defaults": {},
    "no-mmvf-cols": {"GGML_CUDA_DISABLE_MMVF_COLS": "1"},
    "no-fusion": {"GGML_CUDA_DISABLE_FUSION": "1"},
    "no-mmvf-cols-no-fusion": {"GGML_CUDA_DISABLE_MMVF_COLS": "1", "GGML_CUDA_DISABLE_FUSION": "1"},
}
KV = {"f16-fa": {"kv_cache_type": "f16", "flash_attn": True}, "f32-nofa": {"kv_cache_type": "f32", "flash_attn": False}}


def measure(weights: dict[str, str], exact: bool) -> list[dict[str, object]]:
    from pyllama_mtp import Context, ContextError, Model
    from pyllama_mtp.benchmark.invariance import compare_rows

    rows: list[dict[str, object]] = []
    rng = np.random.default_rng(0)
    for wtype, path in weights.items():
        with Model(path, n_gpu_layers=-1) as model:
            for kv, kv_args in KV.items():
                try:
                    ctx = Context(model, n_ctx=256, exact=exact, **kv_args)  # type: ignore[arg-type]
                except ContextError as exc:
                    rows.append({"weights": wtype, "kv": kv, "exact": exact, "refused": str(exc)})
                    continue
                with ctx:
                    for n in BATCHES:
                        differing = worst = 0.0
                        for _ in range(3):
                            prompt = [int(t) for t in rng.integers(3, model.n_vocab, 21)]
                            cont = [int(t) for t in rng.integers(3, model.n_vocab, n)]
                            cmp = compare_rows(ctx, prompt, cont)
                            differing += cmp.rows_differing
                            worst = max(worst, cmp.max_abs_diff)
                        rows.append({"weights": wtype, "kv": kv, "exact": exact, "n": n,
                                     "rows_differing": differing, "rows": 3 * n, "max_abs_diff": worst})  # fmt: skip
    return rows


def _git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--commit", help="our commit, where git cannot tell (a copied tree)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one switch setting: weights as JSON on stdin, rows as JSON on stdout
        weights = json.loads(sys.stdin.read())
        rows = measure(weights, exact=False) + measure(weights, exact=True)
        print(json.dumps(rows))
        return 0

    from pyllama_mtp import build_info
    from pyllama_mtp.fixtures import build_pair
    from pyllama_mtp.quantize import quantize

    pair = build_pair()
    tmp = Path(tempfile.mkdtemp())
    weights = {"f32": str(pair.target_gguf)}
    for qt in ("F16", "Q8_0", "Q4_0"):
        weights[qt.lower()] = str(quantize(pair.target_gguf, tmp / f"{qt}.gguf", quant_type=qt))
    result: dict[str, object] = {
        "command": " ".join(sys.argv),
        "machine": platform.node(),
        "backends": build_info().backends,
        "commit": args.commit or _git_commit(),
        "switches": {},
    }
    for name, env in SWITCHES.items():
        proc = subprocess.run([sys.executable, __file__, "--child", name], input=json.dumps(weights),
                              capture_output=True, text=True, env={**os.environ, **env}, timeout=600)  # fmt: skip
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows = json.loads(proc.stdout.strip().splitlines()[-1])
        result["switches"][name] = rows  # type: ignore[index]
        for row in rows:
            print(name, json.dumps(row), flush=True)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
