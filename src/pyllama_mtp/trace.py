"""Read an acceptance trace (NDJSON written by ``MtpSession(trace=...)`` or ``LLAMA_MTP_ACC_TRACE``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TraceSummary:
    """Counts and timings from a trace; the counts equal the session's ``stats``."""

    n_steps: int
    drafted_by_position: tuple[int, ...]
    accepted_by_position: tuple[int, ...]
    mean_draft_ms: float
    mean_verify_ms: float
    # the drafter's time per draft token: each step's draft time over its drafted tokens, averaged
    mean_draft_ms_per_token: float = 0.0

    @property
    def n_drafted(self) -> int:
        return sum(self.drafted_by_position)

    @property
    def n_accepted(self) -> int:
        return sum(self.accepted_by_position)

    @property
    def acceptance_rate(self) -> float:
        return self.n_accepted / self.n_drafted if self.n_drafted else 0.0

    @property
    def acceptance_by_position(self) -> tuple[float, ...]:
        pairs = zip(self.accepted_by_position, self.drafted_by_position, strict=True)
        return tuple(a / d if d else 0.0 for a, d in pairs)

    def format(self) -> str:
        lines = [
            f"steps {self.n_steps}, drafted {self.n_drafted}, accepted {self.n_accepted} "
            f"(acceptance {self.acceptance_rate:.3f})",
            f"mean per step: draft {self.mean_draft_ms:.3f} ms, verify {self.mean_verify_ms:.3f} ms",
            "position  drafted  accepted  rate",
        ]
        for i, (d, a) in enumerate(zip(self.drafted_by_position, self.accepted_by_position, strict=True)):
            lines.append(f"{i:>8}  {d:>7}  {a:>8}  {a / d if d else 0.0:.3f}")
        return "\n".join(lines)


def read_trace(path: str | os.PathLike[str]) -> TraceSummary:
    """Summarise a trace file; a malformed line raises ``ValueError`` naming its line number."""
    drafted: dict[int, int] = {}
    accepted: dict[int, int] = {}
    step_times: dict[int, tuple[int, int]] = {}
    per_token: list[float] = []  # a step's lines run pos 0, 1, ...: pos 0 opens the next step
    n_in_step, step_draft_us = 0, 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                ev = json.loads(line)
                pos, step = int(ev["pos"]), int(ev["step"])
                drafted[pos] = drafted.get(pos, 0) + 1
                accepted[pos] = accepted.get(pos, 0) + bool(ev["accepted"])
                step_times[step] = (int(ev["draft_us"]), int(ev["verify_us"]))
                if pos == 0 and n_in_step:
                    per_token.append(step_draft_us / n_in_step / 1e3)
                    n_in_step = 0
                n_in_step += 1
                step_draft_us = int(ev["draft_us"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: not an acceptance-trace event: {exc}") from exc
    if n_in_step:
        per_token.append(step_draft_us / n_in_step / 1e3)
    n = max(drafted, default=-1) + 1
    times = list(step_times.values())
    return TraceSummary(
        n_steps=len(step_times),
        drafted_by_position=tuple(drafted.get(i, 0) for i in range(n)),
        accepted_by_position=tuple(accepted.get(i, 0) for i in range(n)),
        mean_draft_ms=sum(t[0] for t in times) / len(times) / 1e3 if times else 0.0,
        mean_verify_ms=sum(t[1] for t in times) / len(times) / 1e3 if times else 0.0,
        mean_draft_ms_per_token=sum(per_token) / len(per_token) if per_token else 0.0,
    )


def plot(summary: TraceSummary, out: str | os.PathLike[str]) -> Path:
    """Acceptance rate by draft position as a PNG (needs matplotlib, in the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    rates = summary.acceptance_by_position
    ax.bar(range(len(rates)), rates)
    ax.set_xlabel("position in draft block")
    ax.set_ylabel("acceptance rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"acceptance {summary.acceptance_rate:.3f} over {summary.n_drafted} drafted tokens")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
