"""The acceptance the agreeing pair should show at a temperature (the mixed regime).

Every branch of the agreeing pair is zeroed, so its next token depends on the last token alone:
the target is a Markov chain over the vocabulary and the greedy drafter proposes the chain's most
likely next token. Simulating the draft -> verify -> accept loop on that chain gives the
distribution of a run's measured acceptance, independent of any decoding code, against which our
session's and upstream's measured values can be read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..context import Context
from ..model import Model


def one_token_logits(target: Model, tokens: Iterable[int]) -> np.ndarray:
    """``[len(tokens), n_vocab]`` next-token logits after each token alone, from a cleared context."""
    rows = []
    with Context(target, n_ctx=64, n_batch=8) as ctx:
        for token in tokens:
            ctx.clear()
            ctx.decode([token])
            rows.append(ctx.logits().astype(np.float64))
    return np.stack(rows)


def transition_logits(target: Model) -> np.ndarray:
    """``[n_vocab, n_vocab]``: the agreeing pair's next-token logits after every token."""
    return one_token_logits(target, range(target.n_vocab))


@dataclass(frozen=True)
class Chain:
    """The target as a Markov chain at one temperature, with the drafter's greedy proposals."""

    cdf: np.ndarray  # [n_vocab, n_vocab] cumulative next-token probabilities
    proposal: np.ndarray  # [n_vocab] the drafter's token after each token
    eog: np.ndarray  # [n_vocab] whether a token ends a generation

    @classmethod
    def from_logits(cls, logits: np.ndarray, temperature: float, eog_tokens: Sequence[int]) -> Chain:
        if temperature <= 0:
            raise ValueError(f"the chain is for sampling: the temperature must be > 0, got {temperature}")
        z = (logits - logits.max(axis=1, keepdims=True)) / temperature
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        eog = np.zeros(len(logits), dtype=bool)
        eog[list(eog_tokens)] = True
        return cls(np.cumsum(probs, axis=1), logits.argmax(axis=1), eog)

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One next token after each of ``states``."""
        u = rng.random(len(states)) * self.cdf[states, -1]
        tokens: np.ndarray = np.minimum((self.cdf[states] < u[:, None]).sum(axis=1), len(self.eog) - 1)
        return tokens


def simulate(
    chain: Chain, starts: Sequence[int], n_draft: int, n_predict: int, trials: int, seed: int = 0
) -> np.ndarray:
    """Measured acceptance (accepted / drafted over one generation per start token) of ``trials``
    independent runs, drafting as the session does: ``min(n_draft, tokens left - 1)`` tokens a step,
    the target's sample at each row, a step ending at the first mismatch or end-of-generation token.
    """
    rng = np.random.default_rng(seed)
    drafted = np.zeros(trials)
    accepted = np.zeros(trials)
    for start in starts:
        state = np.full(trials, start)
        left = np.full(trials, n_predict)
        active = left > 0
        while active.any():
            budget = np.where(active, np.minimum(n_draft, left - 1), 0)
            drafted += budget
            in_step = active.copy()
            row = 0
            while in_step.any():
                idx = np.nonzero(in_step)[0]
                token = chain.sample(state[idx], rng)
                hit = (row < budget[idx]) & (token == chain.proposal[state[idx]])
                accepted[idx] += hit
                state[idx] = token
                left[idx] -= 1
                ended = chain.eog[token] | (left[idx] == 0)
                active[idx[ended]] = False
                in_step[idx[~hit | ended]] = False
                row += 1
    return accepted / np.maximum(drafted, 1)
