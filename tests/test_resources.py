"""Native resources come back: create/free cycles keep the process's resident memory flat."""

from __future__ import annotations

import os
import sys

import pytest

from pyllama_mtp import Context, Model, MtpSession
from pyllama_mtp.fixtures import Pair

CYCLES = 1000
WARMUP = 50
# A leak of 16 KiB per cycle (one small buffer per Model/Context/session) would add 15 MiB.
BOUND_MIB = 12


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_create_free_cycles_keep_rss_flat(pair: Pair) -> None:
    start = 0.0
    for i in range(CYCLES):
        if i == WARMUP:
            start = rss_mib()
        with (
            Model(pair.target_gguf) as target,
            Model(pair.drafter_gguf) as drafter,
            Context(target, n_ctx=256) as ctx,
            MtpSession(target, drafter, n_ctx=256) as session,
        ):
            ctx.decode([2, 40])
            session.complete([2, 40, 41], 2)
    grown = rss_mib() - start
    assert grown < BOUND_MIB, f"RSS grew {grown:.1f} MiB over {CYCLES - WARMUP} cycles"
