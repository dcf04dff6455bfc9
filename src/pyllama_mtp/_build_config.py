"""What the build wrote about itself: ``build_config.json`` beside this file (CMakeLists.txt)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

PACKAGE_DIR = Path(__file__).resolve().parent


def read(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """The build's facts: ``backend``, ``backend_note``, ``cuda_major``.

    Raises FileNotFoundError outside an installed build (a checkout's sources).
    """
    return cast(dict[str, str], json.loads((package_dir / "build_config.json").read_text()))
