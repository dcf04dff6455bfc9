"""Obtain the pinned llama.cpp tree and apply ``patches/series`` to it.

Runs standalone (stdlib only) so CMake can call it inside pip's isolated build
environment, where neither pip nor this package is importable. The pin lives in
``upstream.json`` next to this file.

    python src/pyllama_mtp/_vendor.py prepare --dest vendor/llama.cpp --patches patches

Source order: ``PYLLAMA_MTP_LLAMA_SRC`` (a tree or the sdist, works offline),
an already prepared ``--dest``, then the sdist fetched by package name from the
configured package index (the same index pip uses).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PIN = json.loads((HERE / "upstream.json").read_text())
STAMP = ".pyllama-mtp-source"


class VendorError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sdist(path: Path) -> None:
    expected = PIN["sdist_sha256"]
    got = sha256_of(path)
    if got != expected:
        raise VendorError(f"{path}: sha256 {got} does not match the pinned {expected}; refusing to use it")


def _index_urls() -> list[str]:
    """The simple indexes pip is configured with (main first), pip's default when unset."""
    main = os.environ.get("PIP_INDEX_URL", "").split()
    extra = os.environ.get("PIP_EXTRA_INDEX_URL", "").split()
    probe = (
        "import subprocess,sys\n"
        "out=subprocess.run([sys.executable,'-m','pip','config','list'],capture_output=True,text=True).stdout\n"
        "from pip._internal.models.index import PyPI\n"
        "print('default=' + PyPI.simple_url)\n"
        "print(out)\n"
    )
    for python in (sys.executable, shutil.which("python3"), shutil.which("python")):
        if not python:
            continue
        res = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True)
        if res.returncode != 0:
            continue
        config: dict[str, list[str]] = {}
        for line in res.stdout.splitlines():
            key, _, value = line.partition("=")
            config.setdefault(key.rsplit(".", 1)[-1], []).extend(value.strip().strip("'").split())
        main = main or config.get("index-url") or config["default"]
        extra = extra or config.get("extra-index-url", [])
        break
    if not main:
        raise VendorError("cannot find a package index: set PIP_INDEX_URL or PYLLAMA_MTP_LLAMA_SRC")
    return main + extra


def _project_files(index: str) -> dict[str, str]:
    """filename -> absolute URL, from a PEP 691 (JSON) or PEP 503 (HTML) project page."""
    page = index.rstrip("/") + "/" + PIN["package"] + "/"
    accept = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    if page.startswith("file:"):
        local = Path(urllib.request.url2pathname(urllib.parse.urlparse(page).path))
        candidates = [local / "index.html", local]
        body = next((c.read_text() for c in candidates if c.is_file()), None)
        if body is None:
            return {}
    else:
        req = urllib.request.Request(page, headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read().decode()
    if body.lstrip().startswith("{"):
        return {f["filename"]: urllib.parse.urljoin(page, f["url"]) for f in json.loads(body)["files"]}
    links = re.findall(r'href="([^"]+)"', body)
    return {
        urllib.parse.unquote(link.split("#")[0].rsplit("/", 1)[-1]): urllib.parse.urljoin(page, link) for link in links
    }


def fetch_sdist(cache_dir: Path) -> Path:
    """Download the pinned sdist by name (no build, no metadata step) and verify it.

    ``pip download --no-binary`` would run the sdist's build backend to read its
    metadata, which compiles llama.cpp; we only need the archive.
    """
    name = f"llama_cpp_python-{PIN['version']}.tar.gz"
    cached = cache_dir / name
    if cached.exists():
        try:
            verify_sdist(cached)
            return cached
        except VendorError:
            pass  # a stale or damaged cache entry: download again
    url = None
    indexes = _index_urls()
    for index in indexes:
        try:
            url = _project_files(index).get(name)
        except OSError:
            continue
        if url:
            break
    if not url:
        raise VendorError(f"{name} was not found on the package indexes ({len(indexes)} tried)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".part")
    print(f"pyllama-mtp: downloading {name} ({PIN['sdist_size'] / 1e6:.0f} MB)", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=600) as resp, open(partial, "wb") as out:
        shutil.copyfileobj(resp, out, 1 << 20)
    verify_sdist(partial)
    partial.replace(cached)
    return cached


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse what tarfile's "data" filter refuses: paths or links leaving the tree, special files."""
    parts = Path(member.name).parts
    if member.name.startswith("/") or ".." in parts:
        raise ValueError(f"the sdist has a member outside its tree: {member.name}")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ValueError(f"the sdist has a special file: {member.name}")
    if member.issym() or member.islnk():
        target = Path(member.name).parent / member.linkname if member.issym() else Path(member.linkname)
        if member.linkname.startswith("/") or not _stays_inside(target):
            raise ValueError(f"the sdist has a link leaving its tree: {member.name} -> {member.linkname}")


def _stays_inside(path: Path) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def extract_tree(sdist: Path, dest: Path) -> None:
    """Extract only the vendored llama.cpp subtree of a verified sdist into ``dest``."""
    tmp = Path(tempfile.mkdtemp(prefix="llama-src-", dir=dest.parent))
    try:
        with tarfile.open(sdist) as tar:
            top = tar.getnames()[0].split("/")[0]
            prefix = f"{top}/{PIN['subdir']}/"
            # The sdist's subtree carries a submodule's `.git` file pointing nowhere; git would
            # then refuse to apply patches in it.
            members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.name != prefix + ".git"]
            for m in members:
                m.name = m.name[len(prefix) :]
            members = [m for m in members if m.name]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python < 3.11.4 (Debian 12's 3.11.2): the same refusals, by hand
                for m in members:
                    _check_member(m)
                tar.extractall(tmp, members=members)
        (tmp / STAMP).write_text(json.dumps({"sdist_sha256": PIN["sdist_sha256"]}))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.replace(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_tree(src: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))


def obtain(dest: Path, cache_dir: Path) -> str:
    """Make ``dest`` hold the pinned tree; return where it came from."""
    override = os.environ.get("PYLLAMA_MTP_LLAMA_SRC")
    if override:
        src = Path(override).expanduser().resolve()
        if src.is_file():
            verify_sdist(src)
            extract_tree(src, dest)
            return f"sdist {src}"
        if not (src / "include" / "llama.h").is_file():
            raise VendorError(f"PYLLAMA_MTP_LLAMA_SRC={src} is neither the pinned sdist nor a llama.cpp tree")
        if src != dest.resolve():
            copy_tree(src, dest)
        return f"tree {src}"
    if (dest / STAMP).is_file() and (dest / "include" / "llama.h").is_file():
        return "existing tree"
    extract_tree(fetch_sdist(cache_dir), dest)
    return "package index"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pyllama-mtp"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["prepare", "fetch", "verify"])
    parser.add_argument("--dest", type=Path, default=Path("vendor/llama.cpp"))
    parser.add_argument("--patches", type=Path, default=Path("patches"))
    parser.add_argument("--cache-dir", type=Path, default=default_cache())
    parser.add_argument("--sdist", type=Path, help="with verify: the archive to check")
    args = parser.parse_args(argv)
    try:
        if args.command == "verify":
            verify_sdist(args.sdist)
            print(f"{args.sdist}: sha256 ok")
        elif args.command == "fetch":
            print(fetch_sdist(args.cache_dir))
        else:
            sys.path.insert(0, str(HERE))
            from patches import apply_series  # type: ignore[attr-defined,unused-ignore]  # sibling, stdlib only

            args.dest.parent.mkdir(parents=True, exist_ok=True)
            origin = obtain(args.dest, args.cache_dir)
            applied = apply_series(args.dest, args.patches)
            print(f"pyllama-mtp: llama.cpp from {origin}; patches: {', '.join(applied) or 'none'}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001  (CMake shows this line; a traceback hides it)
        print(f"pyllama-mtp: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
