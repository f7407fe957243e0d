"""Staging checksums local files side by side and remembers the digest of a file it has
read before, unchanged since (same path, inode, size, mtime and ctime): the provenance
digest is always that of the bytes on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from panreduce import storage
from panreduce.storage import Stores, stage_inputs


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stage(folder: Path, scratch: Path) -> dict[str, str]:
    inputs = stage_inputs(Stores(scratch / "store"), [str(folder) + "/"], scratch / "job")
    return {f.name: f.sha256 for f in inputs.files}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "a").mkdir(parents=True)
    for i in range(12):  # more files than hashing threads, of different sizes
        (run / "a" / f"f{i:02d}.bin").write_bytes(os.urandom(1000 + 70_000 * i))
    (run / "top.txt").write_text("background\n")
    return run


def test_digests_in_order_and_exact(folder: Path, tmp_path: Path) -> None:
    got = _stage(folder, tmp_path / "s1")
    want = {p.relative_to(folder).as_posix(): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    assert list(got) == sorted(want)
    assert got == want


def test_a_rewritten_file_is_hashed_again(folder: Path, tmp_path: Path) -> None:
    target = folder / "a" / "f03.bin"
    first = _stage(folder, tmp_path / "s1")
    st = target.stat()
    key = storage._stat_key(target.resolve(), st)
    assert storage._DIGESTS[key] == first["a/f03.bin"]  # remembered
    assert _stage(folder, tmp_path / "s2") == first  # unchanged: the same digests
    data = bytearray(target.read_bytes())
    data[5] ^= 0xFF  # same size, other content
    with open(target, "r+b") as fh:
        fh.write(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime: the ctime moved
    again = _stage(folder, tmp_path / "s3")
    assert again["a/f03.bin"] == hashlib.sha256(bytes(data)).hexdigest() != first["a/f03.bin"]
    assert {k: v for k, v in again.items() if k != "a/f03.bin"} == {k: v for k, v in first.items() if k != "a/f03.bin"}


def test_a_replaced_file_is_hashed_again(folder: Path, tmp_path: Path) -> None:
    first = _stage(folder, tmp_path / "s1")
    fresh = folder / "a" / "new.tmp"
    fresh.write_bytes(b"x" * 1000)
    os.replace(fresh, folder / "a" / "f00.bin")  # another inode under the same name
    assert _stage(folder, tmp_path / "s2")["a/f00.bin"] == hashlib.sha256(b"x" * 1000).hexdigest() != first["a/f00.bin"]


def test_a_hard_link_gets_its_own_digest_entry(folder: Path, tmp_path: Path) -> None:
    os.link(folder / "a" / "f05.bin", folder / "a" / "g05.bin")
    got = _stage(folder, tmp_path / "s1")
    assert got["a/g05.bin"] == got["a/f05.bin"] == _digest(folder / "a" / "f05.bin")
    keys = [
        k for k in storage._DIGESTS if k[0].endswith(("f05.bin", "g05.bin")) and k[0].startswith(str(folder.resolve()))
    ]
    assert len(keys) == 2  # one per path: a link is read (and timed) like any other file
