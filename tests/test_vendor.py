"""The pinned source: checksum enforcement and the offline override."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pyllama_mtp import _vendor


def test_sdist_with_wrong_checksum_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    fake.write_bytes(b"not the pinned archive")
    with pytest.raises(_vendor.VendorError, match="does not match the pinned"):
        _vendor.verify_sdist(fake)


def test_override_with_wrong_sdist_is_refused_before_extraction(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "fake.tar.gz"
    with tarfile.open(fake, "w:gz") as tar:
        data = b"int main;"
        info = tarfile.TarInfo("pkg/vendor/llama.cpp/include/llama.h")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    monkeypatch.setenv("PYLLAMA_MTP_LLAMA_SRC", str(fake))
    dest = tmp_path / "llama.cpp"
    with pytest.raises(_vendor.VendorError, match="sha256"):
        _vendor.obtain(dest, tmp_path / "cache")
    assert not dest.exists()


def test_override_must_be_a_tree_or_sdist(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PYLLAMA_MTP_LLAMA_SRC", str(tmp_path))
    with pytest.raises(_vendor.VendorError, match="neither"):
        _vendor.obtain(tmp_path / "dest", tmp_path / "cache")


def test_override_tree_is_copied(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    (src / "include").mkdir(parents=True)
    (src / "include" / "llama.h").write_text("// header\n")
    monkeypatch.setenv("PYLLAMA_MTP_LLAMA_SRC", str(src))
    origin = _vendor.obtain(tmp_path / "dest", tmp_path / "cache")
    assert origin.startswith("tree")
    assert (tmp_path / "dest" / "include" / "llama.h").read_text() == "// header\n"


def _sdist(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(_file("pkg/vendor/llama.cpp/include/llama.h", b"// h"), io.BytesIO(b"// h"))
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return path


def _file(name: str, data: bytes = b"x") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("old_python", [False, True], ids=["tarfile-filter", "python-before-3.11.4"])
def test_extraction_refuses_members_leaving_the_tree(tmp_path: Path, monkeypatch, old_python: bool) -> None:
    if old_python:  # Debian 12's Python 3.11.2 has no extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    ok = _sdist(tmp_path / "ok.tar.gz", [_file("pkg/vendor/llama.cpp/a/b.c"), _link("pkg/vendor/llama.cpp/a/l", "b.c")])
    _vendor.extract_tree(ok, tmp_path / "ok")
    assert (tmp_path / "ok" / "a" / "l").read_bytes() == b"x"
    for bad in (
        _file("pkg/vendor/llama.cpp/../../escape.txt"),
        _link("pkg/vendor/llama.cpp/a/l", "../../../outside"),
        _link("pkg/vendor/llama.cpp/a/l", "/etc/passwd"),
    ):
        archive = _sdist(tmp_path / "bad.tar.gz", [bad])
        with pytest.raises((ValueError, tarfile.TarError)):
            _vendor.extract_tree(archive, tmp_path / "bad")
        assert not (tmp_path / "escape.txt").exists()


def test_extraction_takes_only_the_subtree_and_drops_its_gitlink(tmp_path: Path) -> None:
    fake = tmp_path / "fake.tar.gz"
    with tarfile.open(fake, "w:gz") as tar:
        for name, data in [
            ("pkg/vendor/llama.cpp/include/llama.h", b"// h"),
            ("pkg/vendor/llama.cpp/.git", b"gitdir: ../../.git/modules/vendor/llama.cpp"),
            ("pkg/llama_cpp/__init__.py", b""),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "llama.cpp"
    _vendor.extract_tree(fake, dest)
    assert (dest / "include" / "llama.h").read_bytes() == b"// h"
    assert not (dest / ".git").exists()
    assert not (dest / "llama_cpp").exists()
    assert (dest / _vendor.STAMP).is_file()
