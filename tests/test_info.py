"""Build facts reported by ``info``."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import pyllama_mtp


def test_info_reports_the_pinned_commit_and_the_cpu_backend() -> None:
    pin = json.loads(resources.files("pyllama_mtp").joinpath("upstream.json").read_text())
    info = pyllama_mtp.build_info()
    assert info.llama_cpp_commit == pin["llama_cpp_commit"]
    assert "CPU" in info.backends
    assert any(d.startswith("CPU") for d in info.devices)


def test_info_lists_exactly_the_patches_in_the_series() -> None:
    series = resources.files("pyllama_mtp").joinpath("patches_applied.txt").read_text().split()
    assert list(pyllama_mtp.build_info().patches) == series


def test_cli_info_prints_commit_backends_and_patches() -> None:
    res = subprocess.run([sys.executable, "-m", "pyllama_mtp", "info"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for label in ("llama.cpp commit:", "backends:", "patches applied:", "devices:"):
        assert label in res.stdout


def test_each_shared_library_is_installed_once() -> None:
    # a wheel holds no symlinks: a versioned library (libllama.so.0 -> libllama.so.0.5.0) is two files
    lib = resources.files("pyllama_mtp").joinpath("lib")
    names = sorted(p.name for p in lib.iterdir() if ".so" in p.name or p.name.endswith(".dylib"))
    assert names, "no shared libraries under pyllama_mtp/lib"
    stems = [name.split(".")[0] for name in names]
    assert len(stems) == len(set(stems)), names
    assert {"libllama", "libggml", "libggml-base", "libllama_mtp"} <= set(stems), names
