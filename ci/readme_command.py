"""Print a command block of the README, as a user would copy it.

    python ci/readme_command.py main|tests [README.md]

The README marks the blocks CI runs with an HTML comment on the line before the fence
(``<!-- ci: main -->``), so CI runs what the README says rather than a copy of it.
"""

from __future__ import annotations

import sys
from pathlib import Path


def command(readme: str, name: str) -> str:
    lines = readme.splitlines()
    marker = f"<!-- ci: {name} -->"
    starts = [i for i, line in enumerate(lines) if line.strip() == marker]
    if len(starts) != 1:
        raise SystemExit(f"readme_command: {len(starts)} '{marker}' lines in the README, expected one")
    fence = starts[0] + 1
    if fence >= len(lines) or not lines[fence].startswith("```"):
        raise SystemExit(f"readme_command: no fenced block right after '{marker}'")
    body = []
    for line in lines[fence + 1 :]:
        if line.startswith("```"):
            break
        body.append(line)
    else:
        raise SystemExit(f"readme_command: the block after '{marker}' is not closed")
    text = "\n".join(body).strip()
    if not text:
        raise SystemExit(f"readme_command: the block after '{marker}' is empty")
    return text


if __name__ == "__main__":
    path = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("README.md")
    print(command(path.read_text(), sys.argv[1]))
