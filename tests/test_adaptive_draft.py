"""``n_draft="auto"``: each step verifies the number of drafts that pays best. The output must stay
the target's own (greedy: the baseline's tokens up to a near-tie; sampled: its distribution), the
choice must follow the drafter's acceptance, and a wrong drafter must cost almost nothing."""

from __future__ import annotations

import pytest

from pyllama_mtp import Model, MtpSession, MtpStats, Sampling
from pyllama_mtp.cli import main
from pyllama_mtp.fixtures import Pair

from parity import EXACT, equal_tokens

PROMPTS = [
    "the quick brown fox",
    "speculative decoding with a drafter",
    "hello world",
    "a b c d e f g",
    "jumps over the lazy dog 17",
    "drafter head target model",
    "the lazy dog and the quick fox jumps",
    "9 8 7 6 5 4 3 2 1",
]
N_NEW = 64


def _run(target: Model, drafter: Model | None, n_draft: int | str) -> tuple[list[list[int]], MtpStats]:
    """Greedy output for every prompt on one session (the tuner learns across them), and its counters."""
    kwargs = {"n_ctx": 512, "n_threads": 2, "exact": True, **EXACT}
    with MtpSession(target, drafter, n_draft=n_draft, max_draft=3, **kwargs) as session:  # type: ignore[arg-type]
        outs = [session.complete(target.tokenize(text), N_NEW) for text in PROMPTS]
        return outs, session.stats


def _same_as_baseline(target: Model, outs: list[list[int]], base: list[list[int]]) -> int:
    """Tokens compared with the baseline: with exact=True every one must be equal, near-tie or not."""
    runs = zip(PROMPTS, outs, base, strict=True)
    return sum(equal_tokens(target, target.tokenize(text), ours, ref) for text, ours, ref in runs)


def test_a_wrong_drafter_is_mostly_left_out_and_the_output_is_the_baselines(target: Model, drafter: Model) -> None:
    base, _ = _run(target, None, 0)
    outs, stats = _run(target, drafter, "auto")
    assert _same_as_baseline(target, outs, base) >= len(PROMPTS) * N_NEW // 2
    assert stats.acceptance_rate < 0.2  # the random pair: the drafter is wrong
    by_k = stats.steps_by_draft_length
    assert len(by_k) == 4 and sum(by_k) == stats.n_steps
    assert by_k[0] >= 0.75 * stats.n_steps, stats.format()  # the target alone, mostly ...
    assert stats.drafter_calls > sum(by_k[1:])  # ... with shadow drafts scored now and then


def test_an_agreeing_drafter_keeps_its_output_and_counts(agreeing_pair: Pair) -> None:
    # Whether drafting pays for this tiny pair depends on the machine's times (on a 2-core CPU a
    # 4-token verify costs about 3 one-token steps); tests/c/draft_tuner_test.cpp checks the choice
    # itself with made-up times. Here: the warm-up drafts the longest, and what is drafted is right.
    with Model(agreeing_pair.target_gguf) as target, Model(agreeing_pair.drafter_gguf) as drafter:
        base, _ = _run(target, None, 0)
        outs, stats = _run(target, drafter, "auto")
    assert outs == base
    assert stats.acceptance_rate > 0.95
    assert stats.steps_by_draft_length[3] >= 5
    assert sum(stats.steps_by_draft_length) == stats.n_steps
    assert stats.n_drafted == sum(k * n for k, n in enumerate(stats.steps_by_draft_length))


def test_sampling_with_auto_follows_the_target_distribution(agreeing_pair: Pair) -> None:
    """As tests/test_session.py's check: how often the sample repeats the previous token (the
    target's greedy choice at temperature 2) is the same with auto drafting as without.

    On a CPU the tiny pair's verify costs more than its drafts save, so a tuner left alone soon
    settles on k = 0 with shadow drafts. Each block therefore starts from a reset (the tuner's
    warm-up verifies its longest drafts) and then runs on what the tuner learned: both phases
    are sampled, each block with its own seed."""
    n_blocks, runs_per_block, n_new = 60, 5, 4
    rates = {}
    with Model(agreeing_pair.target_gguf) as target, Model(agreeing_pair.drafter_gguf) as drafter:
        prompt = target.tokenize("the quick brown fox")
        for n_draft in ("auto", 0):
            chosen = drafter if n_draft else None
            with MtpSession(target, chosen, n_draft=n_draft, n_ctx=256, **EXACT) as s:  # type: ignore[arg-type]
                hits = total = accepted = 0
                for block in range(n_blocks):
                    s.reset()
                    s.set_sampling(Sampling(temperature=2.0, seed=block + 1))
                    for _ in range(runs_per_block):
                        out = s.complete(prompt, n_new)
                        prev = [prompt[-1], *out[:-1]]
                        hits += sum(a == b for a, b in zip(out, prev, strict=True))
                        total += len(out)
                    accepted += s.stats.n_accepted
                rates[n_draft] = (hits / total, total, accepted)
    (p_auto, n_auto, accepted), (p_plain, n_plain, _) = rates["auto"], rates[0]
    assert accepted > n_blocks * runs_per_block, "drafts were rarely accepted: verification not exercised"
    pooled = (p_auto * n_auto + p_plain * n_plain) / (n_auto + n_plain)
    z = (p_auto - p_plain) / (pooled * (1 - pooled) * (1 / n_auto + 1 / n_plain)) ** 0.5
    assert abs(z) < 4, rates


def test_bad_settings_raise(target: Model, drafter: Model) -> None:
    with pytest.raises(ValueError, match="max_draft"):
        MtpSession(target, drafter, n_draft="auto", max_draft=99)
    with pytest.raises(ValueError, match="n_draft"):
        MtpSession(target, drafter, n_draft="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pipeline sync"):
        MtpSession(target, drafter, n_draft="auto", pipeline="async")


def test_cli_n_draft_auto(pair: Pair, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["generate", "-m", str(pair.target_gguf), "-md", str(pair.drafter_gguf), "-p", "the quick brown fox"]
    assert main([*args, "-n", "24", "--n-draft", "auto", "--max-draft", "2", "-c", "256"]) == 0
    err = capsys.readouterr().err
    assert "steps by draft length" in err and "0:" in err
    with pytest.raises(SystemExit):
        main([*args, "--n-draft", "often"])
