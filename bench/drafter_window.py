"""Which sliding-window keys HF's Gemma-4 assistant reads past the window, vs this build's drafter.

    python bench/drafter_window.py [--prompt-index 10] [--out FILE]

Takes one fixture prompt longer than the sliding window (the default pair: window 32, prompt 10
of the session tests, 49 tokens), reads our drafter's first-draft logits (n_draft=1, host
sampling so the row stays readable) and HF's assistant's, with HF's shared sliding-layer KV cut
to its last N entries for several N. The N whose NMSE against ours is lowest is the number of
sliding keys our drafter reads. Prints JSON; a measurement of numerics, not of speed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_session import PROMPTS  # noqa: E402

from pyllama_mtp import Model, MtpSession  # noqa: E402
from pyllama_mtp._native import ffi, lib  # noqa: E402
from pyllama_mtp.fixtures import Pair, PairConfig, build_pair, hf_drafter, hf_target  # noqa: E402

from parity import EXACT  # noqa: E402


def hf_first_logits(pair: Pair, prompt: list[int], keep: int | None) -> np.ndarray:
    """HF's assistant at the first draft position, its shared sliding KV cut to the last ``keep``."""
    target, drafter = hf_target(pair), hf_drafter(pair)
    with torch.no_grad():
        out = target(
            torch.tensor([prompt[:-1]]), output_hidden_states=True, return_shared_kv_states=True, use_cache=True
        )
        kv = dict(out.shared_kv_states)
        if keep is not None:
            k, v = kv["sliding_attention"]
            kv["sliding_attention"] = (k[:, :, -keep:], v[:, :, -keep:])
        embed = target.get_input_embeddings()
        res = drafter(
            inputs_embeds=torch.cat([embed(torch.tensor([[prompt[-1]]])), out.hidden_states[-1][:, -1:]], dim=-1),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            position_ids=torch.tensor([[len(prompt) - 1]]),
            shared_kv_states=kv,
            use_cache=False,
        )
    return np.asarray(res.logits[0, -1].float().numpy())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-index", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = PairConfig()
    pair = build_pair(cfg)
    with (
        Model(pair.target_gguf) as target,
        Model(pair.drafter_gguf) as drafter,
        MtpSession(target, drafter, n_draft=1, n_ctx=256, n_threads=2, backend_sampling=False, **EXACT) as session,
    ):
        prompt = target.tokenize(PROMPTS[args.prompt_index])
        next(session.steps(prompt, 8))
        row = lib.llama_get_logits_ith(lib.llama_mtp_session_draft_context(session.ptr), 0)
        ours = np.frombuffer(ffi.buffer(row, 4 * target.n_vocab), np.float32).copy()
    w = cfg.sliding_window
    nmse: dict[str, Any] = {}
    for keep in (None, w + 1, w, w - 1, w - 2):
        ref = hf_first_logits(pair, prompt, keep)
        nmse["all" if keep is None else str(keep)] = float(((ours - ref) ** 2).sum() / (ref**2).sum())
    result = {"sliding_window": w, "prompt_tokens": len(prompt), "nmse_by_hf_sliding_keys": nmse}
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
