"""The CUDA wheel's libraries from the nvidia-* wheels (pyllama_mtp/_cuda_libs.py).

The real libraries are checked on a GPU (ci/gpu_check.sh GPU_CHECK_CUDA_WHEEL=1); here stand-ins
with the same names, in the folder layout CUDA 13's wheels use, show which files are loaded.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyllama_mtp import _cuda_libs

NAMES = ("libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13")


def package(tmp_path: Path, cuda_major: str) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "build_config.json").write_text(json.dumps({"backend": "x", "backend_note": "", "cuda_major": cuda_major}))
    return pkg


def fake_wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """site/nvidia/cu13/lib with three tiny shared libraries named as the real ones."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "the test suite builds the package, so a C compiler is there"
    lib = tmp_path / "site" / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    src = tmp_path / "stub.c"
    for name in NAMES:
        symbol = name.split(".")[0].replace("lib", "pyllama_mtp_stub_")
        src.write_text(f"int {symbol}(void) {{ return 13; }}\n")
        subprocess.run([compiler, "-shared", "-fPIC", f"-Wl,-soname,{name}", "-o", lib / name, src], check=True)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "nvidia", raising=False)
    importlib.invalidate_caches()
    return lib


def test_a_build_without_cuda_loads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_wheels(tmp_path, monkeypatch)
    assert _cuda_libs.preload(package(tmp_path, "")) == ()
    assert _cuda_libs.preload(tmp_path / "no-config") == ()  # not an installed build


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the nvidia-* wheels are Linux's")
def test_a_cuda_build_loads_the_wheels_libraries_in_dependency_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = fake_wheels(tmp_path, monkeypatch)
    loaded = _cuda_libs.preload(package(tmp_path, "13"))
    assert loaded == tuple(str(lib / name) for name in NAMES)
    mapped = Path("/proc/self/maps").read_text()
    assert all(path in mapped for path in loaded)


def test_another_major_version_is_not_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_wheels(tmp_path, monkeypatch)  # CUDA 13's wheels installed, a CUDA 12 build
    assert _cuda_libs.preload(package(tmp_path, "12")) == ()
