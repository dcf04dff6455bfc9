"""Regenerate one patch from a clean tree: the one documented way to change a patch.

    python ci/make_patch.py NAME [PATH ...] [--header FILE]

The old side is a fresh extraction of the pin with the patches before NAME in ``patches/series``
applied; the new side is the working ``vendor/llama.cpp`` with the patches after NAME taken back
out (on a copy). So the patch holds exactly its own change, whatever else the working tree
carries. PATHs default to the files the existing patch touches, and its opening paragraph (why,
what, test, upstream status) is kept unless ``--header`` gives a new one. A new patch needs both
PATHs and ``--header``; list it in ``series`` first.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src" / "pyllama_mtp"))

import _vendor  # noqa: E402

import patches  # noqa: E402, I001


def _existing(patch: Path) -> tuple[str, list[str]]:
    """The header paragraph and the files of an existing patch ('', [] when there is none)."""
    if not patch.is_file() or not patch.read_text().strip():
        return "", []
    text = patch.read_text()
    header = text[: text.find("diff --git ")] if "diff --git " in text else text
    files = [m.group(1) for m in re.finditer(r"^diff --git \S+ b/(\S+)$", text, flags=re.M)]
    return header, files


def _diff(old: Path, new: Path, path: str) -> str:
    """git's diff of one path between two trees, with a/ and b/ paths relative to the trees."""
    old_path = old / path if (old / path).exists() else Path("/dev/null")
    res = subprocess.run(
        ["git", "diff", "--no-index", "--no-prefix", str(old_path), str(new / path)], capture_output=True, text=True
    )
    diff = res.stdout
    # git prints the absolute paths without their leading '/': make them a/ and b/ relative to the trees
    for root, prefix in ((old, "a/"), (new, "b/")):
        diff = diff.replace(str(root).lstrip("/") + "/", prefix)
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("paths", nargs="*", help="files inside the tree (default: those the patch touches now)")
    parser.add_argument("--header", type=Path, help="a new opening paragraph (default: keep the patch's own)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file would change")
    args = parser.parse_intermixed_args()
    target = ROOT / "patches" / args.name
    header, files = _existing(target)
    header = args.header.read_text() if args.header else header
    paths = args.paths or files
    if not paths or not header:
        sys.exit("make_patch: a new patch needs PATHs and --header")
    series = patches.read_series(ROOT / "patches")
    names = [p.name for p in series]
    if args.name not in names:
        sys.exit(f"make_patch: {args.name} is not in patches/series")
    earlier, later = series[: names.index(args.name)], series[names.index(args.name) + 1 :]
    work = ROOT / "vendor" / "llama.cpp"
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old" / "llama.cpp"
        old.parent.mkdir()
        _vendor.obtain(old, _vendor.default_cache())  # the pin as the build gets it (offline source included)
        for p in earlier:
            subprocess.run(["git", "apply", str(p)], cwd=old, check=True)
        new = work
        if later:
            new = Path(tmp) / "new" / "llama.cpp"
            shutil.copytree(work, new, symlinks=True)
            for p in reversed(later):
                subprocess.run(["git", "apply", "-R", str(p)], cwd=new, check=True)
        diff = "".join(_diff(old, new, p) for p in paths)
    if not diff:
        sys.exit(f"make_patch: no difference in {paths} between the pin and {work}")
    if args.check:
        same = target.is_file() and target.read_text() == header + diff
        print(f"patches/{args.name}: {'regenerates identically' if same else 'DIFFERS from its regeneration'}")
        return 0 if same else 1
    target.write_text(header + diff)
    print(f"wrote patches/{args.name} ({diff.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
