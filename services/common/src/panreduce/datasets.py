"""A small checksummed registry of the real facility files that tests, demos and
benchmarks use.

``datasets.json`` lists each file (its name relative to the data folder), its size,
its SHA-256 and its public origin (``owner/repository:path``). :func:`path` finds a
file in, in order:

1. the folder named by ``$PANREDUCE_DATA``;
2. ``shared/data`` beside the repository (``../shared/data`` from its root);
3. the download cache (``$PANREDUCE_CACHE`` or ``~/.cache/panreduce/data``), fetching
   it from its origin when that is reachable;

and verifies its checksum. When it is nowhere, :class:`DatasetMissing` says what is
missing, where it looked and where it comes from.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any, cast

from panreduce.settings import get_settings

MANIFEST = Path(__file__).with_name("datasets.json")
ENV_DATA = "PANREDUCE_DATA"
ENV_CACHE = "PANREDUCE_CACHE"
# Origins are public GitHub repositories; this is the raw-file address of a path in one.
RAW_URL = "https://raw.githubusercontent.com/{repo}/HEAD/{path}"


class DatasetMissing(LookupError):
    """A registered file that is not on this machine and could not be fetched."""

    def __init__(self, name: str, searched: list[Path], origin: str | None, why: str = "") -> None:
        where = ", ".join(str(p) for p in searched) or "nowhere"
        msg = f"dataset file {name!r} is missing (looked in: {where})"
        if origin:
            msg += f"; its public origin is {origin}"
        if why:
            msg += f"; {why}"
        msg += f". Put the data folder at ../shared/data or point ${ENV_DATA} at it."
        super().__init__(msg)
        self.name = name


class DatasetCorrupt(RuntimeError):
    """A registered file whose checksum does not match the registry."""


@cache
def manifest() -> dict[str, dict[str, Any]]:
    return cast(dict[str, dict[str, Any]], json.loads(MANIFEST.read_text()))


def names(prefix: str = "") -> list[str]:
    """Registered names, optionally those under ``prefix``."""
    return sorted(n for n in manifest() if n.startswith(prefix))


def search_roots() -> list[Path]:
    roots: list[Path] = []
    data = get_settings().data
    if data:
        roots.append(data)
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            candidate = parent.parent / "shared" / "data"
            if (parent / "pyproject.toml").is_file() and candidate.is_dir():
                roots.append(candidate)
                break
    roots.append(cache_dir())
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def cache_dir() -> Path:
    return get_settings().cache_dir


def path(name: str, *, download: bool = True) -> Path:
    """The verified local path of registered file ``name`` (e.g. ``"i16-scans/794932.nxs"``)."""
    try:
        entry = manifest()[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the dataset registry ({MANIFEST})") from None
    searched = search_roots()
    for root in searched:
        candidate = root / name
        if candidate.is_file():
            _verify(candidate, entry)
            return candidate
    why = ""
    if download and entry.get("origin"):
        target = cache_dir() / name
        try:
            _download(entry["origin"], target, entry)
            return target
        except OSError as exc:
            why = f"download failed: {exc}"
    raise DatasetMissing(name, searched, entry.get("origin"), why)


def folder(prefix: str) -> Path:
    """The local folder holding every registered file under ``prefix`` (all verified)."""
    found = [path(n) for n in names(prefix.rstrip("/") + "/")]
    if not found:
        raise KeyError(f"no registered files under {prefix!r}")
    root = found[0]
    for _ in Path(names(prefix.rstrip("/") + "/")[0]).relative_to(prefix.rstrip("/")).parts:
        root = root.parent
    return root


_verified: dict[tuple[str, int, int], str] = {}


def _verify(candidate: Path, entry: dict[str, Any]) -> None:
    st = candidate.stat()
    key = (str(candidate), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(candidate)
    if _verified[key] != entry["sha256"]:
        raise DatasetCorrupt(f"{candidate}: SHA-256 {_verified[key]} does not match the registry's {entry['sha256']}")


def sha256_file(p: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download(origin: str, target: Path, entry: dict[str, Any]) -> None:
    repo, _, rel = origin.partition(":")
    url = RAW_URL.format(repo=repo, path=rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    with urllib.request.urlopen(url, timeout=20) as resp, open(tmp, "wb") as out:  # url: a registered origin
        while block := resp.read(1 << 20):
            out.write(block)
    if sha256_file(tmp) != entry["sha256"]:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{url} did not match the registered checksum")
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    """``python -m panreduce.datasets paths PREFIX...``: verified local paths, one per line;
    ``list [PREFIX]``: the registered names."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("paths", "list"):
        print("usage: python -m panreduce.datasets paths PREFIX... | list [PREFIX]", file=sys.stderr)
        return 2
    command, prefixes = args[0], args[1:] or [""]
    try:
        for prefix in prefixes:
            for name in names(prefix):
                print(path(name) if command == "paths" else name)
    except (DatasetMissing, DatasetCorrupt) as exc:
        print(f"datasets: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
