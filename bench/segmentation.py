"""Speaker segmentation throughput: our ggml graph vs onnxruntime, side by side in one run.

    python bench/segmentation.py [--windows 20] [--out bench/results/DATE-DEVICE-segmentation.json]

One random pyannote-shaped network (``seg_fixtures.pyannet``), 10 s windows at 16 kHz. Contenders:
ours on the CPU (1 thread; every thread, the default; every thread with the LSTM built from
ggml ops per step instead of the fused recurrence), ours on the GPU when the build has one,
onnxruntime's CPU execution provider (its default threads) and its CUDA provider when installed.
Each runs one warm-up window, then ``--windows`` timed ones; ratios are ours over onnxruntime CPU.
Schema (``schema`` = 1): ``device``, ``commit``, ``date``, ``rows`` (``name``, ``windows_per_s``,
``ms_per_window``, ``max_abs_error`` vs onnxruntime CPU), ``summary`` (``ours_cpu_over_ort_cpu``,
``ours_gpu_over_ort_cpu``, ``ours_gpu_over_ort_cuda``; null where a contender is absent).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import git_commit

from pyllama_mtp import build_info
from pyllama_mtp import seg_fixtures as sf
from pyllama_mtp.convert_segmentation import convert
from pyllama_mtp.segmentation import Segmenter


def _time(run: Callable[[np.ndarray], np.ndarray], windows: list[np.ndarray]) -> tuple[float, list[np.ndarray]]:
    run(windows[0])  # warm-up: graph build, allocation, kernel selection
    outs = []
    start = time.perf_counter()
    for w in windows:
        outs.append(run(w))
    return (time.perf_counter() - start) / len(windows), outs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--commit", help="the commit to record (default: git rev-parse HEAD)")
    args = parser.parse_args()

    import onnxruntime as ort

    rng = np.random.default_rng(0)
    windows = [(rng.standard_normal(sf.WINDOW_SAMPLES) * 0.1).astype(np.float32) for _ in range(args.windows)]
    model = sf.pyannet(seed=0, gain=3.0)
    info = build_info()
    on_gpu = any(b in info.backends for b in ("CUDA", "Metal"))
    rows: list[dict[str, Any]] = []
    reference: list[np.ndarray] = []

    def record(name: str, run: Callable[[np.ndarray], np.ndarray]) -> None:
        seconds, outs = _time(run, windows)
        error = max(float(np.abs(o - r).max()) for o, r in zip(outs, reference, strict=True)) if reference else 0.0
        rows.append(
            {"name": name, "windows_per_s": 1 / seconds, "ms_per_window": 1e3 * seconds, "max_abs_error": error}
        )
        print(f"{name:24s} {1e3 * seconds:8.1f} ms/window  {1 / seconds:7.2f} windows/s  max err {error:.1e}")

    ort_cpu = sf.onnx_session(model)
    reference.extend(ort_cpu(w[None, None, :])[0] for w in windows)
    record("onnxruntime-cpu", lambda w: ort_cpu(w[None, None, :])[0])
    if "CUDAExecutionProvider" in ort.get_available_providers():
        ort_cuda = sf.onnx_session(model, ("CUDAExecutionProvider", "CPUExecutionProvider"))
        record("onnxruntime-cuda", lambda w: ort_cuda(w[None, None, :])[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = convert(model, Path(tmp) / "seg.gguf")
        for name, kwargs in (
            ("ours-cpu-1-thread", {"use_gpu": False, "n_threads": 1}),
            (f"ours-cpu-{os.cpu_count()}-threads", {"use_gpu": False, "n_threads": 0}),  # the default
            (f"ours-cpu-{os.cpu_count()}-threads-ggml-ops", {"use_gpu": False, "fused_lstm": False}),
            *([("ours-gpu", {"use_gpu": True})] if on_gpu else []),
        ):
            with Segmenter(path, **kwargs) as seg:
                record(name, seg.segment)

    rate = {r["name"]: r["windows_per_s"] for r in rows}

    def ratio(a: str, b: str) -> float | None:
        return rate[a] / rate[b] if a in rate and b in rate else None

    commit = args.commit or git_commit()
    result = {
        "schema": 1,
        "device": ", ".join(info.devices),
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "model": "seg_fixtures.pyannet(seed=0, gain=3.0): SincNet 80/60/60, 4 BiLSTM x 128, 2 x linear 128, 7 classes",
        "rows": rows,
        "summary": {
            "ours_cpu_over_ort_cpu": ratio(f"ours-cpu-{os.cpu_count()}-threads", "onnxruntime-cpu"),
            "ours_gpu_over_ort_cpu": ratio("ours-gpu", "onnxruntime-cpu"),
            "ours_gpu_over_ort_cuda": ratio("ours-gpu", "onnxruntime-cuda"),
        },
    }
    print(json.dumps(result["summary"]))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
