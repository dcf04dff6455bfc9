"""cuBLAS and the CUDA runtime from PyPI's nvidia-* wheels (the ``[cuda]`` extra).

A CUDA build's ggml backend links ``libcudart``, ``libcublasLt`` and ``libcublas`` by name. Where
the nvidia-* wheels are installed they are loaded first, from the wheels' folders, so the loader
resolves the backend's dependencies to them (as torch does): a machine needs only the driver. With
no such wheel installed, the system's libraries are found as before.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path

from . import _build_config

# in dependency order: cuBLAS needs cuBLASLt, both the runtime
_LIBRARIES = ("libcudart.so.{major}", "libcublasLt.so.{major}", "libcublas.so.{major}")


def _wheel_dirs(major: str) -> list[Path]:
    """The nvidia-* wheels' library folders: CUDA 13's share ``nvidia/cu13/lib``, CUDA 12's have
    one folder per component."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return []
    roots = [Path(p) for p in spec.submodule_search_locations]
    folders = (f"cu{major}", "cuda_runtime", "cublas")
    candidates = [r / folder / "lib" for r in roots for folder in folders]
    return [d for d in candidates if d.is_dir()]


def preload(package_dir: Path) -> tuple[str, ...]:
    """Load the CUDA libraries this build links from the nvidia-* wheels, where installed.

    Returns the paths loaded: none for a build without CUDA, off Linux, or without the wheels.
    """
    try:
        config = _build_config.read(package_dir)
    except FileNotFoundError:  # not an installed build
        return ()
    major = str(config.get("cuda_major") or "")
    if not major or not sys.platform.startswith("linux"):
        return ()
    dirs = _wheel_dirs(major)
    loaded: list[str] = []
    for pattern in _LIBRARIES:
        name = pattern.format(major=major)
        path = next((d / name for d in dirs if (d / name).is_file()), None)
        if path is None:
            continue
        ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        loaded.append(str(path))
    return tuple(loaded)
