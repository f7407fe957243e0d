"""CrystFEL stream files: reading chunks, peaks, crystals and their reflections.

Text parsing (:func:`read_stream`; :func:`read_stream_file` reads a file by path and names
the caller's file in its errors). Units as in the stream: cell lengths in
nm for crystals (converted to Å here), reciprocal vectors in nm⁻¹, photon energy in eV.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from panreduce.errors import InvalidInput

__all__ = [
    "Chunk",
    "Crystal",
    "CrystalRecord",
    "StreamError",
    "TargetCell",
    "cell_file_text",
    "cell_of_basis",
    "chunk_text",
    "crystal_text",
    "parse_cell_file",
    "read_stream",
    "read_stream_file",
    "stream_header",
]


class StreamError(ValueError):
    """A stream that cannot be read (line number and reason in the message)."""


@dataclass(frozen=True)
class TargetCell:
    a_angstrom: float
    b_angstrom: float
    c_angstrom: float
    alpha_deg: float
    beta_deg: float
    gamma_deg: float
    lattice_type: str = "triclinic"
    centering: str = "P"
    unique_axis: str = "?"

    @property
    def parameters(self) -> tuple[float, float, float, float, float, float]:
        return (self.a_angstrom, self.b_angstrom, self.c_angstrom, self.alpha_deg, self.beta_deg, self.gamma_deg)


@dataclass
class Crystal:
    cell: tuple[float, float, float, float, float, float]  # Å, deg
    astar_per_nm: tuple[float, float, float] | None
    bstar_per_nm: tuple[float, float, float] | None
    cstar_per_nm: tuple[float, float, float] | None
    hkl: np.ndarray  # (n, 3) int32
    intensity: np.ndarray  # (n,) float64
    sigma: np.ndarray
    centering: str = "P"
    lattice_type: str = ""


@dataclass
class Chunk:
    filename: str
    event: str | None
    serial: int | None
    photon_energy_ev: float | None
    n_peaks: int
    crystals: list[Crystal] = field(default_factory=list)


def _length_angstrom(value: str, unit: str) -> float:
    v = float(value)
    if unit in ("A", "Å"):
        return v
    if unit == "nm":
        return v * 10.0
    raise StreamError(f"unknown length unit {unit!r}")


def parse_cell_file(text: str) -> TargetCell:
    """A CrystFEL unit cell file (``CrystFEL unit cell file version 1.0``)."""
    kv: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            kv[k] = v
    try:

        def length(k: str) -> float:
            parts = kv[k].split()
            return _length_angstrom(parts[0], parts[1] if len(parts) > 1 else "A")

        def angle(k: str) -> float:
            return float(kv.get(k, "90").split()[0])

        return TargetCell(
            length("a"),
            length("b"),
            length("c"),
            angle("al"),
            angle("be"),
            angle("ga"),
            lattice_type=kv.get("lattice_type", "triclinic"),
            centering=kv.get("centering", "P"),
            unique_axis=kv.get("unique_axis", "?"),
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise StreamError(f"unit cell: cannot read {exc}") from exc


def _vec(text: str) -> tuple[float, float, float]:
    parts = text.split("=", 1)[1].split()
    return (float(parts[0]), float(parts[1]), float(parts[2]))


def iter_stream(lines: Iterable[str], *, max_reflections: int = 50_000_000) -> Iterator[tuple[str, object]]:
    """Yield ("geometry", text), ("cell", TargetCell) and ("chunk", Chunk) in file order."""
    it = iter(enumerate(lines, 1))
    n_refl = 0
    header_seen = False
    for n, raw in it:
        line = raw.rstrip("\n")
        if not header_seen:
            if not line.startswith("CrystFEL stream format"):
                raise StreamError(f"line {n}: not a CrystFEL stream (no 'CrystFEL stream format' header)")
            header_seen = True
            continue
        if line.startswith("----- Begin geometry file"):
            body = []
            for _, r in it:
                if r.startswith("----- End geometry file"):
                    break
                body.append(r.rstrip("\n"))
            yield "geometry", "\n".join(body)
        elif line.startswith("----- Begin unit cell"):
            body = []
            for _, r in it:
                if r.startswith("----- End unit cell"):
                    break
                body.append(r.rstrip("\n"))
            yield "cell", parse_cell_file("\n".join(body))
        elif line.startswith("----- Begin chunk"):
            chunk = Chunk(filename="", event=None, serial=None, photon_energy_ev=None, n_peaks=0)
            crystal: dict | None = None
            rows: list[list[str]] = []
            in_refl = False
            for m, r in it:
                s = r.strip()
                if in_refl:
                    if s.startswith("End of reflections"):
                        in_refl = False
                        continue
                    if s.startswith("h ") or not s:
                        continue
                    rows.append(s.split())
                    n_refl += 1
                    if n_refl > max_reflections:
                        raise StreamError(f"more than {max_reflections} reflections")
                    continue
                if s.startswith("----- End chunk"):
                    break
                if s.startswith("Image filename:"):
                    chunk.filename = s.split(":", 1)[1].strip()
                elif s.startswith("Event:"):
                    chunk.event = s.split(":", 1)[1].strip()
                elif s.startswith("Image serial number:"):
                    chunk.serial = int(s.split(":", 1)[1])
                elif s.startswith("photon_energy_eV") and crystal is None:
                    chunk.photon_energy_ev = float(s.split("=", 1)[1])
                elif s.startswith("num_peaks") and crystal is None:
                    chunk.n_peaks = int(s.split("=", 1)[1])
                elif s.startswith("--- Begin crystal"):
                    crystal = {"centering": "P", "lattice_type": ""}
                    rows = []
                elif crystal is not None and s.startswith("Cell parameters"):
                    # Cell parameters 6.13532 12.19726 16.88163 nm, 90.54524 91.23016 90.53769 deg
                    p = s.replace(",", " ").split()
                    try:
                        crystal["cell"] = (
                            float(p[2]) * 10,
                            float(p[3]) * 10,
                            float(p[4]) * 10,
                            float(p[6]),
                            float(p[7]),
                            float(p[8]),
                        )
                    except (ValueError, IndexError) as exc:
                        raise StreamError(f"line {m}: cannot read the cell: {s!r}") from exc
                elif crystal is not None and s[:6] in ("astar ", "bstar ", "cstar "):
                    crystal[s[:5]] = _vec(s)
                elif crystal is not None and s.startswith("centering"):
                    crystal["centering"] = s.split("=", 1)[1].strip()
                elif crystal is not None and s.startswith("lattice_type"):
                    crystal["lattice_type"] = s.split("=", 1)[1].strip()
                elif s.startswith("Reflections measured after indexing"):
                    in_refl = True
                elif s.startswith("--- End crystal"):
                    if crystal is None or "cell" not in crystal:
                        raise StreamError(f"line {m}: a crystal without its cell parameters")
                    try:
                        arr = [(int(r_[0]), int(r_[1]), int(r_[2]), float(r_[3]), float(r_[4])) for r_ in rows]
                    except (ValueError, IndexError) as exc:
                        raise StreamError(f"line {m}: unreadable reflection line") from exc
                    a = np.array(arr, dtype=np.float64).reshape(-1, 5)
                    chunk.crystals.append(
                        Crystal(
                            cell=crystal["cell"],
                            astar_per_nm=crystal.get("astar"),
                            bstar_per_nm=crystal.get("bstar"),
                            cstar_per_nm=crystal.get("cstar"),
                            hkl=a[:, :3].astype(np.int32),
                            intensity=a[:, 3],
                            sigma=a[:, 4],
                            centering=crystal["centering"],
                            lattice_type=crystal["lattice_type"],
                        )
                    )
                    crystal = None
            else:
                raise StreamError("the stream ends inside a chunk (truncated file)")
            yield "chunk", chunk
    if not header_seen:
        raise StreamError("empty file: not a CrystFEL stream")


@dataclass
class Stream:
    geometry: str | None
    cell: TargetCell | None
    chunks: list[Chunk]

    @property
    def crystals(self) -> list[Crystal]:
        return [c for ch in self.chunks for c in ch.crystals]


def read_stream(lines: Iterable[str]) -> Stream:
    """Read a whole stream (lines of text) into a :class:`Stream`."""
    geometry, cell, chunks = None, None, []
    for kind, item in iter_stream(lines):
        if kind == "geometry":
            geometry = item  # type: ignore[assignment]
        elif kind == "cell":
            cell = item  # type: ignore[assignment]
        else:
            chunks.append(item)  # type: ignore[arg-type]
    return Stream(geometry=geometry, cell=cell, chunks=chunks)


def read_stream_file(path: str | os.PathLike[str], *, name: str | None = None) -> Stream:
    """Read a stream file; a file that is not a readable stream (or not UTF-8 text)
    raises InvalidInput naming ``name`` (the caller's name for it; default the file name
    of ``path``)."""
    name = name or Path(path).name
    try:
        with open(path, errors="strict") as fh:
            return read_stream(fh)
    except (StreamError, UnicodeDecodeError) as exc:
        raise InvalidInput(name, str(exc)) from exc


# -- writing ------------------------------------------------------------------------------
STREAM_VERSION = "2.3"


def cell_file_text(cell: TargetCell) -> str:
    """A CrystFEL unit cell file for ``cell``."""
    return (
        "CrystFEL unit cell file version 1.0\n\n"
        f"lattice_type = {cell.lattice_type}\ncentering = {cell.centering}\nunique_axis = {cell.unique_axis}\n"
        f"a = {cell.a_angstrom:.2f} A\nb = {cell.b_angstrom:.2f} A\nc = {cell.c_angstrom:.2f} A\n"
        f"al = {cell.alpha_deg:.2f} deg\nbe = {cell.beta_deg:.2f} deg\nga = {cell.gamma_deg:.2f} deg\n"
    )


def stream_header(*, geometry_text: str | None, cell: TargetCell | None, command: str) -> str:
    """The start of a stream: format line, generator, command line, geometry and target cell."""
    out = [f"CrystFEL stream format {STREAM_VERSION}\n", "Generated by panreduce serial_crystallography\n"]
    out.append(command.replace("\n", " ") + "\n")
    if geometry_text is not None:
        out.append("----- Begin geometry file -----\n")
        out.append(geometry_text.rstrip("\n") + "\n")
        out.append("----- End geometry file -----\n")
    if cell is not None:
        out.append("----- Begin unit cell -----\n")
        out.append(cell_file_text(cell))
        out.append("----- End unit cell -----\n")
    return "".join(out)


def cell_of_basis(basis: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(a, b, c Å, al, be, ga deg) of a reciprocal basis (columns a*, b*, c*, Å⁻¹)."""
    real = np.linalg.inv(basis)  # rows a, b, c
    a, b, c = (float(np.linalg.norm(v)) for v in real)

    def ang(u: np.ndarray, v: np.ndarray) -> float:
        return float(np.degrees(np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))))

    return (a, b, c, ang(real[1], real[2]), ang(real[0], real[2]), ang(real[0], real[1]))


@dataclass
class CrystalRecord:
    """What a stream says of one indexed crystal (lab reciprocal basis in Å⁻¹)."""

    basis: np.ndarray  # (3, 3) columns a*, b*, c*
    lattice_type: str
    centering: str
    unique_axis: str
    profile_radius: float  # Å⁻¹
    hkl: np.ndarray  # (n, 3)
    intensity: np.ndarray
    sigma: np.ndarray
    peak: np.ndarray
    background: np.ndarray
    fs: np.ndarray  # array coordinates (integer = pixel centre)
    ss: np.ndarray
    panel: list[str]
    resolution_limit: float  # Å⁻¹ of the highest-resolution reflection (nan: none)


def crystal_text(x: CrystalRecord) -> str:
    a, b, c, al, be, ga = cell_of_basis(x.basis)
    lines = [
        "--- Begin crystal\n",
        f"Cell parameters {a / 10:.5f} {b / 10:.5f} {c / 10:.5f} nm, {al:.5f} {be:.5f} {ga:.5f} deg\n",
    ]
    for name, col in zip(("astar", "bstar", "cstar"), x.basis.T * 10.0, strict=True):
        lines.append(f"{name} = {col[0]:+.7f} {col[1]:+.7f} {col[2]:+.7f} nm^-1\n")
    lines += [
        f"lattice_type = {x.lattice_type}\n",
        f"centering = {x.centering}\n",
        f"unique_axis = {x.unique_axis}\n",
        f"profile_radius = {x.profile_radius * 10:.5f} nm^-1\n",
    ]
    if np.isfinite(x.resolution_limit) and x.resolution_limit > 0:
        r = x.resolution_limit
        lines.append(f"diffraction_resolution_limit = {r * 10:.2f} nm^-1 or {1 / r:.2f} A\n")
    lines += [
        f"num_reflections = {len(x.intensity)}\n",
        "num_saturated_reflections = 0\n",
        "num_implausible_reflections = 0\n",
        "Reflections measured after indexing\n",
        "   h    k    l          I   sigma(I)       peak background  fs/px  ss/px panel\n",
    ]
    for i in range(len(x.intensity)):
        h, k, l_ = (int(v) for v in x.hkl[i])
        lines.append(
            f"{h:4d} {k:4d} {l_:4d} {x.intensity[i]:10.2f} {x.sigma[i]:10.2f} {x.peak[i]:10.2f} "
            f"{x.background[i]:10.2f} {x.fs[i] + 0.5:6.1f} {x.ss[i] + 0.5:6.1f} {x.panel[i]}\n"
        )
    lines += ["End of reflections\n", "--- End crystal\n"]
    return "".join(lines)


def chunk_text(
    *,
    filename: str,
    event: str | None,
    serial: int,
    hit: bool,
    indexed_by: str,
    photon_energy_ev: float,
    clen_m: float,
    peaks: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]],
    crystals: list[CrystalRecord],
) -> str:
    """One chunk: the image, its peaks (fs, ss array coordinates, 1/d Å⁻¹, intensity, panel
    names) and its crystals. Positions are written as CrystFEL does (pixel corner = 0)."""
    fs, ss, inv_d, inten, panels = peaks
    out = ["----- Begin chunk -----\n", f"Image filename: {filename}\n"]
    if event is not None:
        out.append(f"Event: {event}\n")
    out += [
        f"Image serial number: {serial}\n",
        f"hit = {int(hit)}\n",
        f"indexed_by = {indexed_by if crystals else 'none'}\n",
        f"photon_energy_eV = {photon_energy_ev:.6f}\n",
        f"average_camera_length = {clen_m:.6f} m\n",
        f"num_peaks = {len(fs)}\n",
    ]
    if len(fs):
        r = float(np.max(inv_d))
        out.append(f"peak_resolution = {r * 10:.6f} nm^-1 or {1 / r:.6f} A\n")
    out += ["Peaks from peak search\n", "  fs/px   ss/px (1/d)/nm^-1   Intensity  Panel\n"]
    for i in range(len(fs)):
        out.append(f"{fs[i] + 0.5:7.2f} {ss[i] + 0.5:7.2f} {inv_d[i] * 10:10.2f} {inten[i]:11.2f}   {panels[i]}\n")
    out.append("End of peak list\n")
    out += [crystal_text(x) for x in crystals]
    out.append("----- End chunk -----\n")
    return "".join(out)
