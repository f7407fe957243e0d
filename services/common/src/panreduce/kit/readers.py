"""Reading inputs safely: library errors become InvalidInput naming the file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from panreduce import errors, locations
from panreduce.kit.technique import StagedFile

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@contextmanager
def open_hdf5(
    file: StagedFile | Path | str, source: str | None = None, *, roots: Iterable[Path] | None = None
) -> Iterator[h5py.File]:
    """Open an HDF5/NeXus input read-only; a file that is not HDF5, or is truncated or
    corrupt, raises InvalidInput naming it.

    Before anything is read, the file's external links, virtual-dataset sources and
    external raw storage are resolved and must lie inside ``roots`` (default:
    :func:`input_roots`, the directory tree of the input the file was staged from);
    otherwise PermissionDenied, and nothing outside is opened."""
    path = Path(file.path if isinstance(file, StagedFile) else file)
    name = source or (file.name if isinstance(file, StagedFile) else path.name)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise errors.InvalidInput(name, f"cannot be read ({exc.strerror or exc})") from None
    if head != HDF5_SIGNATURE and not h5py.is_hdf5(path):
        raise errors.InvalidInput(name, "is not an HDF5/NeXus file (no HDF5 signature)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise errors.InvalidInput(name, f"is a damaged or truncated HDF5 file ({exc})") from None
    try:
        try:
            locations.check_opened_hdf5(path, f)  # the very file staging checked (no link swapped in)
            locations.check_hdf5_references(f, path, input_roots(file) if roots is None else roots, source=name)
        except (OSError, RuntimeError) as exc:
            raise errors.InvalidInput(name, f"is a damaged HDF5 file: its links cannot be listed ({exc})") from None
        yield f
    except (OSError, RuntimeError, KeyError) as exc:
        # h5py's own errors: a missing object, or bytes past the end of a truncated file.
        # Anything else (a KeyError of the technique's own dicts, say) is a server fault.
        text = str(exc).lower()
        if isinstance(exc, KeyError) and ("doesn't exist" in text or "unable to" in text):
            raise errors.InvalidInput(name, f"lacks what is needed: {exc.args[0] if exc.args else exc}") from None
        if not isinstance(exc, KeyError) and any(w in text for w in ("truncated", "read", "unable to", "h5")):
            raise errors.InvalidInput(name, f"is damaged or truncated: reading failed ({exc})") from None
        raise
    finally:
        f.close()


def open_checked(path: Path | str, source: str | None = None, *, roots: Iterable[Path] | None = None) -> h5py.File:
    """``h5py.File(path, "r")`` for readers that manage the handle themselves, after the
    same reference check as :func:`open_hdf5` (PermissionDenied when an external link,
    virtual-dataset source or external storage leads outside ``roots``)."""
    f = h5py.File(path, "r")
    try:
        locations.check_opened_hdf5(path, f)  # the very file staging checked (no link swapped in)
        locations.check_hdf5_references(
            f, path, input_roots(path) if roots is None else roots, source=source or Path(path).name
        )
    except BaseException:
        f.close()
        raise
    return f


def input_roots(file: StagedFile | Path | str) -> list[Path]:
    """Where an input's HDF5 references may point by default: the directory tree of the
    file's own folder, as named and resolved. (Not the folder the caller named: a staged
    file is the resolved target of any link in that folder, so counting its name's parts
    upwards could reach above the caller's locations.)"""
    return locations.hdf5_roots(file.path if isinstance(file, StagedFile) else file)


def memory_ceiling() -> int:
    """Bytes one dataset read may allocate: ``$PANREDUCE_MAX_ARRAY_BYTES``, else half of
    the memory this process may use (the cgroup's limit in a container, else the
    machine's RAM)."""
    from panreduce.settings import get_settings

    configured = get_settings().max_array_bytes
    if configured:
        return configured
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
        break
    return total // 2


def read_dataset(dset: h5py.Dataset, *, source: str | None = None, max_bytes: int | None = None) -> np.ndarray:
    """All of a dataset's values, after checking the size it declares against a memory
    ceiling (``max_bytes``, default :func:`memory_ceiling`): a file declaring a huge
    shape raises InputTooLarge before anything is allocated, never a MemoryError."""
    name = source or Path(dset.file.filename).name
    limit = memory_ceiling() if max_bytes is None else max_bytes
    nbytes = int(np.prod(dset.shape, dtype=object) if dset.shape else 1) * dset.dtype.itemsize
    if nbytes > limit:
        raise errors.InputTooLarge(f"{name}: {dset.name} (shape {dset.shape})", nbytes, limit)
    try:
        return np.asarray(dset[()])
    except MemoryError:
        raise errors.InputTooLarge(f"{name}: {dset.name} (shape {dset.shape})", nbytes, limit) from None


def require_dataset(group: h5py.Group, path: str, source: str) -> h5py.Dataset:
    """The dataset at ``path`` in ``group``, or InvalidInput naming what is missing."""
    obj = group.get(path)
    if obj is None:
        raise errors.InvalidInput(source, f"has no dataset {group.name.rstrip('/')}/{path}")
    if not isinstance(obj, h5py.Dataset):
        raise errors.InvalidInput(source, f"{obj.name} is a group, not a dataset")
    return obj


def read_array(group: h5py.Group, path: str, source: str, *, finite: bool = True) -> np.ndarray:
    """A dataset's values; with ``finite``, NaN or inf raises InvalidInput."""
    ds = require_dataset(group, path, source)
    try:
        values = read_dataset(ds, source=source)
    except (OSError, RuntimeError) as exc:
        raise errors.InvalidInput(source, f"{ds.name} cannot be read: damaged or truncated ({exc})") from None
    arr = np.asarray(values)
    if finite and arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise errors.InvalidInput(source, f"{ds.name} holds {bad} NaN or infinite value(s)")
    return arr
