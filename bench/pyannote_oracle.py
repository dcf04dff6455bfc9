"""The architecture oracle: pyannote.audio's own PyanNet, exported the way the published ONNX was.

PyanNet is instantiated with segmentation-3.0's hyper-parameters and random weights (scaled up
from PyTorch's init, which leaves every frame in one class), exported with
``torch.onnx.export(dynamo=False)``, converted with our converter and compared with onnxruntime
on random windows. This exercises the real graph: sinc filters computed from their band
parameters at run time, the filterbank conv inside an ``If``, instance norms, the monolithic
4-layer LSTM, the linear head and log-softmax.

Run by hand (pyannote.audio 4.x pulls ~50 packages, and its torchaudio wheel does not load
beside a CPU build of torch: PyanNet's forward never calls torchaudio, so it is stubbed):

    python -m venv --system-site-packages /tmp/pa && /tmp/pa/bin/pip install pyannote.audio
    /tmp/pa/bin/python bench/pyannote_oracle.py --out bench/results/<date>-pyannote-oracle.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

for name in ("torchaudio", "torchaudio.functional", "torchaudio.transforms", "torchaudio.io"):
    stub = mock.MagicMock()
    stub.__spec__ = mock.MagicMock()  # importlib.util.find_spec asks for it
    sys.modules.setdefault(name, stub)

import torch  # noqa: E402
from _common import git_commit, write_result  # noqa: E402
from pyannote.audio.core.task import Problem, Resolution, Specifications  # noqa: E402
from pyannote.audio.models.segmentation import PyanNet  # noqa: E402

from pyllama_mtp import seg_fixtures as sf  # noqa: E402
from pyllama_mtp.convert_segmentation import convert  # noqa: E402
from pyllama_mtp.segmentation import Segmenter  # noqa: E402


def pyannet(seed: int, gain: float) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = PyanNet(
        sincnet={"stride": 10},
        lstm={"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True, "dropout": 0.0},
        linear={"hidden_size": 128, "num_layers": 2},
    )
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=10.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("lstm", "linear", "classifier")):
                p.mul_(gain)
            elif "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--gain", type=float, default=3.0)
    parser.add_argument("--cpu", action="store_true", help="run our side on the CPU even on a GPU build")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, gguf_path = Path(tmp) / "pyannet.onnx", Path(tmp) / "pyannet.gguf"
        model = pyannet(seed=0, gain=args.gain)
        x = torch.zeros(1, 1, sf.WINDOW_SAMPLES)
        torch.onnx.export(
            model, (x,), str(onnx_path), input_names=["waveform"], output_names=["log_probs"], opset_version=17,
            dynamo=False, dynamic_axes={"waveform": {0: "batch", 2: "samples"}, "log_probs": {0: "batch", 1: "frames"}},
        )  # fmt: skip
        import onnx

        exported = onnx.load(str(onnx_path))
        convert(exported, gguf_path)
        reference = sf.onnx_session(exported)
        worst, agree, frames, classes = 0.0, 0, 0, np.zeros(7, dtype=int)
        with Segmenter(gguf_path, use_gpu=not args.cpu) as seg, torch.no_grad():
            for _ in range(args.windows):
                wav = (rng.standard_normal(sf.WINDOW_SAMPLES) * rng.uniform(0.01, 0.3)).astype(np.float32)
                ref = reference(wav[None, None, :])[0]
                ours = seg.segment(wav)
                torch_out = model(torch.from_numpy(wav)[None, None, :])[0].numpy()
                worst = max(worst, float(np.abs(ours - ref).max()))
                agree += int((ours.argmax(1) == ref.argmax(1)).sum())
                frames += len(ref)
                classes += np.bincount(ref.argmax(1), minlength=7)
                assert np.abs(torch_out - ref).max() < 1e-3  # the export is faithful to the torch model
    commit = git_commit()
    ops = sorted({n.op_type for n in exported.graph.node})
    result = {
        "what": "pyannote.audio PyanNet (segmentation-3.0 hparams, random weights) -> torch.onnx.export -> "
        "convert_segmentation -> ours vs onnxruntime",
        "commit": commit,
        "pyannote_audio": __import__("pyannote.audio").audio.__version__,
        "torch": torch.__version__,
        "windows": args.windows,
        "gain": args.gain,
        "onnx_ops": ops,
        "max_abs_error": worst,
        "argmax_agreement": agree / frames,
        "reference_class_histogram": classes.tolist(),
    }
    write_result(result, args.out)
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
