"""Verify rows sampled in the target's graph (the default) against the host sampler.

The backend path reads one id per verify row instead of a vocab-wide logits row; it must choose
the same tokens as the host sampler from the same random stream, drafts accepted or rejected.
"""

from __future__ import annotations

import pytest

from pyllama_mtp import Model, MtpSession, Sampling
from pyllama_mtp.fixtures import Pair

from parity import EXACT, ON_GPU

PROMPTS = ["the quick brown fox", "hello world", "a b c d e f g", "drafter head target model", "z"]
N_NEW = 48

# (pair, sampling) cases where drafts are both accepted and rejected: the random pair agrees
# with its drafter at some greedy positions, the agreeing pair loses drafts to sampling
CASES = {
    "greedy": ("pair", Sampling()),  # argmax in the graph
    "temp": ("agreeing_pair", Sampling(temperature=2.0, seed=11)),
    "topk-topp": ("agreeing_pair", Sampling(temperature=2.5, top_k=40, top_p=0.9999, seed=5)),
}


def outputs(target: Model, drafter: Model | None, sampling: Sampling, backend: bool, n_draft: int) -> list[list[int]]:
    with MtpSession(
        target, drafter, n_draft=n_draft, n_ctx=256, n_threads=2, sampling=sampling, backend_sampling=backend, **EXACT
    ) as session:
        result = [session.complete(text, N_NEW) for text in PROMPTS]
        stats = session.stats
    assert stats.n_sampled_on_backend == (stats.n_generated if backend else 0)
    if n_draft:
        # both acceptance outcomes must occur, or the rollback of rejected rows' draws goes untested
        assert 0 < stats.n_accepted < stats.n_drafted, stats.format()
    return result


@pytest.mark.parametrize("case", CASES)
def test_backend_verify_sampling_equals_host(request: pytest.FixtureRequest, case: str) -> None:
    """Same seed, same tokens, drafts accepted and rejected."""
    pair_name, sampling = CASES[case]
    pair: Pair = request.getfixturevalue(pair_name)
    with Model(pair.target_gguf) as target, Model(pair.drafter_gguf) as drafter:
        host = outputs(target, drafter, sampling, backend=False, n_draft=3)
        assert outputs(target, drafter, sampling, backend=True, n_draft=3) == host


@pytest.mark.skipif(
    ON_GPU,
    reason="CUDA rounds a verify batch's logits apart from single-token decodes, so sampled tokens "
    "differ at distribution boundaries; the rollback is checked against host sampling of the same "
    "batches by test_backend_verify_sampling_equals_host",
)
def test_backend_sampling_keeps_the_plain_random_stream(agreeing_pair: Pair) -> None:
    """A rejected row's draw is given back: speculative sampled output equals plain sampling's.

    On the agreeing pair at temperature 2 about a quarter of the drafts are rejected, each
    after the backend drew a uniform for every row of its batch.
    """
    sampling = Sampling(temperature=2.0, seed=3)
    with Model(agreeing_pair.target_gguf) as target, Model(agreeing_pair.drafter_gguf) as drafter:
        plain = outputs(target, None, sampling, backend=False, n_draft=0)
        assert outputs(target, drafter, sampling, backend=True, n_draft=3) == plain
