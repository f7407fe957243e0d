"""Job scratch of a technique service, and the cleaning of what killed servers left.

Each server process works in its own folder under the technique's scratch root and
holds an exclusive ``flock`` on the ``.lock`` file inside it for as long as it lives.
The lock goes with the process, however it ends (SIGKILL, out of memory, a node lost),
so at start a server removes every sibling folder whose lock it can take: those are
the orphans of servers that are gone. Servers sharing the root (replicas on one
machine, or in one process) never remove each other's live scratch.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO

log = logging.getLogger("panreduce.kit")

PREFIX = "server-"
LEGACY_AGE_S = 24 * 3600  # job folders of older servers (no lock) are removed once this old


def _take(lock_path: Path) -> IO[str] | None:
    """An open, exclusively locked handle on ``lock_path``, or None if another holds it."""
    try:
        fh = open(lock_path, "a+")
    except OSError:
        return None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def clean_orphans(root: Path) -> list[Path]:
    """Remove the scratch folders under ``root`` that no live server holds; returns
    those that still held job scratch (empty ones are removed silently)."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for child in root.iterdir():
        if not child.is_dir() or child.is_symlink():
            continue
        try:
            age = now - child.stat().st_mtime
        except OSError:
            continue
        if child.name.startswith(PREFIX):
            lock = child / ".lock"
            if not lock.exists():
                if age < 60:  # a server creating it right now
                    continue
            else:
                fh = _take(lock)
                if fh is None:  # its server is alive
                    continue
                fh.close()
        elif age < LEGACY_AGE_S:
            continue
        had_jobs = any(p.name != ".lock" for p in child.iterdir()) if child.name.startswith(PREFIX) else True
        shutil.rmtree(child, ignore_errors=True)
        if had_jobs:
            removed.append(child)
    return removed


class ScratchArea:
    """This server's scratch folder under ``root`` (orphans cleaned first)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.removed = clean_orphans(root)
        if self.removed:
            log.info("removed %d orphaned scratch folder(s) under %s", len(self.removed), root)
        self.path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
        self._lock = _take(self.path / ".lock")
        if self._lock is None:
            raise OSError(f"cannot lock {self.path / '.lock'}")
        atexit.register(self.close)  # a process that ends normally leaves nothing

    def close(self) -> None:
        """Remove this server's scratch and let go of its lock."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
