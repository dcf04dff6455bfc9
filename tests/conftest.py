"""Shared fixtures: the tiny random Gemma-4 pair (HF reference + converted GGUFs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyllama_mtp import Context, Model
from pyllama_mtp.fixtures import Pair, PairConfig, build_pair

from parity import EXACT


@pytest.fixture(scope="session")
def pair() -> Pair:
    return build_pair()


@pytest.fixture(scope="session")
def target(pair: Pair) -> Iterator[Model]:
    with Model(pair.target_gguf, n_gpu_layers=-1) as model:
        yield model


@pytest.fixture()
def ctx(target: Model) -> Iterator[Context]:
    with Context(target, n_ctx=256, **EXACT, n_threads=2) as context:
        yield context


@pytest.fixture(scope="session")
def drafter(pair: Pair) -> Iterator[Model]:
    with Model(pair.drafter_gguf, n_gpu_layers=-1) as model:
        yield model


@pytest.fixture(scope="session")
def agreeing_pair() -> Pair:
    """Target and drafter built to compute the same next-token function."""
    return build_pair(PairConfig(agree=True))
