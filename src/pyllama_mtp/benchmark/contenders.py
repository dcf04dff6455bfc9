"""The benchmark's contenders, each timed on the same GGUF pair and prompts.

- ours: :class:`~pyllama_mtp.MtpSession` alone (k = 0) and with the drafter (k > 0), in process;
- upstream: the pinned tree's ``llama-speculative-simple --spec-type draft-mtp``, as a child process,
  and its ``llama-server`` (what users run), as it ships and with backend sampling (``-bs``);
- hf: Hugging Face ``generate``, alone and with ``assistant_model`` (bf16 on a GPU, f32 on the CPU),
  on the checkpoints the GGUFs were converted from.

Every function returns result rows (see :mod:`.report` for the keys).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fixtures import Pair
from ..model import Model
from ..session import MtpSession, Pipeline, Sampling
from ..trace import read_trace
from ._serving import free_port, post_json, serving

PROMPTS = (
    "the quick brown fox jumps over the lazy dog",
    "speculative decoding with a drafter head and a target model",
    "9 8 7 6 5 4 3 2 1",
)
N_CTX = 2048


@dataclass(frozen=True)
class Run:
    """What every contender of one (shape, regime) cell shares."""

    shape: str
    regime: str
    pair: Pair
    temperature: float  # 0: greedy
    n_predict: int
    repeats: int
    seed: int = 1
    # the drifting regime: spans of (tokens, temperature) in one generation (empty: one span at
    # ``temperature``); each span samples with its own seed, the same for every contender
    schedule: tuple[tuple[int, float], ...] = ()

    def span_seed(self, repeat: int, span: int) -> int:
        return self.seed + 1000 * repeat + span

    def row(self, name: str, contender: str, k: int, **values: Any) -> dict[str, Any]:
        return {"name": name, "contender": contender, "shape": self.shape, "regime": self.regime, "k": k, **values}


def _ttft_ours(session: MtpSession, prompt: str, n_predict: int) -> float:
    session.reset()
    t0 = time.perf_counter()
    steps = session.steps(prompt, n_predict)
    next(steps)
    ttft = time.perf_counter() - t0
    steps.close()
    return 1e3 * ttft


def decode_rate(session: MtpSession, prompt: str, n_predict: int) -> float:
    """Tokens/s of one generation, from the session's own counters (decode steps only)."""
    before = session.stats
    session.complete(prompt, n_predict)
    after = session.stats
    seconds = after.generate_seconds - before.generate_seconds
    return (after.n_generated - before.n_generated) / seconds if seconds > 0 else 0.0


def _drifting_rate(session: MtpSession, run: Run, prompt: str, repeat: int) -> float:
    """Tokens/s of one drifting generation: each span continues the last (its KV reused), with
    the span's sampling; decode steps only, from the session's own counters."""
    ids = session.target.tokenize(prompt)
    before = session.stats
    for i, (n, temperature) in enumerate(run.schedule):
        session.set_sampling(Sampling(temperature=temperature, seed=run.span_seed(repeat, i)))
        ids += session.complete(ids, n)
    after = session.stats
    seconds = after.generate_seconds - before.generate_seconds
    return (after.n_generated - before.n_generated) / seconds if seconds > 0 else 0.0


def ours(
    run: Run,
    target: Model,
    drafter: Model,
    k: int,
    fused: bool = True,
    pipeline: Pipeline = "sync",
    auto: bool = False,
    prefix: str = "ours",
    exact: bool = False,
) -> dict[str, Any]:
    """Our session: target alone at k = 0, draft-MTP with ``k`` draft tokens otherwise.

    ``fused=False`` drafts with upstream's per-token loop instead of one fused drafter graph
    (row ``ours-draft-mtp-k{k}-loop``), to show what fusing buys side by side;
    ``pipeline="async"`` queues each next draft behind the verify pass (``...-async``);
    ``auto=True`` lets each step choose how many of at most ``k`` drafts to verify
    (``ours-draft-mtp-auto``). ``prefix`` names the row's contender and starts its name (the
    harness's ``--rpc`` rows are ``ours-rpc-...``, over a target split across RPC servers).
    ``exact=True`` computes verify rows bitwise as one-token decodes (the ``--exact`` rows).
    """
    sampled = run.temperature > 0 and not run.schedule  # a drifting run sets each span's sampling
    sampling = Sampling(temperature=run.temperature, seed=run.seed) if sampled else Sampling()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.ndjson" if k else None
        with MtpSession(
            target,
            drafter if k else None,
            n_draft="auto" if auto else k,
            max_draft=k,
            n_ctx=N_CTX,
            sampling=sampling,
            trace=trace,
            fused_draft=fused,
            pipeline=pipeline,
            exact=exact,
        ) as session:
            session.complete(PROMPTS[0], 8)  # warm-up: graph allocation, first touch of the weights
            ttft = statistics.median(_ttft_ours(session, p, run.n_predict) for p in PROMPTS)
            session.reset()
            rates = []
            for repeat in range(run.repeats):
                for prompt in PROMPTS:
                    if run.schedule:
                        rates.append(_drifting_rate(session, run, prompt, repeat))
                    else:
                        rates.append(decode_rate(session, prompt, run.n_predict))
            stats = session.stats
        timing = read_trace(trace) if trace is not None else None
    name = f"{prefix}-baseline" if k == 0 else f"{prefix}-draft-mtp-k{k}" + ("" if fused else "-loop")
    name += "-async" if pipeline == "async" else ""
    name = f"{prefix}-draft-mtp-auto" if auto else name
    return run.row(
        name,
        prefix,
        k,
        tokens_per_s=statistics.median(rates),
        ttft_ms=ttft,
        acceptance=stats.acceptance_rate if k else None,
        draft_step_ms=timing.mean_draft_ms_per_token if timing else None,
        verify_step_ms=timing.mean_verify_ms if timing else None,
        tokens=stats.n_generated,
        # the adaptive row's choices: steps at each draft length, shadow drafts among the calls
        **({"steps_by_k": list(stats.steps_by_draft_length), "drafter_calls": stats.drafter_calls} if auto else {}),
    )


_ENCODED = re.compile(r"encoded\s+(\d+) tokens in\s+([\d.]+) seconds")
_DECODED = re.compile(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds")
_DRAFTED = re.compile(r"n_drafted\s*=\s*(\d+)")
_ACCEPT = re.compile(r"n_accept\s*=\s*(\d+)")


def _field(pattern: re.Pattern[str], log: str, what: str) -> re.Match[str]:
    m = pattern.search(log)
    if m is None:
        raise RuntimeError(f"upstream's log has no {what} line:\n{log[-2000:]}")
    return m


def _run_upstream(cmd: list[str], attempts: int = 5) -> str:
    """Upstream's log; its stats lines come from an asynchronous logger that now and then loses
    them at exit (seen on 2 CPU cores; three runs in a row once, with the cores loaded by other
    work), so a run without them is repeated."""
    for _ in range(attempts):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        log = res.stdout + res.stderr
        if res.returncode != 0:
            raise RuntimeError(f"upstream run failed ({res.returncode}): {' '.join(cmd)}\n{log[-3000:]}")
        if _DECODED.search(log) and _ACCEPT.search(log):
            return log
    return log  # _field says what is missing


def _split_flags(devices: Sequence[str]) -> list[str]:
    """llama.cpp's flags for the harness's ``devices``: the target split by layer across them, the
    drafter on the last one."""
    if not devices:
        return []
    return ["-dev", ",".join(devices), "-sm", "layer", "-devd", devices[-1]]


def upstream(run: Run, binary: str | Path, k: int, n_gpu_layers: int, devices: Sequence[str] = ()) -> dict[str, Any]:
    """Upstream's own draft-MTP loop on the same files, sampling exactly as our session does
    (each pass over the prompts with the next seed, as our session's random stream runs on).

    Its log gives the prompt pass and the decode time; its time to first token is the prompt
    pass plus one mean step (a step emits its accepted drafts + 1 tokens).
    """
    rates, ttfts, drafted, accepted, tokens = [], [], 0, 0, 0
    for repeat in range(run.repeats):
        for prompt in PROMPTS:
            cmd = [
                str(binary), "-m", str(run.pair.target_gguf), "-md", str(run.pair.drafter_gguf),
                "--spec-type", "draft-mtp", "--spec-draft-n-max", str(k), "-n", str(run.n_predict), "-p", prompt,
                "-c", str(N_CTX), "-ngl", str(n_gpu_layers), "-ngld", str(n_gpu_layers),
                "--temp", str(run.temperature), "--top-k", "0", "--top-p", "1.0", "--min-p", "0",
                "-s", str(run.seed + repeat), *_split_flags(devices),
            ]  # fmt: skip
            log = _run_upstream(cmd)
            decoded = _field(_DECODED, log, "decoded")
            n, seconds = int(decoded.group(1)), float(decoded.group(2))
            enc_seconds = float(_field(_ENCODED, log, "encoded").group(2))
            n_drafted = int(_field(_DRAFTED, log, "n_drafted").group(1))
            n_accept = int(_field(_ACCEPT, log, "n_accept").group(1))
            steps = max(1, n - n_accept)
            rates.append(n / seconds)
            ttfts.append(1e3 * (enc_seconds + seconds / steps))
            tokens += n
            drafted += n_drafted
            accepted += n_accept
    return run.row(
        f"upstream-draft-mtp-k{k}",
        "upstream",
        k,
        tokens_per_s=statistics.median(rates),
        ttft_ms=statistics.median(ttfts),
        acceptance=accepted / drafted if drafted else 0.0,
        tokens=tokens,
    )


def upstream_server(
    run: Run, binary: str | Path, k: int, n_gpu_layers: int, *, backend_sampling: bool, devices: Sequence[str] = ()
) -> dict[str, Any]:
    """Upstream's ``llama-server`` from the same tree: one slot, ``/completion`` per prompt, timed by
    the server itself (``timings.predicted_per_second``). ``backend_sampling`` adds ``-bs`` and
    ``--spec-draft-backend-sampling``: target and drafter rows sampled inside their graphs, upstream's
    fastest configuration. Each pass over the prompts samples with the next seed, as :func:`upstream`.
    """
    port = free_port()
    cmd = [
        str(binary), "-m", str(run.pair.target_gguf), "-c", str(N_CTX), "-ngl", str(n_gpu_layers), "-np", "1",
        "--host", "127.0.0.1", "--port", str(port), "--no-webui", "--no-warmup", *_split_flags(devices),
    ]  # fmt: skip
    if k:
        cmd += ["-md", str(run.pair.drafter_gguf), "-ngld", str(n_gpu_layers)]
        cmd += ["--spec-type", "draft-mtp", "--spec-draft-n-max", str(k)]
    if backend_sampling:
        cmd += ["-bs", *(["--spec-draft-backend-sampling"] if k else [])]
    rates, ttfts, drafted, accepted, tokens = [], [], 0, 0, 0
    with serving(cmd, port) as base:

        def complete(prompt: str | list[int], n: int, temperature: float, seed: int) -> dict[str, Any]:
            body = {
                "prompt": prompt, "n_predict": n, "temperature": temperature, "top_k": 0, "top_p": 1.0,
                "min_p": 0.0, "seed": seed, "cache_prompt": bool(run.schedule), "ignore_eos": True,
                "return_tokens": True,
            }  # fmt: skip
            return post_json(f"{base}/completion", body)

        complete(PROMPTS[0], 8, 0.0, run.seed)  # warm-up, as ours: graph allocation, first touch of the weights
        for repeat in range(run.repeats):
            for prompt in PROMPTS:
                # one span, or the drifting regime's spans, each continuing the last
                spans = run.schedule or ((run.n_predict, run.temperature),)
                ids: list[int] = post_json(f"{base}/tokenize", {"content": prompt, "add_special": True})["tokens"]
                n = n_accept = 0
                gen_ms, first_ms = 0.0, 0.0
                for i, (n_span, temperature) in enumerate(spans):
                    seed = run.span_seed(repeat, i) if run.schedule else run.seed + repeat
                    answer = complete(ids if run.schedule else prompt, n_span, temperature, seed)
                    t = answer["timings"]
                    n_span_accept = int(t.get("draft_n_accepted", 0))
                    if i == 0:  # time to first token: the prompt pass plus one mean step of the first span
                        steps = max(1, int(t["predicted_n"]) - n_span_accept)
                        first_ms = float(t["prompt_ms"]) + float(t["predicted_ms"]) / steps
                    ids += [int(tok) for tok in answer.get("tokens", [])]
                    n += int(t["predicted_n"])
                    n_accept += n_span_accept
                    drafted += int(t.get("draft_n", 0))
                    gen_ms += float(t["predicted_ms"])
                rates.append(1e3 * n / gen_ms if gen_ms > 0 else 0.0)
                ttfts.append(first_ms)
                tokens += n
                accepted += n_accept
    name = f"upstream-server{'-bs' if backend_sampling else ''}-k{k}"
    return run.row(
        name,
        "upstream",
        k,
        tokens_per_s=statistics.median(rates),
        ttft_ms=statistics.median(ttfts),
        acceptance=(accepted / drafted if drafted else 0.0) if k else None,
        tokens=tokens,
    )


def hf(run: Run, prompts: Sequence[list[int]], ks: Sequence[int], device: str) -> list[dict[str, Any]]:
    """Hugging Face ``generate``, target alone and assisted with k draft tokens (greedy only).

    HF's assisted generation does not report its acceptance, so those rows carry none.
    """
    import torch
    from transformers import Gemma4AssistantForCausalLM, Gemma4ForCausalLM

    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    # transformers' stubs type .to() as a decorator's wrapper; these are plain modules
    loaded: dict[str, Any] = {
        "target": Gemma4ForCausalLM.from_pretrained(run.pair.target_hf, dtype=dtype),
        "drafter": Gemma4AssistantForCausalLM.from_pretrained(run.pair.drafter_hf, dtype=dtype),
    }
    models = {name: model.to(device).eval() for name, model in loaded.items()}
    loaded.clear()

    def timed(ids: list[int], n: int, k: int) -> tuple[float, int]:
        kwargs: dict[str, Any] = {}
        if k:
            drafter = models["drafter"]
            drafter.generation_config.num_assistant_tokens = k
            drafter.generation_config.num_assistant_tokens_schedule = "constant"
            kwargs["assistant_model"] = drafter
        inp = torch.tensor([ids], device=device)
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = models["target"].generate(
                inp, attention_mask=torch.ones_like(inp), max_new_tokens=n, do_sample=False, pad_token_id=0, **kwargs
            )
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, out.shape[1] - len(ids)

    rows = []
    try:
        for k in (0, *ks):
            timed(prompts[0], 8, k)  # warm-up
            ttft = statistics.median(1e3 * timed(ids, 1, k)[0] for ids in prompts)
            rates = []
            for _ in range(run.repeats):
                for ids in prompts:
                    seconds, n = timed(ids, run.n_predict, k)
                    rates.append(n / seconds)
            name = "hf-baseline" if k == 0 else f"hf-assisted-k{k}"
            rows.append(run.row(name, "hf", k, tokens_per_s=statistics.median(rates), ttft_ms=ttft, acceptance=None))
    finally:
        models.clear()
        if device != "cpu":
            torch.cuda.empty_cache()
    return rows
