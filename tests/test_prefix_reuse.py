"""Prompt-prefix reuse in sessions on Gemma 4 (iswa caches: sliding-window cells may be evicted)."""

from __future__ import annotations

from pyllama_mtp import Model, MtpSession

from parity import EXACT, NEAR_TIE_SAME_BUILD, compare, own_margin


def test_session_reuses_a_shared_prefix(target: Model, drafter: Model) -> None:
    system = " ".join(f"{i} fox {chr(97 + i % 26)}" for i in range(30))  # ~120 tokens, past the window
    first_q, second_q = system + " the quick brown", system + " the lazy dog"
    with MtpSession(target, drafter, n_ctx=1024, **EXACT) as warm:
        warm.complete(first_q, 16)
        before = warm.stats
        reused_out = warm.complete(second_q, 32)
        after = warm.stats
    shared = len(target.tokenize(system))
    reused = after.n_prompt_reused - before.n_prompt_reused
    assert reused >= shared - 2, (reused, shared)
    with MtpSession(target, drafter, n_ctx=1024, **EXACT) as cold:
        cold_out = cold.complete(second_q, 32)
        assert cold.stats.n_prompt_reused == 0
    cmp = compare(reused_out, cold_out, [])
    if cmp.diverged_at is not None:  # prefix and suffix were decoded as two batches: a near-tie may flip
        cmp.margin = own_margin(target, target.tokenize(second_q) + cold_out[: cmp.diverged_at])
    assert cmp.ok(NEAR_TIE_SAME_BUILD), cmp


def test_continuing_a_conversation_reuses_the_generated_tokens(target: Model, drafter: Model) -> None:
    with MtpSession(target, drafter, n_ctx=1024, **EXACT) as session:
        prompt = target.tokenize("the quick brown fox")
        out = session.complete(prompt, 24)
        before = session.stats.n_prompt_reused
        session.complete(prompt + out + target.tokenize(" and", add_special=False), 8)
        # everything but the last emitted token (never decoded) comes from the cache
        assert session.stats.n_prompt_reused - before >= len(prompt) + len(out) - 2


def test_reset_and_errors_drop_the_reusable_cache(target: Model, drafter: Model) -> None:
    with MtpSession(target, drafter, n_ctx=512, **EXACT) as session:
        session.complete("the quick brown fox", 8)
        session.reset()
        session.complete("the quick brown fox", 8)
        assert session.stats.n_prompt_reused == 0


def test_no_reuse_when_the_window_cells_are_gone(target: Model, drafter: Model) -> None:
    """After a long first prompt the sliding-window cache has evicted the cells right before the
    shared prefix's end; reusing the prefix would attend to nothing there, so it is recomputed."""
    system = " ".join(f"{i} fox {chr(97 + i % 26)}" for i in range(10))
    filler = " ".join(f"{i} dog {chr(97 + i % 26)}" for i in range(60))
    with MtpSession(target, drafter, n_ctx=1024, n_batch=32, **EXACT) as warm:
        first = target.tokenize(system + " the quick brown " + filler)
        assert len(first) - len(target.tokenize(system)) > 150  # far past the 32-token window
        warm.complete(first, 8)
        before = warm.stats.n_prompt_reused
        second = warm.complete(system + " the lazy dog", 24)
        assert warm.stats.n_prompt_reused == before
    with MtpSession(target, drafter, n_ctx=1024, n_batch=32, **EXACT) as cold:
        assert compare(second, cold.complete(system + " the lazy dog", 24), []).diverged_at is None
