"""``exact=True``: a verify batch computed bitwise as one-token decodes (patches 0018-0020).

Without it a k+1-token verify batch takes other kernels (other reduction orders) than a
one-token decode, so drafting can flip a greedy pick at a near-tie (issue 27). With it, every
row of a batch of up to 32 tokens must be bitwise the one-token decode's logits, and greedy and
seeded-sampled output at any draft length must equal the target alone's, token for token, with
no near-tie allowance.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from pyllama_mtp import Context, ContextError, Model, MtpSession, Sampling
from pyllama_mtp.benchmark.invariance import compare_rows
from pyllama_mtp.fixtures import Pair
from pyllama_mtp.quantize import quantize

N_PROMPTS = 64
N_NEW = 256
BATCHES = (2, 4, 5, 8, 17)  # verify sizes of k = 1, 3, 4, 7 and the longest draft, 16
# llama.cpp's defaults (f16 KV, flash attention where supported) and the parity settings
KV_SETTINGS = {"default": {}, "f32-no-fa": {"kv_cache_type": "f32", "flash_attn": False}}


@pytest.fixture(scope="module", params=["f32", "q8_0", "q4_0"])
def weights(request: pytest.FixtureRequest, pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Model]:
    """The fixture target as converted (f32) and quantized (the CPU's repacked and AMX paths)."""
    path: Path = pair.target_gguf
    if request.param != "f32":
        path = quantize(
            pair.target_gguf,
            tmp_path_factory.mktemp("exact") / f"{request.param}.gguf",
            quant_type=request.param.upper(),
        )
    with Model(path, n_gpu_layers=-1) as model:
        yield model


def _probes(model: Model, n: int, seed: int = 0) -> Iterator[tuple[list[int], list[int]]]:
    rng = np.random.default_rng(seed)
    for i in range(n):
        prompt = [int(t) for t in rng.integers(3, model.n_vocab, 9 + 13 * i)]
        yield prompt, [int(t) for t in rng.integers(3, model.n_vocab, max(BATCHES))]


@pytest.mark.parametrize("kv", list(KV_SETTINGS))
def test_verify_rows_are_bitwise_one_token_decodes(weights: Model, kv: str) -> None:
    with Context(weights, n_ctx=256, n_threads=2, exact=True, **KV_SETTINGS[kv]) as ctx:
        for prompt, cont in _probes(weights, 3):
            for n in BATCHES:
                cmp = compare_rows(ctx, prompt, cont[:n])
                assert cmp.rows_differing == 0, f"{n}-token batch after {len(prompt)} tokens: {cmp}"


def test_without_exact_rows_differ(target: Model) -> None:
    """The check above can fail: llama.cpp's own batched kernels round differently (f32 weights)."""
    differing = 0
    with Context(target, n_ctx=256, n_threads=2) as ctx:
        for prompt, cont in _probes(target, 3):
            differing += compare_rows(ctx, prompt, cont[:4]).rows_differing
    assert differing > 0


def _prompts(model: Model, n: int) -> list[list[int]]:
    rng = np.random.default_rng(27)
    return [[int(t) for t in rng.integers(3, model.n_vocab, int(rng.integers(4, 40)))] for _ in range(n)]


def _outputs(
    target: Model, drafter: Model | None, n_draft: int | Literal["auto"], sampling: Sampling, prompts: list[list[int]]
) -> list[list[int]]:
    with MtpSession(target, drafter, n_draft=n_draft, n_ctx=512, n_threads=2, exact=True, sampling=sampling) as s:
        outputs = []
        for prompt in prompts:
            s.reset()  # rewinds a seeded sampler too: each prompt starts from the seed
            outputs.append(s.complete(prompt, N_NEW))
        if n_draft:
            assert s.stats.n_drafted > 0
        return outputs


@pytest.mark.parametrize("which", ["pair", "agreeing_pair"])
@pytest.mark.parametrize("mode", ["greedy", "seeded"])
def test_drafting_changes_nothing(request: pytest.FixtureRequest, which: str, mode: str) -> None:
    """64 prompts x 256 tokens: k = 1, 3 and auto equal k = 0 exactly, with llama.cpp's default KV."""
    chosen: Pair = request.getfixturevalue(which)
    sampling = Sampling() if mode == "greedy" else Sampling(temperature=0.9, top_k=40, seed=5)
    with Model(chosen.target_gguf) as target, Model(chosen.drafter_gguf) as drafter:
        prompts = _prompts(target, N_PROMPTS)
        alone = _outputs(target, None, 0, sampling, prompts)
        assert sum(map(len, alone)) > N_PROMPTS * N_NEW // 2
        for n_draft in (1, 3, "auto"):
            drafted = _outputs(target, drafter, n_draft, sampling, prompts)
            differ = [i for i, (a, b) in enumerate(zip(drafted, alone, strict=True)) if a != b]
            assert not differ, f"n_draft={n_draft}: {len(differ)} of {N_PROMPTS} prompts differ from the target alone"


def test_exact_needs_every_backend(pair: Pair) -> None:
    """A backend that cannot compute batch-invariantly (here an RPC server's) is refused, not ignored."""
    from pyllama_mtp.benchmark.loopback import rpc_servers

    with rpc_servers(1) as running, Model(pair.target_gguf, rpc=[running[0].endpoint]) as target:
        with pytest.raises(ContextError, match="exact"):
            MtpSession(target, None, n_draft=0, n_ctx=256, exact=True)
        with pytest.raises(ContextError, match="exact"):
            Context(target, n_ctx=256, exact=True)
        with MtpSession(target, None, n_draft=0, n_ctx=256) as session:  # the same model without it
            assert session.complete(target.tokenize("hello"), 4)
