"""Regenerate one patch: diff the working ``vendor/llama.cpp`` against a clean extraction of the pin.

    python ci/make_patch.py 0001-name.patch [--header header.txt] [-- paths...]

Patches earlier in ``patches/series`` are applied to the clean copy first, so the new patch holds
only its own change. The header paragraph (why, what, test, upstream status) goes above the diff.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src" / "pyllama_mtp"))

import _vendor  # noqa: E402

import patches  # noqa: E402, I001


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name")
    parser.add_argument("--header", type=Path)
    parser.add_argument("paths", nargs="*", help="limit the diff to these paths inside the tree")
    args = parser.parse_args()
    work = ROOT / "vendor" / "llama.cpp"
    series = patches.read_series(ROOT / "patches")
    names = [p.name for p in series]
    earlier = series[: names.index(args.name)] if args.name in names else series
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "llama.cpp"
        _vendor.extract_tree(_vendor.fetch_sdist(_vendor.default_cache()), clean)
        for p in earlier:
            subprocess.run(["git", "apply", str(p)], cwd=clean, check=True)
        # git diff --no-index compares exactly two paths: one run per path
        diff = "".join(
            subprocess.run(
                ["git", "diff", "--no-index", "--no-prefix", str(clean / p), str(work / p)],
                capture_output=True,
                text=True,
            ).stdout
            for p in args.paths or ["."]
        )
    # git prints the absolute paths without their leading '/': make them a/ and b/ relative to the tree
    for root, prefix in ((clean, "a/"), (work, "b/")):
        diff = diff.replace(str(root).lstrip("/") + "/", prefix)
    if not diff:
        sys.exit(f"make_patch: no difference under {args.paths or ['.']} between the pin and {work}")
    header = args.header.read_text() if args.header else ""
    (ROOT / "patches" / args.name).write_text(header + diff)
    print(f"wrote patches/{args.name} ({diff.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
