"""What the benchmark scripts share."""

from __future__ import annotations

import subprocess


def git_commit() -> str | None:
    """The checkout's short commit, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() or None
