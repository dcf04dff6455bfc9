"""The benchmark's result file: its schema, the speed-up model, the summary, the plot and the table.

A result is one JSON object (``SCHEMA_VERSION``)::

    schema      int, this module's SCHEMA_VERSION
    device      str, what ran it ("NVIDIA H100 80GB HBM3", "cpu: x86_64")
    commit      str | null, our commit
    llama_cpp_commit, backends, date (ISO), mode ("gpu" | "cpu"), n_predict, prompts
    shapes      {shape name: {target/drafter widths, layers, vocab, ...}}
    regimes     {regime name: {"temperature": float, "pair": "agree" | "random", "repeats": passes
                over the prompts per contender}}
    rows        [row], one per contender x shape x regime:
        name          "ours-baseline" | "ours-draft-mtp-k{k}" | "ours-draft-mtp-k{k}-loop" (our session
                      drafting with upstream's per-token loop instead of one fused graph)
                      | "ours-draft-mtp-k{k}-async" (our session with pipeline="async")
                      | "ours-draft-mtp-auto" (n_draft="auto", k = its max_draft: no model fields)
                      | "upstream-draft-mtp-k{k}" (llama-speculative-simple)
                      | "upstream-server-k{k}" | "upstream-server-bs-k{k}" (llama-server as it ships,
                      and with backend sampling: -bs, --spec-draft-backend-sampling; k = 0: alone)
                      | "hf-baseline" | "hf-assisted-k{k}"
                      | "ours-rpc-baseline" | "ours-rpc-draft-mtp-k{k}" (--rpc: the target split across
                      RPC servers, its last layers and the drafter local)
                      | "ours-rpc-remote-drafter-k{k}" (every target layer remote, the drafter's
                      attention too)
        contender     "ours" | "ours-rpc" | "upstream" | "hf"
        shape, regime, k (0 = target alone)
        tokens_per_s  decode tokens/s (median over prompts)
        ttft_ms       time to first token (prompt pass + first step), median over prompts
        acceptance    accepted / drafted draft tokens (null: target alone, or not reported)
        alpha         the per-position acceptance probability that acceptance implies for k: the a
                      with (a + a^2 + ... + a^k) / k = acceptance (every position of a block counts
                      as drafted, so acceptance < a for k > 1)
        speedup       tokens_per_s / the same contender's target-alone tokens_per_s (null if none)
        draft_step_ms drafter time per draft token (ours, from the acceptance trace; else null)
        verify_step_ms our target's time per verify pass: the decode of the k + 1 tokens and the
                      sampling of its rows (ours at k > 0, from the acceptance trace; else null)
        c             the drafter's time per draft token / our target's time per token, this shape:
                      the row's own (ours) or our fused drafter's (upstream: same drafter, same
                      GGUFs); null for k = 0 and HF
        ideal_speedup (1 - a^(k+1)) / ((1 - a)(1 + k c)) for a = the row's alpha
        efficiency    speedup / ideal_speedup
    summary     see ``SUMMARY_KEYS``; ratios on the first shape at the high-acceptance regime
    summaries   {shape: summary} for every shape (optional; files before it have the first only)
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

ROW_KEYS = (
    "name",
    "contender",
    "shape",
    "regime",
    "k",
    "tokens_per_s",
    "ttft_ms",
    "acceptance",
    "alpha",
    "speedup",
    "draft_step_ms",
    "verify_step_ms",
    "c",
    "ideal_speedup",
    "efficiency",
)
TOP_KEYS = (
    "schema",
    "device",
    "commit",
    "llama_cpp_commit",
    "backends",
    "date",
    "mode",
    "n_predict",
    "prompts",
    "shapes",
    "regimes",
    "rows",
    "summary",
)
SUMMARY_KEYS = (
    "shape",  # the shape the summary's figures come from
    "k",  # the draft length of the compared rows
    "draft_step_ms",  # our drafter's time per draft token (mean of its steps)
    "target_step_ms",  # our target-alone time per token
    "target_step_ms_q4km",  # the same for the e2b-q4 shape (a Q4_K_M target) when the run has it
    "verify4_over_step",  # a 4-token verify pass (k = 3, high acceptance) over target_step_ms
    "c",  # draft_step_ms / target_step_ms: the drafter's relative cost
    "acceptance_high",  # our measured acceptance (accepted / drafted) in the high-acceptance regime
    "alpha_high",  # ... as a per-position probability (see the rows' alpha)
    "speedup_high_acceptance",  # ours with the drafter / ours alone, high acceptance
    "ideal_speedup_high_acceptance",
    "efficiency_high_acceptance",  # measured / ideal speed-up
    "ours_over_upstream_high_acceptance",  # tokens/s, same GGUFs, same k, over upstream's best row at k
    "ours_over_upstream_low_acceptance",
    "upstream_best_high_acceptance",  # the name of that best upstream row
    "ours_over_upstream_best",  # {regime: ours at its best / upstream at its best, any k, target alone included}
    "ours_over_hf",  # ours / HF assisted generation (bf16 on GPUs), high acceptance
    "fused_over_loop_high_acceptance",  # ours / ours drafting with the per-token loop
    "loop_draft_step_ms",  # the per-token loop's drafter time per draft token
    "rpc",  # --rpc runs: {regime: split / local tokens/s alone and at k, drafter step local vs remote}; else null
    "async_over_sync_high_acceptance",  # ours with pipeline="async" / ours sync, same k, high acceptance
    "async_over_sync_low_acceptance",
    "auto_over_target_alone",  # {regime: ours with n_draft="auto" / ours alone}
    "auto_over_best_fixed_k",  # {regime: ... / the best of ours at a fixed k (0 included)}
)

HIGH, LOW = "agree", "random"


def ideal_speedup(acceptance: float, k: int, c: float) -> float:
    """Expected speed-up of a k-token draft with i.i.d. acceptance a and relative drafter cost c.

    Tokens per step are (1 - a^(k+1)) / (1 - a) (k + 1 at a = 1); a step costs 1 + k c target steps.
    """
    if k <= 0:
        return 1.0
    a = min(max(acceptance, 0.0), 1.0)
    tokens = float(k + 1) if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)
    return tokens / (1.0 + k * max(c, 0.0))


def alpha_from_acceptance(acceptance: float, k: int) -> float:
    """The per-position acceptance probability a with (a + ... + a^k) / k = ``acceptance``."""
    if k <= 1 or acceptance <= 0.0 or acceptance >= 1.0:
        return min(max(acceptance, 0.0), 1.0)
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if sum(mid**i for i in range(1, k + 1)) / k < acceptance:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _find(rows: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(key) == value for key, value in match.items()):
            return row
    return None


_LOOP = re.compile(r".*-loop")  # ours drafting with upstream's loop: a study row, not a configuration


def _best(
    rows: Iterable[dict[str, Any]], *, exclude: re.Pattern[str] | None = None, **match: Any
) -> dict[str, Any] | None:
    """The fastest row matching ``match`` (None if none)."""
    found = [
        row
        for row in rows
        if all(row.get(key) == value for key, value in match.items())
        and (exclude is None or not exclude.fullmatch(row["name"]))
    ]
    return max(found, key=lambda row: row["tokens_per_s"]) if found else None


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if a is None or b is None or not a["tokens_per_s"] or not b["tokens_per_s"]:
        return None
    return float(a["tokens_per_s"] / b["tokens_per_s"])


def fill_model(rows: list[dict[str, Any]]) -> None:
    """Add speedup, ideal_speedup and efficiency to every row (in place).

    c is our drafter's measured cost per draft token over our target's per-token cost, for the
    row's shape; upstream's rows use the same c (same drafter, same GGUFs), so their efficiency
    shows what their loop loses on top of the arithmetic.
    """
    for row in rows:
        base_name = {"hf": "hf-baseline", "ours-rpc": "ours-rpc-baseline"}.get(row["contender"], "ours-baseline")
        base = _find(rows, name=base_name, shape=row["shape"], regime=row["regime"])
        row["speedup"] = _ratio(row, base)
        row.setdefault("draft_step_ms", None)
        row.setdefault("verify_step_ms", None)
        row["c"] = row["ideal_speedup"] = row["efficiency"] = None
        acc = row.get("acceptance")
        if row["name"] == "ours-draft-mtp-auto":  # its k varies by step: no one-k model fits it
            row["alpha"] = None
            continue
        row["alpha"] = alpha_from_acceptance(acc, row["k"]) if acc is not None else None
        # a row's own drafter time where it has one (ours), else our fused drafter's (upstream)
        ours = _find(rows, name=f"ours-draft-mtp-k{row['k']}", shape=row["shape"], regime=row["regime"])
        source = row if row.get("draft_step_ms") is not None else ours
        if row["k"] == 0 or base is None or source is None or source.get("draft_step_ms") is None:
            continue
        if row["acceptance"] is None or row["contender"] == "hf":
            continue
        row["c"] = source["draft_step_ms"] / (1e3 / base["tokens_per_s"])
        row["ideal_speedup"] = ideal_speedup(row["alpha"], row["k"], row["c"])
        if row["speedup"] is not None:
            row["efficiency"] = row["speedup"] / row["ideal_speedup"]


def _step_ms(row: dict[str, Any] | None) -> float | None:
    """A target-alone row's time per token, in ms."""
    return 1e3 / row["tokens_per_s"] if row and row["tokens_per_s"] else None


def summarize(rows: list[dict[str, Any]], shape: str, k: int = 3) -> dict[str, Any]:
    """The summary object: our figures on ``shape`` at draft length ``k``."""
    base = _find(rows, name="ours-baseline", shape=shape, regime=HIGH)
    ours_hi = _find(rows, name=f"ours-draft-mtp-k{k}", shape=shape, regime=HIGH)
    ours_lo = _find(rows, name=f"ours-draft-mtp-k{k}", shape=shape, regime=LOW)
    up_hi = _best(rows, shape=shape, regime=HIGH, contender="upstream", k=k)
    up_lo = _best(rows, shape=shape, regime=LOW, contender="upstream", k=k)
    hf_hi = _find(rows, name=f"hf-assisted-k{k}", shape=shape, regime=HIGH)
    loop_hi = _find(rows, name=f"ours-draft-mtp-k{k}-loop", shape=shape, regime=HIGH)
    async_hi = _find(rows, name=f"ours-draft-mtp-k{k}-async", shape=shape, regime=HIGH)
    async_lo = _find(rows, name=f"ours-draft-mtp-k{k}-async", shape=shape, regime=LOW)
    target_ms = _step_ms(base)
    verify4 = _find(rows, name="ours-draft-mtp-k3", shape=shape, regime=HIGH)
    verify4_ms = verify4["verify_step_ms"] if verify4 else None
    auto_alone: dict[str, float | None] = {}
    auto_best: dict[str, float | None] = {}
    best_vs_best: dict[str, float | None] = {}
    for regime in sorted({r["regime"] for r in rows if r["shape"] == shape}):
        ours_best = _best(rows, shape=shape, regime=regime, contender="ours", exclude=_LOOP)
        best_vs_best[regime] = _ratio(ours_best, _best(rows, shape=shape, regime=regime, contender="upstream"))
        auto = _find(rows, name="ours-draft-mtp-auto", shape=shape, regime=regime)
        fixed = [
            r
            for r in rows
            if r["shape"] == shape and r["regime"] == regime and r["contender"] == "ours"
            and (r["name"] == "ours-baseline" or re.fullmatch(r"ours-draft-mtp-k\d+", r["name"]))
        ]  # fmt: skip
        alone = _find(rows, name="ours-baseline", shape=shape, regime=regime)
        auto_alone[regime] = _ratio(auto, alone)
        auto_best[regime] = _ratio(auto, max(fixed, key=lambda r: r["tokens_per_s"])) if fixed else None
    draft_ms = ours_hi["draft_step_ms"] if ours_hi else None
    rpc: dict[str, dict[str, float | None]] = {}
    for regime in sorted({r["regime"] for r in rows if r["shape"] == shape and r["contender"] == "ours-rpc"}):
        split_k = _find(rows, name=f"ours-rpc-draft-mtp-k{k}", shape=shape, regime=regime)
        remote = _find(rows, name=f"ours-rpc-remote-drafter-k{k}", shape=shape, regime=regime)
        rpc[regime] = {
            "alone_over_local": _ratio(_find(rows, name="ours-rpc-baseline", shape=shape, regime=regime),
                                       _find(rows, name="ours-baseline", shape=shape, regime=regime)),
            "k_over_local": _ratio(split_k, _find(rows, name=f"ours-draft-mtp-k{k}", shape=shape, regime=regime)),
            "remote_drafter_over_local_drafter": _ratio(remote, split_k),
            "draft_step_ms_local_drafter": split_k["draft_step_ms"] if split_k else None,
            "draft_step_ms_remote_drafter": remote["draft_step_ms"] if remote else None,
        }  # fmt: skip
    return {
        "shape": shape,
        "k": k,
        "draft_step_ms": draft_ms,
        "target_step_ms": target_ms,
        "target_step_ms_q4km": _step_ms(_find(rows, name="ours-baseline", shape="e2b-q4", regime=HIGH)),
        "verify4_over_step": verify4_ms / target_ms if verify4_ms is not None and target_ms else None,
        "c": draft_ms / target_ms if draft_ms is not None and target_ms else None,
        "acceptance_high": ours_hi["acceptance"] if ours_hi else None,
        "alpha_high": ours_hi["alpha"] if ours_hi else None,
        "speedup_high_acceptance": ours_hi["speedup"] if ours_hi else None,
        "ideal_speedup_high_acceptance": ours_hi["ideal_speedup"] if ours_hi else None,
        "efficiency_high_acceptance": ours_hi["efficiency"] if ours_hi else None,
        "ours_over_upstream_high_acceptance": _ratio(ours_hi, up_hi),
        "ours_over_upstream_low_acceptance": _ratio(ours_lo, up_lo),
        "upstream_best_high_acceptance": up_hi["name"] if up_hi else None,
        "ours_over_upstream_best": best_vs_best,
        "ours_over_hf": _ratio(ours_hi, hf_hi),
        "fused_over_loop_high_acceptance": _ratio(ours_hi, loop_hi),
        "loop_draft_step_ms": loop_hi["draft_step_ms"] if loop_hi else None,
        "rpc": rpc or None,
        "async_over_sync_high_acceptance": _ratio(async_hi, ours_hi),
        "async_over_sync_low_acceptance": _ratio(async_lo, ours_lo),
        "auto_over_target_alone": auto_alone,
        "auto_over_best_fixed_k": auto_best,
    }


def validate(result: dict[str, Any]) -> None:
    """Raise ValueError unless ``result`` follows the schema (keys and value types)."""
    missing = [key for key in TOP_KEYS if key not in result]
    if missing:
        raise ValueError(f"result lacks {missing}")
    if result["schema"] != SCHEMA_VERSION:
        raise ValueError(f"schema {result['schema']} is not {SCHEMA_VERSION}")
    for i, row in enumerate(result["rows"]):
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"row {i} ({row.get('name')}) lacks {missing}")
        if row["shape"] not in result["shapes"] or row["regime"] not in result["regimes"]:
            raise ValueError(f"row {i} names an unknown shape or regime")
        for key in ("tokens_per_s", "ttft_ms"):
            if not isinstance(row[key], (int, float)) or not math.isfinite(row[key]) or row[key] <= 0:
                raise ValueError(f"row {i} ({row['name']}): {key} = {row[key]!r}")
        acc = row["acceptance"]
        if acc is not None and not 0.0 <= acc <= 1.0:
            raise ValueError(f"row {i} ({row['name']}): acceptance {acc} outside [0, 1]")
    missing = [key for key in SUMMARY_KEYS if key not in result["summary"]]
    if missing:
        raise ValueError(f"summary lacks {missing}")


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown_table(result: dict[str, Any]) -> str:
    """The rows as a Markdown table (as in docs/benchmarks.md)."""
    lines = [
        "| shape | regime | contender | k | tokens/s | speed-up | acceptance | alpha | ideal | efficiency | TTFT ms |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['shape']} | {r['regime']} | {r['name']} | {r['k']} | {r['tokens_per_s']:.1f} "
            f"| {_fmt(r['speedup'], '.2f')} | {_fmt(r['acceptance'], '.2f')} | {_fmt(r['alpha'], '.2f')} "
            f"| {_fmt(r['ideal_speedup'], '.2f')} "
            f"| {_fmt(r['efficiency'], '.2f')} | {r['ttft_ms']:.1f} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], out: str | Path) -> Path:
    """Speed-up over the contender's own target-alone decode vs acceptance, per contender (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(result["shapes"])
    fig, axes = plt.subplots(1, len(shapes), figsize=(5.5 * len(shapes), 4), squeeze=False)
    for ax, shape in zip(axes[0], shapes, strict=True):
        rows = [r for r in result["rows"] if r["shape"] == shape and r["k"] > 0 and r["speedup"] is not None]
        for name in sorted({r["name"] for r in rows}):
            pts = sorted((_alpha_of(rows, r), r["speedup"]) for r in rows if r["name"] == name)
            label = f"{name} (at our alpha)" if rows and name.startswith("hf-") else name
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ours = [r for r in rows if r["contender"] == "ours" and r["c"] is not None]
        for k in sorted({r["k"] for r in ours}):
            c = statistics.mean(r["c"] for r in ours if r["k"] == k)
            xs = [i / 50 for i in range(51)]
            ax.plot(xs, [ideal_speedup(x, k, c) for x in xs], linestyle="--", linewidth=1, label=f"ideal k={k}")
        ax.axhline(1.0, color="grey", linewidth=0.5)
        ax.set_xlabel("measured per-position acceptance (alpha)")
        ax.set_ylabel("speed-up over target alone")
        ax.set_title(f"{shape} on {result['device']}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def _alpha_of(rows: list[dict[str, Any]], row: dict[str, Any]) -> float:
    """A row's alpha; HF's assisted generation reports none, so its rows sit at ours for the same
    weights and k (greedy drafts of the same function are accepted alike)."""
    if row["alpha"] is not None:
        return float(row["alpha"])
    ours = _find(rows, contender="ours", shape=row["shape"], regime=row["regime"], k=row["k"])
    return float(ours["alpha"]) if ours and ours["alpha"] is not None else 0.0
