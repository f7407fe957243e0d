"""A saxs job's inputs, read from paths: which files are frames, SPEC counters or a PONI
file; the frames they hold (with their counters); auxiliary frames (dark, flat,
background, standard); the standard's reference curve; frame pixels on demand.

Every reader takes a local path and the name to show in errors (the kit's staging is the
technique's business, not theirs); a file that cannot be used raises ``InvalidInput``
naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import errors
from panreduce.kit.readers import open_checked
from panreduce_saxs.io import (
    HDF5_SUFFIXES,
    NexusFrames,
    SpecScan,
    frame_scan_point,
    inspect_nexus,
    read_image,
    read_nexus_frame,
    read_spec,
)

PRELOAD_IMAGES = 200  # image files read at load (and validated) when there are at most this many
SKIPPED_SUFFIXES = (".json", ".md", ".txt", ".log", ".dat")  # notes beside the frames


@dataclass
class Frame:
    """One detector frame to reduce: where it is and what was recorded with it."""

    label: str
    source: str  # file name (for errors)
    path: Path
    index: int  # frame index in a stack (0 for single images)
    number: int = 0  # frame number in the job (its order among every input's frames)
    nexus: NexusFrames | None = None
    data: np.ndarray | None = None  # preloaded pixels
    counters: dict[str, float] = field(default_factory=dict)


@dataclass
class Sorted:
    """The inputs by role: frame files (path, name), SPEC scans, the first PONI file."""

    frame_files: list[tuple[Path, str]]
    spec_scans: dict[int, SpecScan]
    poni: tuple[Path, str] | None


def looks_like_spec(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"#F ") or b"\n#S " in head


def sort_inputs(files: Sequence[tuple[Path, str]], auxiliary: set[Path]) -> Sorted:
    """Frame files, SPEC counters and PONI file among ``files`` (path, name), leaving out
    the ``auxiliary`` ones (named by a parameter) and notes (JSON, Markdown, logs)."""
    frame_files: list[tuple[Path, str]] = []
    spec_scans: dict[int, SpecScan] = {}
    poni: tuple[Path, str] | None = None
    for path, name in files:
        if path in auxiliary:
            continue
        suffix = path.suffix.lower()
        if suffix == ".spec" or (suffix in ("", ".dat", ".txt") and looks_like_spec(path)):
            spec_scans.update(read_spec(path, name))
        elif suffix == ".poni":
            poni = poni or (path, name)
        elif suffix not in SKIPPED_SUFFIXES:
            frame_files.append((path, name))
    if not frame_files:
        raise errors.InvalidRequest("no detector frames among the inputs (TIFF, EDF, CBF or NeXus)")
    return Sorted(frame_files, spec_scans, poni)


def spec_counters(scans: dict[int, SpecScan], filename: str, index: int) -> dict[str, float]:
    """The SPEC row of a frame: from ``<prefix>_<scan>_<point>`` names, else (one scan)
    the row of the frame's order."""
    if not scans:
        return {}
    sp = frame_scan_point(Path(filename).name)
    if sp is not None and sp[0] in scans:
        scan, point = scans[sp[0]], sp[1] + index
    elif len(scans) == 1:
        scan, point = next(iter(scans.values())), index
    else:
        return {}
    if point >= scan.data.shape[0]:
        return {}
    return {label: float(scan.data[point, j]) for j, label in enumerate(scan.labels)}


def read_frames(
    files: Sequence[tuple[Path, str]], spec_scans: dict[int, SpecScan], *, frames_path: str = "", check: Any = None
) -> tuple[list[Frame], tuple[int, int], dict[str, Any]]:
    """(every frame in input order, their common shape, the first NeXus file's geometry).

    Image files are read (and so validated) now when there are at most
    ``PRELOAD_IMAGES``; NeXus stacks are inspected and read frame by frame later.
    ``check`` (e.g. the job's cancellation check) is called between files."""
    frames: list[Frame] = []
    nexus_geometry: dict[str, Any] = {}
    shape: tuple[int, int] | None = None
    preload = len(files) <= PRELOAD_IMAGES
    for k, (path, name) in enumerate(files):
        if check is not None:
            check()
        stem = Path(name).stem
        if path.suffix.lower() in HDF5_SUFFIXES:
            info = inspect_nexus(path, name, frames_path)
            nexus_geometry = nexus_geometry or {**info.geometry, "source": name}
            fshape = info.shape
            for j in range(info.n_frames):
                counters = {key: float(v[j]) for key, v in info.positioners.items()}
                if info.times is not None:
                    counters.setdefault("time", float(info.times[j]))
                frames.append(
                    Frame(
                        f"{stem}_{j:05d}" if info.n_frames > 1 else stem,
                        name,
                        path,
                        j,
                        len(frames),
                        nexus=info,
                        counters=counters,
                    )
                )
        elif preload or k == 0:
            data = read_image(path, name)
            fshape = data.shape[-2:]
            stack = data if data.ndim == 3 else data[None]
            for j, img in enumerate(stack):
                label = stem + (f"_{j:05d}" if len(stack) > 1 else "")
                frames.append(
                    Frame(label, name, path, j, len(frames), data=img, counters=spec_counters(spec_scans, name, j))
                )
        else:
            fshape = shape  # type: ignore[assignment]  # read (and checked) when integrated
            frames.append(Frame(stem, name, path, 0, len(frames), counters=spec_counters(spec_scans, name, 0)))
        if shape is None:
            shape = tuple(fshape)  # type: ignore[assignment]
        elif tuple(fshape) != shape:
            raise errors.InvalidInput(name, f"frames of shape {tuple(fshape)} differ from the first input's {shape}")
    assert shape is not None
    return frames, shape, nexus_geometry


def read_single_frame(path: Path, name: str, frames_path: str = "") -> np.ndarray:
    """The first frame of an image or NeXus file (dark, flat, background, standard)."""
    if path.suffix.lower() in HDF5_SUFFIXES:
        return read_nexus_frame(inspect_nexus(path, name, frames_path), 0)
    data = read_image(path, name)
    return data[0] if data.ndim == 3 else data


def read_auxiliary(
    path: Path,
    name: str,
    shape: tuple[int, int],
    *,
    frames_path: str = "",
    spec_scans: dict[int, SpecScan] | None = None,
) -> Frame:
    """An auxiliary frame of the frames' ``shape``, with its SPEC counters."""
    img = read_single_frame(path, name, frames_path)
    if img.shape != shape:
        raise errors.InvalidInput(name, f"shape {img.shape} differs from the frames' {shape}")
    return Frame(Path(name).stem, name, path, 0, data=img, counters=spec_counters(spec_scans or {}, name, 0))


def read_reference(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A standard's reference curve: a two-column q (1/Å), I (1/cm) text file."""
    try:
        arr = np.loadtxt(path, comments="#", ndmin=2, usecols=(0, 1))
    except (ValueError, OSError) as exc:
        raise errors.InvalidInput(name, f"is not a two-column q, I text file ({exc})") from None
    if arr.shape[0] < 3 or not np.all(np.isfinite(arr)):
        raise errors.InvalidInput(name, "needs at least 3 finite (q, I) rows")
    return arr[:, 0], arr[:, 1]


def frame_pixels(fr: Frame, handle: h5py.File | None = None) -> np.ndarray:
    """A frame's pixels (float32): preloaded, or read from its file now."""
    if fr.data is not None:
        return fr.data
    if fr.nexus is not None:
        return read_nexus_frame(fr.nexus, fr.index, handle)
    data = read_image(fr.path, fr.source)
    return data[fr.index] if data.ndim == 3 else data


@contextlib.contextmanager
def pixels_in_order(frames: Sequence[Frame]) -> Iterator[Iterator[tuple[Frame, np.ndarray]]]:
    """(frame, pixels) in order, each NeXus file opened once while its frames are read."""
    state: dict[str, Any] = {"path": None, "file": None}

    def generate() -> Iterator[tuple[Frame, np.ndarray]]:
        for fr in frames:
            handle = None
            if fr.nexus is not None:
                if state["path"] != fr.path:
                    if state["file"] is not None:
                        state["file"].close()
                    state["path"], state["file"] = fr.path, open_checked(fr.path)
                handle = state["file"]
            yield fr, frame_pixels(fr, handle)

    try:
        yield generate()
    finally:
        if state["file"] is not None:
            state["file"].close()
