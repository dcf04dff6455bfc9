"""Speaker segmentation throughput: our ggml graph vs onnxruntime, side by side in one run.

    python bench/segmentation.py [--windows 32] [--batch 32] [--repeats 3] \
        [--out bench/results/DATE-DEVICE-segmentation.json]

One random pyannote-shaped network (``seg_fixtures.pyannet``), 10 s windows at 16 kHz, each
contender run one window at a time and ``--batch`` windows at a time. Contenders: ours on the CPU
(every thread, the default; 1 thread; every thread with the LSTM built from ggml ops per step
instead of the fused ops), ours on the GPU when the build has one, onnxruntime's CPU execution
provider (its default threads) and its CUDA provider when installed. Ours batched is
``Segmenter.segment_long`` over the windows laid end to end (``batch_size=--batch``);
onnxruntime batched is one ``[batch, 1, samples]`` input. Each runs one warm-up pass, then
``--repeats`` timed passes over the ``--windows`` windows, and keeps its best pass. Schema
(``schema`` = 3): ``device``, ``commit``, ``date``, ``command``, ``repeats``,
``rows`` (``name``, ``batch``, ``windows_per_s``, ``ms_per_window``, ``max_abs_error`` vs
onnxruntime CPU one window at a time), ``summary``: ``ours_cpu_over_ort_cpu`` (one window each),
``ours_cpu_batch_over_ort_cpu`` and ``ours_gpu_batch_over_ort_cpu`` (ours batched over
onnxruntime CPU at its faster batch), ``ours_gpu_over_ort_cpu``, ``ours_gpu_over_ort_cuda``; null
where a contender is absent.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# numpy's OpenBLAS threads spin between numpy calls and take cores from both contenders (seen at
# 2-3 % of a profile on 2 cores); the bench does no linear algebra in numpy
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import git_commit  # noqa: E402

from pyllama_mtp import build_info  # noqa: E402
from pyllama_mtp import seg_fixtures as sf  # noqa: E402
from pyllama_mtp.convert_segmentation import convert  # noqa: E402
from pyllama_mtp.segmentation import Segmenter  # noqa: E402


def _time(run: Callable[[np.ndarray], np.ndarray], batches: list[np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Seconds per window over ``batches`` ([n, samples] each) after a warm-up, the best of
    ``repeats`` passes (shared hosts slow a pass by up to 2x); the outputs of the last, stacked."""
    run(batches[0])  # warm-up: graph build, allocation, kernel selection
    best = float("inf")
    for _ in range(repeats):
        outs = []
        start = time.perf_counter()
        for b in batches:
            outs.append(run(b))
        best = min(best, time.perf_counter() - start)
    out = np.concatenate(outs)
    return best / len(out), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32, help="windows a batched row runs at a time")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per row; the best is kept")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--commit", help="the commit to record (default: git rev-parse HEAD)")
    args = parser.parse_args()
    if args.windows < 1 or not 1 <= args.batch <= args.windows or args.repeats < 1:
        parser.error("need --windows >= 1, 1 <= --batch <= --windows and --repeats >= 1")

    import onnxruntime as ort

    rng = np.random.default_rng(0)
    windows = (rng.standard_normal((args.windows, sf.WINDOW_SAMPLES)) * 0.1).astype(np.float32)
    singles = [windows[i : i + 1] for i in range(args.windows)]
    batches = [windows[i : i + args.batch] for i in range(0, args.windows, args.batch)]
    model = sf.pyannet(seed=0, gain=3.0)
    info = build_info()
    on_gpu = any(b in info.backends for b in ("CUDA", "Metal"))
    rows: list[dict[str, Any]] = []
    providers = {"onnxruntime-cpu": ("CPUExecutionProvider",)}
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers["onnxruntime-cuda"] = ("CUDAExecutionProvider", "CPUExecutionProvider")
    sessions = {name: sf.onnx_session(model, p) for name, p in providers.items()}
    reference = np.concatenate([sessions["onnxruntime-cpu"](w[:, None, :]) for w in singles])

    def record(name: str, batch: int, run: Callable[[np.ndarray], np.ndarray]) -> None:
        seconds, out = _time(run, singles if batch == 1 else batches, args.repeats)
        error = float(np.abs(out - reference).max())
        rows.append(
            {
                "name": name,
                "batch": batch,
                "windows_per_s": 1 / seconds,
                "ms_per_window": 1e3 * seconds,
                "max_abs_error": error,
            }
        )
        speed = f"{1e3 * seconds:8.1f} ms/window {1 / seconds:8.2f} windows/s"
        print(f"{name:32s} batch {batch:3d} {speed}  err {error:.1e}")

    for name, session in sessions.items():
        record(name, 1, lambda w, session=session: session(w[:, None, :]))
        record(name, args.batch, lambda w, session=session: session(w[:, None, :]))
    # onnxruntime's pool threads spin on after a run and took a core from the next contender (its
    # first pass 27 ms a window against 15): close the sessions before timing ours
    del session
    sessions.clear()
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp:
        path = convert(model, Path(tmp) / "seg.gguf")
        for name, kwargs in (
            (f"ours-cpu-{os.cpu_count()}-threads", {"use_gpu": False, "n_threads": 0}),  # the default
            ("ours-cpu-1-thread", {"use_gpu": False, "n_threads": 1}),
            (f"ours-cpu-{os.cpu_count()}-threads-ggml-ops", {"use_gpu": False, "fused_lstm": False}),
            *([("ours-gpu", {"use_gpu": True})] if on_gpu else []),
        ):
            with Segmenter(path, **kwargs) as seg:
                window_s = sf.WINDOW_SAMPLES / seg.sample_rate

                def batched(w: np.ndarray, seg: Segmenter = seg, window_s: float = window_s) -> np.ndarray:
                    result = seg.segment_long(w.reshape(-1), window_s=window_s, step_s=window_s, batch_size=len(w))
                    return result.log_probs

                record(name, 1, lambda w, seg=seg: seg.segment(w[0])[None])
                record(name, args.batch, batched)

    rate = {(r["name"], r["batch"]): r["windows_per_s"] for r in rows}
    ort_best = max(rate.get(("onnxruntime-cpu", 1), 0.0), rate.get(("onnxruntime-cpu", args.batch), 0.0))

    def ratio(a: tuple[str, int], b: tuple[str, int]) -> float | None:
        return rate[a] / rate[b] if a in rate and b in rate else None

    def over_ort_best(a: tuple[str, int]) -> float | None:
        return rate[a] / ort_best if a in rate else None

    ours_cpu = f"ours-cpu-{os.cpu_count()}-threads"
    commit = args.commit or git_commit()
    result = {
        "schema": 3,
        "device": ", ".join(info.devices),
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "command": "python bench/segmentation.py " + " ".join(sys.argv[1:]),
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "model": "seg_fixtures.pyannet(seed=0, gain=3.0): SincNet 80/60/60, 4 BiLSTM x 128, 2 x linear 128, 7 classes",
        "rows": rows,
        "summary": {
            "ours_cpu_over_ort_cpu": ratio((ours_cpu, 1), ("onnxruntime-cpu", 1)),
            "ours_cpu_batch_over_ort_cpu": over_ort_best((ours_cpu, args.batch)),
            "ours_gpu_over_ort_cpu": ratio(("ours-gpu", 1), ("onnxruntime-cpu", 1)),
            "ours_gpu_batch_over_ort_cpu": over_ort_best(("ours-gpu", args.batch)),
            "ours_gpu_over_ort_cuda": ratio(("ours-gpu", 1), ("onnxruntime-cuda", 1)),
        },
    }
    print(json.dumps(result["summary"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
