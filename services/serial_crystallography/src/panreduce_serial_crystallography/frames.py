"""Detector frame sources: HDF5/CXI/NeXus stacks (Eiger master/data files included) and
CBF images (CBF_PACKED/_V2 by :mod:`.cbf`, byte-offset through fabio), read in blocks of
frames.

The dataset path and layout come from the CrystFEL geometry (``data``, ``dim0 = %``);
a path naming a group (an Eiger master's ``/entry/data``) means every frame dataset in
it, in name order (``data_000001``, ``data_000002``, ... — external links followed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from panreduce import constants, errors
from panreduce_serial_crystallography.cbf import CbfError, CbfImage, is_packed_cbf, open_cbf, read_cbf
from panreduce_serial_crystallography.cbf import photon_energy_ev as cbf_energy
from panreduce_serial_crystallography.geometry import Detector

__all__ = ["FrameError", "FrameSource", "bad_from_mask_array", "open_frames"]


class FrameError(ValueError):
    """An input file that does not hold frames the geometry describes (reason in the message)."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


def bad_from_mask_array(mask: np.ndarray, *, mask_good: int, mask_bad: int) -> np.ndarray:
    """CrystFEL's rule: a pixel is good when all ``mask_good`` bits are set and no
    ``mask_bad`` bit is."""
    m = mask.astype(np.int64)
    return ((m & mask_good) != mask_good) | ((m & mask_bad) != 0)


@dataclass
class _Segment:
    file: Path
    name: str  # the staged file's name
    dataset: str | None  # None for a CBF
    n: int
    is_stack: bool
    cbf: CbfImage | None = None  # a packed CBF's layout


@dataclass
class FrameSource:
    """Every frame of the inputs, in order; ``read(start, stop)`` gives (n, ss, fs)."""

    segments: list[_Segment]
    shape: tuple[int, int]
    photon_energy_ev: np.ndarray  # per frame
    clen_m: np.ndarray  # per frame
    mask_bad: np.ndarray  # (ss, fs) bool: True = bad, from the files' masks
    events: list[tuple[str, int]] = field(default_factory=list)  # (file name, event index)
    dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))  # of the stored frames

    @property
    def n_frames(self) -> int:
        return sum(s.n for s in self.segments)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as one float32 array."""
        out = np.empty((stop - start, *self.shape), np.float32)
        pos = 0
        base = 0
        for seg in self.segments:
            lo, hi = max(start, base), min(stop, base + seg.n)
            if lo < hi:
                if seg.cbf is not None:
                    try:
                        out[pos] = read_cbf(seg.cbf, seg.name)
                    except CbfError as exc:
                        raise errors.InvalidInput(seg.name, str(exc).removeprefix(f"{seg.name}: ")) from None
                elif seg.dataset is None:
                    import fabio

                    out[pos] = np.asarray(fabio.open(str(seg.file)).data, dtype=np.float32)
                else:
                    with h5py.File(seg.file, "r") as f:
                        ds = f[seg.dataset]
                        if seg.is_stack:
                            out[pos : pos + hi - lo] = ds[lo - base : hi - base]
                        else:
                            out[pos] = ds[()]
                pos += hi - lo
            base += seg.n
        return out


def _resolve(f: h5py.File, spec: float | str | None, n: int, what: str, source: str, scale: float) -> np.ndarray | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in f:
            raise FrameError(source, f"the geometry's {what} dataset {spec} is missing")
        v = np.asarray(f[spec][()], dtype=np.float64).reshape(-1) * scale
        if v.size == 1:
            return np.full(n, v[0])
        if v.size != n:
            raise FrameError(source, f"{what} {spec} has {v.size} values for {n} frames")
        return v
    return np.full(n, float(spec))


def open_frames(
    files: list[tuple[Path, str]], detector: Detector, *, data_path: str | None = None, max_frames: int = 10_000_000
) -> FrameSource:
    """The frames of ``files`` ((local path, name) pairs), checked against ``detector``.

    Per-frame photon energy (eV) and camera length (m) come from the geometry: a value, or
    a dataset path in each file (camera length datasets in mm, as CrystFEL reads them,
    plus ``coffset``). Raises :class:`FrameError` naming the file."""
    shape = detector.shape
    segments: list[_Segment] = []
    energies: list[np.ndarray] = []
    clens: list[np.ndarray] = []
    bad = np.zeros(shape, bool)
    events: list[tuple[str, int]] = []
    path = data_path or detector.data_path or "/entry_1/data_1/data"
    dtypes: list[np.dtype] = []
    panel = detector.panels[0]
    for local, name in files:
        if local.suffix.lower() == ".cbf" and is_packed_cbf(local):
            try:
                cimg = open_cbf(local, name)
            except CbfError as exc:
                raise FrameError(name, str(exc).removeprefix(f"{name}: ")) from None
            if cimg.shape != shape:
                raise FrameError(name, f"image shape {cimg.shape} is not the geometry's {shape}")
            segments.append(_Segment(local, name, None, 1, False, cimg))
            events.append((name, 0))
            dtypes.append(cimg.dtype)
            e = detector.photon_energy if isinstance(detector.photon_energy, (int, float)) else cbf_energy(cimg)
            if e is None:
                raise FrameError(name, "the geometry gives no photon energy value and the CBF no wavelength")
            energies.append(np.array([float(e)]))
            c = panel.clen if isinstance(panel.clen, (int, float)) else float("nan")
            clens.append(np.array([c + panel.coffset_m]))
            continue
        if local.suffix.lower() == ".cbf":
            import fabio

            try:
                img = fabio.open(str(local))
                frame_shape = tuple(np.asarray(img.data).shape)
            except Exception as exc:  # fabio raises many kinds for unreadable files
                raise FrameError(name, f"not a CBF image fabio can read ({exc})") from exc
            if frame_shape != shape:
                raise FrameError(name, f"image shape {frame_shape} is not the geometry's {shape}")
            segments.append(_Segment(local, name, None, 1, False))
            events.append((name, 0))
            dtypes.append(np.asarray(img.data).dtype)
            e = detector.photon_energy
            wl = img.header.get("Wavelength") if hasattr(img, "header") else None
            if not isinstance(e, (int, float)):
                if wl is None:
                    raise FrameError(name, "the geometry gives no photon energy value and the CBF no wavelength")
                e = constants.H_C_EV_ANGSTROM / float(str(wl).split()[0])
            energies.append(np.array([float(e)]))
            c = panel.clen if isinstance(panel.clen, (int, float)) else float("nan")
            clens.append(np.array([c + panel.coffset_m]))
            continue
        try:
            f = h5py.File(local, "r")
        except OSError as exc:
            raise FrameError(name, f"not an HDF5 file ({exc})") from exc
        with f:
            if path not in f:
                raise FrameError(name, f"no dataset {path} (the geometry's 'data')")
            obj = f[path]
            if isinstance(obj, h5py.Group):
                parts = sorted(k for k in obj if isinstance(obj.get(k), h5py.Dataset))
                if not parts:
                    raise FrameError(name, f"{path} holds no frame datasets")
                dsets = [f"{path.rstrip('/')}/{k}" for k in parts]
            else:
                dsets = [path]
            n_file = 0
            for dname in dsets:
                try:
                    ds = f[dname]
                except (KeyError, OSError) as exc:
                    raise FrameError(name, f"{dname}: cannot open (missing data file of a master?)") from exc
                if ds.ndim == 3 and tuple(ds.shape[1:]) == shape:
                    segments.append(_Segment(local, name, dname, int(ds.shape[0]), True))
                    events.extend((name, n_file + i) for i in range(int(ds.shape[0])))
                    n_file += int(ds.shape[0])
                elif ds.ndim == 2 and tuple(ds.shape) == shape:
                    segments.append(_Segment(local, name, dname, 1, False))
                    events.append((name, n_file))
                    n_file += 1
                else:
                    raise FrameError(
                        name, f"{dname} has shape {ds.shape}; the geometry needs (n, {shape[0]}, {shape[1]})"
                    )
                if not np.issubdtype(ds.dtype, np.number):
                    raise FrameError(name, f"{dname} is not numeric ({ds.dtype})")
                dtypes.append(ds.dtype)
            e = _resolve(f, detector.photon_energy, n_file, "photon energy", name, 1.0)
            if e is None:
                raise FrameError(name, "the geometry gives no photon energy")
            c = _resolve(f, panel.clen, n_file, "camera length", name, 1e-3 if isinstance(panel.clen, str) else 1.0)
            energies.append(e)
            clens.append((c if c is not None else np.full(n_file, np.nan)) + panel.coffset_m)
            mpath = panel.mask
            if mpath is not None and panel.mask_file is None and mpath in f:
                m = f[mpath][()]
                if m.ndim == 3:
                    m = np.bitwise_or.reduce(m, axis=0)
                if tuple(m.shape) != shape:
                    raise FrameError(name, f"mask {mpath} has shape {m.shape}, not {shape}")
                bad |= bad_from_mask_array(m, mask_good=panel.mask_good, mask_bad=panel.mask_bad)
        if sum(s.n for s in segments) > max_frames:
            raise FrameError(name, f"more than {max_frames} frames")
    if not segments:
        raise FrameError("inputs", "no frame files (HDF5/CXI/NeXus or CBF) among the inputs")
    energy = np.concatenate(energies)
    if not np.all(np.isfinite(energy) & (energy > 0)):
        raise FrameError("inputs", "photon energies must be positive numbers")
    return FrameSource(
        segments=segments,
        shape=shape,
        photon_energy_ev=energy,
        clen_m=np.concatenate(clens),
        mask_bad=bad,
        events=events,
        dtype=np.result_type(*dtypes),
    )
