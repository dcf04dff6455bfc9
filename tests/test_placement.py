"""Drafter tensors are `mtp.*` in memory (patch 0007), so placement rules can address them alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from gguf_corpus import gguf_reader

from pyllama_mtp import Model, MtpSession, TensorOverrideError, build_info
from pyllama_mtp.fixtures import Pair

from parity import EXACT

DRAFTER_RULE = {r"^mtp\.": "CPU"}


def _file_names(path: Path) -> set[str]:
    return {t.name for t in gguf_reader(path).tensors}


def test_drafter_tensors_carry_the_prefix_and_the_file_is_untouched(pair: Pair) -> None:
    before = pair.drafter_gguf.read_bytes()
    with Model(pair.drafter_gguf, n_gpu_layers=0) as drafter, Model(pair.target_gguf, n_gpu_layers=0) as target:
        assert set(drafter.tensor_placement()) == {"mtp." + n for n in _file_names(pair.drafter_gguf)}
        assert set(target.tensor_placement()) == _file_names(pair.target_gguf)
    assert pair.drafter_gguf.read_bytes() == before


def _overridden(path: object, rules: dict[str, str]) -> set[str]:
    """Tensors the loader placed by a rule: its debug log names each (a child process, verbose)."""
    code = (
        "import json, sys; from pyllama_mtp import Model; "
        "Model(sys.argv[1], n_gpu_layers=0, tensor_overrides=json.loads(sys.argv[2]))"
    )
    env = {**os.environ, "PYLLAMA_MTP_VERBOSITY": "2"}
    res = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(rules)],
        capture_output=True,
        text=True,
        errors="replace",
        env=env,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return set(re.findall(r"^tensor (\S+) \(.*buffer type overridden to", res.stderr, re.MULTILINE))


def test_a_drafter_rule_reaches_the_drafter_and_not_the_target(pair: Pair) -> None:
    blocks = {r"^mtp\.blk\.": "CPU"}
    drafter_blocks = {"mtp." + n for n in _file_names(pair.drafter_gguf) if n.startswith("blk.")}
    assert _overridden(pair.drafter_gguf, blocks) == drafter_blocks
    assert _overridden(pair.target_gguf, blocks) == set()
    # a rule written with the file's names reaches the target only
    target_blocks = {n for n in _file_names(pair.target_gguf) if n.startswith("blk.0.")}
    assert _overridden(pair.drafter_gguf, {r"^blk\.0\.": "CPU"}) == set()
    assert _overridden(pair.target_gguf, {r"^blk\.0\.": "CPU"}) == target_blocks


def test_a_placed_drafter_drafts_as_before(pair: Pair) -> None:
    with (
        Model(pair.target_gguf, n_gpu_layers=0) as target,
        Model(pair.drafter_gguf, n_gpu_layers=0) as plain,
        Model(pair.drafter_gguf, n_gpu_layers=0, use_mmap=False, tensor_overrides=DRAFTER_RULE) as placed,
        MtpSession(target, placed, n_ctx=256, n_threads=2, **EXACT) as a,
        MtpSession(target, plain, n_ctx=256, n_threads=2, **EXACT) as b,
    ):
        buffers = set(placed.tensor_placement().values())
        assert len(buffers) == 1 and "CPU_Mapped" not in buffers, buffers  # "CPU" ("CUDA_Host" on CUDA)
        assert a.complete("the quick brown fox", 16) == b.complete("the quick brown fox", 16)
        assert a.stats.n_drafted == b.stats.n_drafted > 0


@pytest.mark.parametrize(
    ("rule", "message"),
    [({"(unclosed": "CPU"}, "not a valid regex"), ({r"^mtp\.": "NoSuchDevice9"}, "unknown device 'NoSuchDevice9'")],
)
def test_bad_rules_raise(pair: Pair, rule: dict[str, str], message: str) -> None:
    with pytest.raises(TensorOverrideError, match=re.escape(message)):
        Model(pair.drafter_gguf, tensor_overrides=rule)


@pytest.mark.skipif(not build_info().gpu_offload, reason="needs a GPU build (run on the H100 by ci/gpu_check.sh)")
def test_gpu_rule_puts_the_drafter_on_the_gpu_while_the_target_stays_split(pair: Pair) -> None:
    gpu = next(d.split(":")[0] for d in build_info().devices if not d.startswith("CPU"))
    with (
        Model(pair.target_gguf, n_gpu_layers=2) as target,
        Model(pair.drafter_gguf, n_gpu_layers=0, tensor_overrides={r"^mtp\.": gpu}) as drafter,
    ):
        assert set(drafter.tensor_placement().values()) == {gpu}
        layers = {n.split(".")[1]: b for n, b in target.tensor_placement().items() if n.startswith("blk.")}
        assert gpu in layers.values() and any(not b.startswith(gpu) for b in layers.values()), layers
        with (
            MtpSession(target, drafter, n_ctx=256, **EXACT) as gpu_drafted,
            MtpSession(target, None, n_draft=0, n_ctx=256, **EXACT) as alone,
        ):
            assert gpu_drafted.complete("the quick brown fox", 16) == alone.complete("the quick brown fox", 16)


def _gpus() -> list[str]:
    return [d.split(":")[0] for d in build_info().devices if d.startswith(("CUDA", "Metal", "Vulkan"))]


@pytest.mark.skipif(len(_gpus()) < 2, reason="needs two GPUs (issue 24: ci/gpu_split_check.sh)")
def test_a_target_split_across_two_gpus_gives_the_one_gpu_output(pair: Pair) -> None:
    first, second = _gpus()[:2]
    prompts = ["the quick brown fox", "once upon a time there"]
    with (
        Model(pair.target_gguf, devices=[first]) as target,
        Model(pair.drafter_gguf, devices=[first]) as drafter,
        MtpSession(target, drafter, n_ctx=256, **EXACT) as session,
    ):
        one_gpu = [session.complete(p, 32) for p in prompts]
    # the first layers on the second GPU, the last ones (the KV the drafter reads) and the drafter on the first
    with (
        Model(pair.target_gguf, devices=[second, first]) as target,
        Model(pair.drafter_gguf, devices=[first]) as drafter,
        MtpSession(target, drafter, n_ctx=256, **EXACT) as session,
    ):
        buffers = {b for n, b in target.tensor_placement().items() if n.startswith("blk.")}
        assert any(b.startswith(first) for b in buffers) and any(b.startswith(second) for b in buffers), buffers
        assert [session.complete(p, 32) for p in prompts] == one_gpu
