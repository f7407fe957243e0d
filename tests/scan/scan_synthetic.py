"""Synthetic I16-like scans with known peaks (counting statistics), for the tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from panreduce_scan.peaks import model_curve

FRACTION = {"gaussian": 0.0, "lorentzian": 1.0, "pseudo_voigt": 0.5}


def synthetic_counts(
    rng: np.random.Generator,
    x: np.ndarray,
    *,
    model: str = "gaussian",
    center: float = 0.05,
    fwhm: float = 0.3,
    area: float = 600.0,
    background: float = 100.0,
    slope: float = 20.0,
) -> np.ndarray:
    """Poisson counts of a peak (``area`` in counts x axis units) on a linear background."""
    expected = model_curve(
        x,
        center=center,
        fwhm=fwhm,
        area=area,
        bg_level=background,
        bg_slope=slope,
        x_ref=float(np.mean(x)),
        fraction=FRACTION[model],
    )
    return rng.poisson(expected).astype(float)


def write_i16_file(
    path: Path,
    columns: dict[str, np.ndarray],
    *,
    declared_axis: str | None = None,
    declared_signal: str | None = None,
    scan_command: str = "",
    before_scan: dict[str, float] | None = None,
    measurement: bool = True,
    entry_identifier: str | None = "123456",
) -> Path:
    """A minimal 2019-layout I16 NeXus file (``entry1``), with or without ``measurement``."""
    with h5py.File(path, "w") as f:
        e = f.create_group("entry1")
        e.attrs["NX_class"] = "NXentry"
        if entry_identifier:
            e["entry_identifier"] = entry_identifier
        if scan_command:
            e["scan_command"] = scan_command
        inst = e.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        for name, values in columns.items():
            g = inst.create_group(name)
            is_det = name.startswith("roi") or name in ("sum", "APD")
            g.attrs["NX_class"] = "NXdetector" if is_det else "NXpositioner"
            ds = g.create_dataset(name, data=values)
            if name == declared_axis:
                ds.attrs["primary"] = "1"
        if measurement:
            m = e.create_group("measurement")
            m.attrs["NX_class"] = "NXdata"
            for name, values in columns.items():
                m[name] = values
            if declared_axis:
                m.attrs["axes"] = np.array([declared_axis.encode()])
            if declared_signal:
                m.attrs["signal"] = declared_signal
        if before_scan:
            b = e.create_group("before_scan")
            b.attrs["NX_class"] = "NXcollection"
            for key, value in before_scan.items():
                g = b.create_group(key)
                g.attrs["NX_class"] = "NXcollection"
                g[key] = value
    return path
