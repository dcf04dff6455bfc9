"""Apply, check and report the patch series in ``patches/series`` on a llama.cpp tree.

    python -m pyllama_mtp.patches status|check|apply [--tree vendor/llama.cpp] [--patches patches]

Stdlib only: the build runs this file directly. Each patch is applied with
``git apply`` (no repository needed); a patch whose reverse applies cleanly is
already in the tree and is skipped, so applying twice changes nothing. A patch
that neither applies nor is present fails with its name and git's rejected hunk.
The names of the applied patches are written to ``<tree>/.pyllama-mtp-patches``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

APPLIED_FILE = ".pyllama-mtp-patches"


class PatchError(RuntimeError):
    pass


def read_series(patch_dir: Path) -> list[Path]:
    series = patch_dir / "series"
    if not series.is_file():
        raise PatchError(f"{series} does not exist")
    names = [ln.split("#", 1)[0].strip() for ln in series.read_text().splitlines()]
    paths = [patch_dir / n for n in names if n]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise PatchError(f"{series} lists missing patches: {', '.join(missing)}")
    return paths


def _git_apply(tree: Path, patch: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = ["git", "apply", "--whitespace=nowarn", *flags, str(patch.resolve())]
    # The ceiling keeps git from resolving paths against an enclosing repository (ours).
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tree.resolve().parent)}
    return subprocess.run(cmd, cwd=tree, capture_output=True, text=True, env=env)


def patch_state(tree: Path, patch: Path) -> str:
    """'applied', 'applicable' or 'conflict' for one patch on ``tree``."""
    if _git_apply(tree, patch, "--check").returncode == 0:
        return "applicable"
    if _git_apply(tree, patch, "--reverse", "--check").returncode == 0:
        return "applied"
    return "conflict"


def _recorded(tree: Path, series: list[Path]) -> int:
    """How many patches at the head of ``series`` the tree's record says are in it.

    A patch's own reverse check cannot tell once a later patch edits next to its hunks, so the
    record of what we applied is trusted for the prefix it shares with the series.
    """
    record = tree / APPLIED_FILE
    names = record.read_text().split() if record.is_file() else []
    return len(names) if names == [p.name for p in series[: len(names)]] else 0


def status(tree: Path, patch_dir: Path) -> list[tuple[str, str]]:
    series = read_series(patch_dir)
    n_recorded = _recorded(tree, series)
    return [(p.name, "applied" if i < n_recorded else patch_state(tree, p)) for i, p in enumerate(series)]


def apply_series(tree: Path, patch_dir: Path) -> list[str]:
    """Apply every patch not yet in ``tree``; return the names of all patches in it."""
    series = read_series(patch_dir)
    n_recorded = _recorded(tree, series)
    applied = [p.name for p in series[:n_recorded]]
    for patch in series[n_recorded:]:
        state = patch_state(tree, patch)
        if state == "applicable":
            res = _git_apply(tree, patch)
            if res.returncode != 0:
                raise PatchError(f"patch {patch.name} failed to apply:\n{res.stderr}")
        elif state == "conflict":
            res = _git_apply(tree, patch, "--check", "--verbose")
            raise PatchError(f"patch {patch.name} does not apply to {tree}:\n{res.stderr.strip()}")
        applied.append(patch.name)
    (tree / APPLIED_FILE).write_text("".join(f"{n}\n" for n in applied))
    return applied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["status", "check", "apply"])
    parser.add_argument("--tree", type=Path, default=Path("vendor/llama.cpp"))
    parser.add_argument("--patches", type=Path, default=Path("patches"))
    args = parser.parse_args(argv)
    try:
        if args.command == "apply":
            names = apply_series(args.tree, args.patches)
            print(f"applied: {', '.join(names) or 'none'}")
            return 0
        rows = status(args.tree, args.patches)
        for name, state in rows:
            print(f"{state:11s} {name}")
        if args.command == "check":
            bad = [n for n, s in rows if s == "conflict"]
            if bad:
                print(f"conflicting patches: {', '.join(bad)}", file=sys.stderr)
                return 1
        return 0
    except PatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
