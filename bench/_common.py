"""What the benchmark scripts share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyllama_mtp.benchmark.harness import git_commit

__all__ = ["git_commit", "write_result"]


def write_result(result: dict[str, Any], out: str | Path | None) -> None:
    """Print the result as indented JSON, and write it to ``out`` when given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
