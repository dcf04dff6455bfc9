"""A corpus of malformed GGUFs: each must raise ModelLoadError naming the file, never kill the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gguf_corpus import corpus

from pyllama_mtp.fixtures import Pair

CHILD = """
import sys
from pyllama_mtp import Model, ModelLoadError
for i, p in enumerate(sys.argv[1:]):
    print("BEGIN", i, flush=True)
    try:
        with Model(p):
            print("LOADED", i, flush=True)
    except ModelLoadError as e:
        print("RAISED", i, "NAMED" if p in str(e) else "UNNAMED", flush=True)
"""


def load_all(paths: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """Load every file in child processes; a child that dies is restarted after its file."""
    outcome: dict[str, str] = {}
    crashes: dict[str, int] = {}
    todo = list(paths)
    while todo:
        res = subprocess.run([sys.executable, "-c", CHILD, *todo], capture_output=True, text=True, timeout=900)
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


@pytest.mark.parametrize("which", ["drafter", "target"])
def test_malformed_gguf_corpus(tmp_path: Path, pair: Pair, which: str) -> None:
    source = pair.drafter_gguf if which == "drafter" else pair.target_gguf
    paths = []
    for name, data in corpus(source.read_bytes()):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        paths.append(str(path))
    assert len(paths) >= 200
    outcome, crashes = load_all(paths)
    assert not crashes, {Path(p).name: rc for p, rc in crashes.items()}
    unnamed = [Path(p).name for p, what in outcome.items() if what == "UNNAMED"]
    assert not unnamed, unnamed
    raised = sum(1 for what in outcome.values() if what == "NAMED")
    # most mutations break the file; the rest (a flipped bit in a value nothing checks) load
    assert raised >= 0.6 * len(paths), (raised, len(paths))
