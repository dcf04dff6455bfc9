"""Where a GPU batch of segmentation windows goes: the Python call, the C call, the upload.

    python bench/segmentation_breakdown.py [--windows 32] [--ncu]

One random pyannote-shaped network (``seg_fixtures.pyannet(seed=0, gain=3.0)``) on the first GPU,
``--windows`` 10-s windows end to end. Prints the best of 10 of ``segment_long`` over them (one
batch), of ``Segmenter._run`` alone (the C call), of ``segment`` (one window), and, where torch
is installed, the host-to-device copy of the batch's samples from pageable and from pinned memory.
``--ncu`` only builds the graph and runs the C call three times, for
``ncu --metrics gpu__time_duration.sum --print-summary per-kernel python bench/segmentation_breakdown.py --ncu``
(a kernel's share of a batch is its invocations / 3).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from pyllama_mtp import seg_fixtures as sf  # noqa: E402
from pyllama_mtp.convert_segmentation import convert  # noqa: E402
from pyllama_mtp.segmentation import Segmenter  # noqa: E402


def best_ms(run: Callable[[], object], repeats: int = 10) -> float:
    """The best of ``repeats`` timed calls after a warm-up, in milliseconds."""
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--ncu", action="store_true", help="run the C call three times and nothing else")
    args = parser.parse_args()
    n, window = args.windows, sf.WINDOW_SAMPLES
    x = (np.random.default_rng(0).standard_normal(n * window) * 0.1).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = convert(sf.pyannet(seed=0, gain=3.0), Path(tmp) / "seg.gguf")
        with Segmenter(path, use_gpu=True) as seg:
            out = np.empty((n, seg.n_frames(window), seg.n_classes), dtype=np.float32)
            if args.ncu:
                for _ in range(3):
                    seg._run(x, out, window=window, step=window)
                return
            window_s = window / seg.sample_rate
            long_ms = best_ms(lambda: seg.segment_long(x, window_s=window_s, step_s=window_s, batch_size=n))
            run_ms = best_ms(lambda: seg._run(x, out, window=window, step=window))
            print(f"segment_long, {n} windows: {long_ms:.3f} ms")
            print(f"Segmenter._run, {n} windows: {run_ms:.3f} ms")
            print(f"segment, one window: {best_ms(lambda: seg.segment(x[:window])):.3f} ms")
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        return
    pageable = torch.from_numpy(x)
    pinned = pageable.pin_memory()
    device = torch.empty_like(pageable, device="cuda")

    def upload(src: torch.Tensor) -> None:
        device.copy_(src)
        torch.cuda.synchronize()

    mb = x.nbytes / 1e6
    pageable_ms, pinned_ms = best_ms(lambda: upload(pageable)), best_ms(lambda: upload(pinned))
    print(f"host to device, {mb:.1f} MB: pageable {pageable_ms:.3f} ms, pinned {pinned_ms:.3f} ms")


if __name__ == "__main__":
    main()
