"""The patch series mechanism: apply, idempotence, conflict reporting, status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyllama_mtp import patches

REPO = Path(__file__).resolve().parent.parent


def _make_patch(tmp_path: Path, name: str, before: str, after: str) -> Path:
    a, b = tmp_path / "a", tmp_path / "b"
    for d, text in ((a, before), (b, after)):
        (d / "src").mkdir(parents=True, exist_ok=True)
        (d / "src" / "f.c").write_text(text)
    res = subprocess.run(
        ["git", "diff", "--no-index", "--no-prefix", "a/src/f.c", "b/src/f.c"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    patch = tmp_path / "patches" / name
    patch.parent.mkdir(exist_ok=True)
    patch.write_text(res.stdout)
    return patch


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "tree"
    (t / "src").mkdir(parents=True)
    (t / "src" / "f.c").write_text("int a = 1;\nint b = 2;\n")
    return t


def test_apply_then_reapply_is_a_no_op(tmp_path: Path, tree: Path) -> None:
    p = _make_patch(tmp_path, "0001-b-is-3.patch", "int a = 1;\nint b = 2;\n", "int a = 1;\nint b = 3;\n")
    (p.parent / "series").write_text("# comment\n0001-b-is-3.patch\n")
    assert patches.status(tree, p.parent) == [("0001-b-is-3.patch", "applicable")]
    assert patches.apply_series(tree, p.parent) == ["0001-b-is-3.patch"]
    assert (tree / "src" / "f.c").read_text() == "int a = 1;\nint b = 3;\n"
    assert patches.apply_series(tree, p.parent) == ["0001-b-is-3.patch"]
    assert (tree / "src" / "f.c").read_text() == "int a = 1;\nint b = 3;\n"
    assert patches.status(tree, p.parent) == [("0001-b-is-3.patch", "applied")]
    assert (tree / patches.APPLIED_FILE).read_text() == "0001-b-is-3.patch\n"


def test_conflict_names_the_patch_and_leaves_the_tree_alone(tmp_path: Path, tree: Path) -> None:
    p = _make_patch(tmp_path, "0002-other.patch", "int x = 9;\nint y = 8;\n", "int x = 9;\nint y = 7;\n")
    (p.parent / "series").write_text("0002-other.patch\n")
    with pytest.raises(patches.PatchError, match="0002-other.patch"):
        patches.apply_series(tree, p.parent)
    assert (tree / "src" / "f.c").read_text() == "int a = 1;\nint b = 2;\n"
    assert patches.status(tree, p.parent) == [("0002-other.patch", "conflict")]


def test_series_naming_a_missing_file_fails(tmp_path: Path, tree: Path) -> None:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "series").write_text("0009-gone.patch\n")
    with pytest.raises(patches.PatchError, match="0009-gone.patch"):
        patches.apply_series(tree, tmp_path / "patches")


def test_repository_series_applies_to_the_vendored_tree() -> None:
    tree = REPO / "vendor" / "llama.cpp"
    if not (tree / "include" / "llama.h").is_file():
        pytest.skip("no vendored tree in this checkout (installed without building here)")
    res = subprocess.run(
        [sys.executable, "-m", "pyllama_mtp.patches", "check", "--tree", str(tree), "--patches", str(REPO / "patches")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "conflict" not in res.stdout


def test_every_patch_regenerates_identically_from_a_clean_tree() -> None:
    """The one documented command (ci/make_patch.py) reproduces each patch in the series byte for byte."""
    for patch in patches.read_series(REPO / "patches"):
        res = subprocess.run(
            [sys.executable, str(REPO / "ci" / "make_patch.py"), patch.name, "--check"], capture_output=True, text=True
        )
        assert res.returncode == 0, res.stdout + res.stderr
