"""The build's backend choice (cmake/backend.cmake): CUDA only with a whole toolkit, a clear word otherwise."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent / "cmake_backend"
CMAKE = shutil.which("cmake")
pytestmark = pytest.mark.skipif(CMAKE is None, reason="no cmake on PATH")


def _configure(tmp_path: Path, backend: str | None, *, hide_nvcc: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYLLAMA_MTP_")}
    if backend is not None:
        env["PYLLAMA_MTP_BACKEND"] = backend
    if hide_nvcc:
        env.pop("CUDACXX", None)
        env.pop("CUDA_PATH", None)
        env["PATH"] = os.pathsep.join(d for d in env["PATH"].split(os.pathsep) if d and not (Path(d) / "nvcc").exists())
    build = tmp_path / f"build-{backend}-{hide_nvcc}"
    cmd = [str(CMAKE), "-S", str(PROJECT), "-B", str(build)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _has_nvcc() -> bool:
    return bool(os.environ.get("CUDACXX") or shutil.which("nvcc"))


def _has_cublas() -> bool:
    """Looked for independently of CMake: where toolkits and distributions put libcublas."""
    roots = [os.environ.get("CUDA_PATH", ""), "/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        roots.append(str(Path(os.path.realpath(nvcc)).parent.parent))
        # wrapper scripts (`exec /usr/local/cuda-13.0/bin/nvcc "$@"`) name the real one
        text = Path(nvcc).read_bytes()[:4096]
        if text.startswith(b"#!"):
            roots += [str(Path(w).parent.parent) for w in text.decode(errors="ignore").split() if w.endswith("/nvcc")]
    patterns = [f"{r}/{sub}/libcublas.so*" for r in roots if r for sub in ("lib64", "lib", "targets/*/lib")]
    patterns += ["/usr/lib/x86_64-linux-gnu/libcublas.so*", "/usr/lib/aarch64-linux-gnu/libcublas.so*"]
    return any(glob.glob(p) for p in patterns)


def test_cpu_when_asked(tmp_path: Path) -> None:
    res = _configure(tmp_path, "cpu")
    assert res.returncode == 0, res.stderr
    assert "chosen: cpu" in res.stderr
    assert "pyllama-mtp: building the cpu backend" in res.stderr


def test_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    res = _configure(tmp_path, "rocm")
    assert res.returncode != 0
    assert "must be cpu, cuda or metal, not 'rocm'" in res.stderr


def test_without_nvcc_auto_builds_the_cpu_backend_and_says_why(tmp_path: Path) -> None:
    res = _configure(tmp_path, None, hide_nvcc=True)
    assert res.returncode == 0, res.stderr
    assert "chosen: cpu" in res.stderr
    assert "building the CPU backend. CUDA not built: no nvcc" in res.stderr


def test_a_reconfigure_detects_again_and_keeps_the_reason(tmp_path: Path) -> None:
    """The GGML_CUDA=OFF the first configure wrote is not taken for a user's choice the second time."""
    first = _configure(tmp_path, None, hide_nvcc=True)
    again = _configure(tmp_path, None, hide_nvcc=True)
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert "building the CPU backend. CUDA not built: no nvcc" in again.stderr


def test_without_nvcc_an_explicit_cuda_fails_naming_nvcc(tmp_path: Path) -> None:
    res = _configure(tmp_path, "cuda", hide_nvcc=True)
    assert res.returncode != 0
    assert "PYLLAMA_MTP_BACKEND=cuda, but this CUDA toolkit lacks" in res.stderr and "nvcc" in res.stderr


@pytest.mark.skipif(not _has_nvcc() or _has_cublas(), reason="needs nvcc without cuBLAS (CI's machine kind)")
def test_nvcc_without_cublas_auto_builds_the_cpu_backend_naming_cublas(tmp_path: Path) -> None:
    res = _configure(tmp_path, None)
    assert res.returncode == 0, res.stderr
    assert "chosen: cpu" in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("pyllama-mtp: building the CPU backend")]
    assert len(lines) == 1 and "no cuBLAS (libcublas)" in lines[0] and "PYLLAMA_MTP_BACKEND=cuda" in lines[0]


@pytest.mark.skipif(not _has_nvcc() or _has_cublas(), reason="needs nvcc without cuBLAS (CI's machine kind)")
def test_nvcc_without_cublas_an_explicit_cuda_fails_naming_cublas(tmp_path: Path) -> None:
    res = _configure(tmp_path, "cuda")
    assert res.returncode != 0
    assert "cuBLAS (libcublas)" in res.stderr
    assert 'Target "ggml-cuda" links to' not in res.stderr  # refused before ggml's own CMake


@pytest.mark.skipif(not _has_nvcc() or not _has_cublas(), reason="needs a whole CUDA toolkit")
def test_a_whole_toolkit_builds_cuda(tmp_path: Path) -> None:
    res = _configure(tmp_path, None)
    assert res.returncode == 0, res.stderr
    assert "chosen: cuda" in res.stderr
