"""Speaker segmentation (pyannote segmentation-3.0 shape) on the patched build's ggml graph."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._gguf_file import check_gguf_file
from ._native import check, ffi, lib
from ._resource import NativeResource
from .errors import InvalidAudioError


def powerset_classes(n_speakers: int = 3, max_per_frame: int = 2) -> list[tuple[int, ...]]:
    """The speaker set of each class, in pyannote's powerset order: {}, {0}, {1}, {2}, {0,1}, ..."""
    return [c for k in range(max_per_frame + 1) for c in itertools.combinations(range(n_speakers), k)]


def to_speakers(
    log_probs: npt.NDArray[np.float32], n_speakers: int = 3, max_per_frame: int = 2
) -> npt.NDArray[np.int8]:
    """Per-frame powerset log-probabilities ``(frames, classes)`` -> speaker activity ``(frames, n_speakers)``.

    Each frame takes its most likely class; a speaker is active (1) when that class contains it.
    """
    classes = powerset_classes(n_speakers, max_per_frame)
    if log_probs.ndim != 2 or log_probs.shape[1] != len(classes):
        raise ValueError(f"expected (frames, {len(classes)}) log-probabilities, got shape {log_probs.shape}")
    mapping = np.zeros((len(classes), n_speakers), dtype=np.int8)
    for i, speakers in enumerate(classes):
        mapping[i, list(speakers)] = 1
    activity: npt.NDArray[np.int8] = mapping[np.argmax(log_probs, axis=1)]
    return activity


@dataclass(frozen=True)
class Windows:
    """Log-probabilities of overlapping windows over a long recording."""

    starts: npt.NDArray[np.float64]  # (n_windows,) window start times, seconds
    log_probs: npt.NDArray[np.float32]  # (n_windows, frames, classes)
    window_s: float
    frame_s: float  # seconds between consecutive frames of a window


class Segmenter(NativeResource):
    """A segmentation GGUF (written by :mod:`pyllama_mtp.convert_segmentation`), ready to run.

    ``use_gpu`` runs on the first GPU of a CUDA/Metal build (the CPU otherwise); ``n_threads`` <= 0
    means every hardware thread. On the CPU, ``fused_lstm`` runs the SincNet blocks and each LSTM
    layer's projection and recurrence as vectorised ops of their own (faster, and a window's result
    is bitwise the same in any batch); ``False`` builds them from ggml ops, one group per time step,
    as on a GPU.
    """

    _kind = "segmenter"

    def __init__(
        self, path: str | os.PathLike[str], *, use_gpu: bool = True, n_threads: int = 0, fused_lstm: bool = True
    ) -> None:
        self.path = Path(path)
        check_gguf_file(self.path)
        params = lib.llama_mtp_segmenter_default_params()
        params.use_gpu = use_gpu
        params.n_threads = n_threads
        params.fused_lstm = fused_lstm
        out = ffi.new("struct llama_segmentation **")
        check(lib.llama_mtp_segmenter_load(os.fsencode(self.path), params, out))
        self._ptr = out[0]
        rate, classes = ffi.new("int32_t *"), ffi.new("int32_t *")
        lib.llama_mtp_segmenter_info(self._ptr, rate, classes)
        self.sample_rate: int = rate[0]
        self.n_classes: int = classes[0]

    def _free(self, ptr: Any) -> None:
        lib.llama_mtp_segmenter_free(ptr)

    def _check_rate(self, sample_rate: int | None) -> None:
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(f"the model runs at {self.sample_rate} Hz, got audio at {sample_rate} Hz (resample it)")

    def _check_frames(self, n: int) -> None:
        if n > int(lib.LLAMA_SEGMENTATION_MAX_FRAMES):
            raise ValueError(
                f"a window of {n} frames is longer than {lib.LLAMA_SEGMENTATION_MAX_FRAMES}: use segment_long()"
            )

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a window of ``n_samples`` samples (0: too short)."""
        return int(lib.llama_mtp_segmenter_n_frames(self.ptr, n_samples))

    def segment(self, waveform: npt.ArrayLike, sample_rate: int | None = None) -> npt.NDArray[np.float32]:
        """Frame log-probabilities ``(frames, n_classes)`` of one mono window.

        ``waveform`` is 1-D float32 audio at the model's sample rate (``sample_rate`` is checked,
        not resampled). A model without a front-end takes ``(frames, features)`` instead. NaN or
        infinite samples raise :class:`~pyllama_mtp.errors.InvalidAudioError`.
        """
        self._check_rate(sample_rate)
        x = np.ascontiguousarray(waveform, dtype=np.float32)
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        n = self.n_frames(x.size)
        if x.ndim not in (1, 2) or n < 1 or (x.ndim == 2 and x.shape[0] != n):
            raise ValueError(f"input of shape {x.shape} gives no frame (a window must be longer)")
        self._check_frames(n)
        out = np.empty((1, n, self.n_classes), dtype=np.float32)
        self._run(x, out, window=x.size, step=x.size)
        one: npt.NDArray[np.float32] = out[0]
        return one

    def _run(self, x: npt.NDArray[np.float32], out: npt.NDArray[np.float32], *, window: int, step: int) -> None:
        """``len(out)`` windows of ``window`` samples, one every ``step`` from the start of ``x`` (what
        the last reads past its end is zeros), as one batch into ``out`` ``(windows, frames, classes)``,
        C-contiguous. The library finds NaN or infinite samples in a sum it takes where the samples
        are (on a GPU, one reduction rather than a host pass over them per call)."""
        check(
            lib.llama_mtp_segmenter_run(
                self.ptr,
                ffi.from_buffer("float[]", x),
                x.size,
                window,
                step,
                len(out),
                ffi.from_buffer("float[]", out),
                out.size,
            ),
            invalid_arg=InvalidAudioError,
        )

    def segment_long(
        self,
        waveform: npt.ArrayLike,
        sample_rate: int | None = None,
        *,
        window_s: float = 10.0,
        step_s: float = 1.0,
        batch_size: int = 8,
        progress: Callable[[int, int], None] | None = None,
    ) -> Windows:
        """Slide a ``window_s`` window by ``step_s`` over a long recording (the last window is zero-padded).

        Windows run ``batch_size`` at a time in one graph (the weights are read once per LSTM step
        for the whole batch; memory grows with it: about 30 MB per 10 s window on the CPU). A
        window's result does not depend on the batch it ran in; a batch's windows are read where
        they lie in ``waveform``, not copied out one by one. ``progress(done, total)`` is called
        after each batch with the windows done so far. An empty waveform, or NaN or infinite
        samples, raise :class:`~pyllama_mtp.errors.InvalidAudioError`.
        """
        self._check_rate(sample_rate)
        if step_s <= 0 or window_s <= 0:
            raise ValueError("window_s and step_s must be positive")
        max_batch = int(lib.LLAMA_SEGMENTATION_MAX_WINDOWS)
        if not 1 <= batch_size <= max_batch:
            raise ValueError(f"batch_size must be in 1 .. {max_batch}, got {batch_size}")
        x = np.ascontiguousarray(waveform, dtype=np.float32).reshape(-1)
        if x.size == 0:
            raise InvalidAudioError("the waveform is empty")
        win, step = round(window_s * self.sample_rate), round(step_s * self.sample_rate)
        frames = self.n_frames(win)
        if frames < 1:
            raise ValueError(f"a window of {window_s} s gives no frame (a window must be longer)")
        self._check_frames(frames)
        n_windows = 1 + max(0, -(-(x.size - win) // step))
        out = np.empty((n_windows, frames, self.n_classes), dtype=np.float32)
        for first in range(0, n_windows, batch_size):
            n = min(batch_size, n_windows - first)
            # the batch's windows are read from the recording where they lie (no copy per window),
            # their results written where they belong
            self._run(x[first * step :], out[first : first + n], window=win, step=step)
            if progress is not None:
                progress(first + n, n_windows)
        return Windows(np.arange(n_windows) * step / self.sample_rate, out, window_s, window_s / frames)


__all__ = ["Segmenter", "Windows", "powerset_classes", "to_speakers"]
