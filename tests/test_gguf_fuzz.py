"""A corpus of malformed GGUFs: each must raise ModelLoadError naming the file, never kill the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gguf_corpus import arch_mismatches, corpus, with_u32_value

from pyllama_mtp import Model, ModelLoadError
from pyllama_mtp.convert import gguf_py_dir
from pyllama_mtp.fixtures import Pair

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import make_seeds  # noqa: E402

CHILD = """
import sys
import numpy as np
from pyllama_mtp import Context, Model, ModelLoadError, Segmenter
loader = {"model": Model, "context": Model, "segmenter": Segmenter}[sys.argv[1]]
for i, p in enumerate(sys.argv[2:]):
    print("BEGIN", i, flush=True)
    try:
        with loader(p) as m:
            if loader is Segmenter:  # what loads must also run (or refuse the window cleanly)
                try:
                    m.segment(np.zeros(16000, dtype=np.float32))
                except ValueError:
                    pass
            if sys.argv[1] == "context":  # and a model that loads must make a context
                Context(m, n_ctx=64).close()
            print("LOADED", i, flush=True)
    except ModelLoadError as e:
        print("RAISED", i, "NAMED" if p in str(e) else "UNNAMED", flush=True)
"""


def load_all(paths: list[str], loader: str = "model") -> tuple[dict[str, str], dict[str, int]]:
    """Load every file in child processes; a child that dies is restarted after its file."""
    outcome: dict[str, str] = {}
    crashes: dict[str, int] = {}
    todo = list(paths)
    while todo:
        cmd = [sys.executable, "-c", CHILD, loader, *todo]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        last = -1
        for line in res.stdout.splitlines():
            word, i, *rest = line.split()
            last = int(i)
            if word != "BEGIN":
                outcome[todo[last]] = word if word == "LOADED" else rest[0]
        if res.returncode == 0:
            break
        crashes[todo[last]] = res.returncode
        todo = todo[last + 1 :]
    return outcome, crashes


def check_corpus(source: Path, tmp_path: Path, loader: str, min_files: int, min_raised: float) -> None:
    """Every file of the corpus derived from ``source`` raises naming itself or loads; none kills
    the process; at least ``min_raised`` of them raise."""
    paths = []
    for name, data in corpus(source.read_bytes()):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        paths.append(str(path))
    assert len(paths) >= min_files
    outcome, crashes = load_all(paths, loader)
    assert not crashes, {Path(p).name: rc for p, rc in crashes.items()}
    unnamed = [Path(p).name for p, what in outcome.items() if what == "UNNAMED"]
    assert not unnamed, unnamed
    raised = sum(1 for what in outcome.values() if what == "NAMED")
    # most mutations break the file; the rest (a flipped bit in a value nothing checks) load
    assert raised >= min_raised * len(paths), (raised, len(paths))


@pytest.mark.parametrize("which", ["drafter", "target"])
def test_malformed_gguf_corpus(tmp_path: Path, pair: Pair, which: str) -> None:
    source = pair.drafter_gguf if which == "drafter" else pair.target_gguf
    check_corpus(source, tmp_path, "model", min_files=200, min_raised=0.6)


@pytest.mark.parametrize("which", ["drafter", "target"])
def test_tensors_not_matching_the_arch_are_named(tmp_path: Path, pair: Pair, which: str) -> None:
    source = pair.drafter_gguf if which == "drafter" else pair.target_gguf
    seen = []
    for name, data, tensor in arch_mismatches(source.read_bytes()):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        with pytest.raises(ModelLoadError) as err:
            Model(path)
        assert str(path) in str(err.value)
        assert f"'{tensor}'" in str(err.value), (name, str(err.value))
        seen.append(name)
    assert seen == ["tensor-missing", "tensor-shape-swapped", "tensor-extra"]


def test_shared_kv_layers_without_a_donor_raise(tmp_path: Path, pair: Pair) -> None:
    """A gemma4 file whose shared-KV layers have no earlier layer of their kind to reuse is refused
    at load (patch 0013), where the KV cache's reuse asserts used to abort making a context."""
    data = pair.target_gguf.read_bytes()
    n_layer = 4  # the fixture target: three sliding-window layers, then a full-attention one
    paths = []
    for shared in (1, 2, n_layer - 1, n_layer, 2**31):
        path = tmp_path / f"shared-{shared}.gguf"
        path.write_bytes(with_u32_value(data, "gemma4.attention.shared_kv_layers", shared))
        paths.append(str(path))
    control = tmp_path / "shared-0.gguf"
    control.write_bytes(with_u32_value(data, "gemma4.attention.shared_kv_layers", 0))
    outcome, crashes = load_all([*paths, str(control)], "context")
    assert not crashes, crashes
    assert outcome == {**dict.fromkeys(paths, "NAMED"), str(control): "LOADED"}
    with pytest.raises(ModelLoadError, match="layers share KV"):
        Model(paths[0])


def test_fuzzer_findings_raise(tmp_path: Path) -> None:
    """The inputs the GGUF fuzzer found (ci/fuzz.sh runs them under UBSan) fail cleanly here too."""
    make_seeds.main(gguf_py_dir(), tmp_path)
    paths = sorted(str(p) for p in tmp_path.glob("regress-*.gguf"))
    assert len(paths) == 4
    outcome, crashes = load_all(paths)
    assert not crashes
    assert set(outcome.values()) == {"NAMED"}, outcome


def test_malformed_segmentation_gguf_corpus(tmp_path: Path) -> None:
    """The same corpus against our segmentation loader (its own tensor and hyper-parameter checks)."""
    pytest.importorskip("onnx")
    from pyllama_mtp import seg_fixtures as sf
    from pyllama_mtp.convert_segmentation import convert

    source = convert(sf.pyannet(seed=0), tmp_path / "seg.gguf")
    check_corpus(source, tmp_path, "segmenter", min_files=100, min_raised=0.5)
