"""Writing a reconstruction: NeXus/HDF5 and a PNG overview."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce_ptychography.engines import State
from panreduce_ptychography.problem import Problem, Scan


@dataclass
class Reconstruction:
    """One reconstructed projection with what is needed to write it."""

    key: str
    scan: Scan
    problem: Problem
    state: State
    initial_positions_px: np.ndarray
    engines: list[str]
    device: str
    parameters: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)


def _axes(n: int, pixel: float, origin: float) -> np.ndarray:
    return origin + (np.arange(n) + 0.5) * pixel


def write_nexus(path: Path, r: Reconstruction, *, program: str, version: str) -> None:
    """NXentry ``entry``: NXdata ``object`` (phase, amplitude, complex object on y/x axes in
    m), ``probe`` (complex modes, their power fractions), ``positions`` (refined and
    initial, m), ``error_history`` (per iteration), NXprocess ``reconstruction``."""
    p, s = r.problem, r.state
    dx = p.pixel_size_m
    with h5py.File(path, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["creator"] = program
        f.attrs["default"] = "entry"
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        e.attrs["default"] = "object"
        e["title"] = f"ptychographic reconstruction of {r.scan.source}:{r.scan.name}"
        e["program_name"] = program
        e["program_name"].attrs["version"] = version

        ob = e.create_group("object")
        ob.attrs["NX_class"] = "NXdata"
        ob.attrs["signal"] = "phase"
        ob.attrs["auxiliary_signals"] = ["amplitude"]
        ob.attrs["axes"] = ["y", "x"]
        ob.attrs["y_indices"] = 0
        ob.attrs["x_indices"] = 1
        ob.create_dataset("phase", data=np.angle(s.obj).astype(np.float32), compression="gzip").attrs.update(
            {"units": "rad", "long_name": "object phase (rad)"}
        )
        ob.create_dataset("amplitude", data=np.abs(s.obj).astype(np.float32), compression="gzip").attrs.update(
            {"long_name": "object amplitude (transmission)"}
        )
        ob.create_dataset("object", data=s.obj.astype(np.complex64), compression="gzip").attrs["long_name"] = (
            "complex object transmission"
        )
        ob.create_dataset("y", data=_axes(s.obj.shape[0], dx, p.origin_m[0])).attrs["units"] = "m"
        ob.create_dataset("x", data=_axes(s.obj.shape[1], dx, p.origin_m[1])).attrs["units"] = "m"
        ob.create_dataset("pixel_size", data=dx).attrs["units"] = "m"

        pr = e.create_group("probe")
        pr.attrs["NX_class"] = "NXdata"
        pr.attrs["signal"] = "intensity"
        pr.attrs["axes"] = ["mode", "y", "x"]
        for i, a in enumerate(("mode", "y", "x")):
            pr.attrs[f"{a}_indices"] = i
        k, h, w = s.probe.shape
        power = (np.abs(s.probe) ** 2).sum(axis=(1, 2))
        pr.create_dataset("probe", data=s.probe.astype(np.complex64)).attrs["long_name"] = (
            "probe modes (sqrt(photons) per pixel)"
        )
        pr.create_dataset("intensity", data=(np.abs(s.probe) ** 2).astype(np.float32)).attrs["long_name"] = (
            "probe mode intensity (photons per pixel)"
        )
        pr.create_dataset("mode", data=np.arange(k))
        pr.create_dataset("power_fraction", data=power / max(power.sum(), 1e-30))
        pr.create_dataset("y", data=(np.arange(h) - h / 2) * dx).attrs["units"] = "m"
        pr.create_dataset("x", data=(np.arange(w) - w / 2) * dx).attrs["units"] = "m"

        pos = e.create_group("positions")
        pos.attrs["NX_class"] = "NXdata"
        pos.attrs["signal"] = "y"
        pos.attrs["axes"] = ["x"]
        refined = p.positions_m(s.positions)
        initial = p.positions_m(r.initial_positions_px)
        pos.create_dataset("y", data=refined[:, 0]).attrs["units"] = "m"
        pos.create_dataset("x", data=refined[:, 1]).attrs["units"] = "m"
        pos.create_dataset("initial_y", data=initial[:, 0]).attrs["units"] = "m"
        pos.create_dataset("initial_x", data=initial[:, 1]).attrs["units"] = "m"
        pos.create_dataset("shift_px", data=s.positions - r.initial_positions_px).attrs["long_name"] = (
            "refined - initial (y, x), object pixels"
        )

        hist = e.create_group("error_history")
        hist.attrs["NX_class"] = "NXdata"
        hist.attrs["signal"] = "fourier_error"
        hist.attrs["axes"] = ["iteration"]
        hist.attrs["iteration_indices"] = 0
        rows = s.history
        hist.create_dataset("iteration", data=np.array([h_["iteration"] for h_ in rows], np.int64))
        hist.create_dataset("engine", data=np.array([h_["engine"] for h_ in rows], dtype=h5py.string_dtype()))
        keys = sorted({k_ for h_ in rows for k_ in h_} - {"iteration", "engine"})
        for key in keys:
            hist.create_dataset(key, data=np.array([h_.get(key, np.nan) for h_ in rows], np.float64))
        hist["fourier_error"].attrs["long_name"] = (
            "sum mask (|F P O| - sqrt(n))^2 / sum mask n of the current object and probe"
        )
        if "poisson_deviance" in hist:
            hist["poisson_deviance"].attrs["long_name"] = (
                "Poisson deviance per good pixel of the current object and probe"
            )

        proc = e.create_group("reconstruction")
        proc.attrs["NX_class"] = "NXprocess"
        proc["program"] = program
        proc["version"] = version
        proc["engines"] = ", ".join(r.engines)
        proc["device"] = r.device
        proc["parameters"] = json.dumps(r.parameters, sort_keys=True)
        proc["summary"] = json.dumps(r.summary, sort_keys=True)
        if "converged" in r.summary:  # the convergence test (docs/ptychography.md, Convergence)
            conv = proc.create_group("convergence")
            conv.attrs["NX_class"] = "NXcollection"
            conv["converged"] = bool(r.summary["converged"])
            conv["reason"] = str(r.summary["convergence"])
            conv["stop_reasons"] = ", ".join(r.summary.get("stop_reasons", []))
            conv["iterations"] = int(r.summary["iterations"])
            conv["iterations_cap"] = int(r.summary.get("iterations_cap", r.summary["iterations"]))
            for key in ("fourier_error", "poisson_deviance", "reduced_deviance"):
                if key in r.summary:
                    conv[key] = float(r.summary[key])

        inst = e.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        inst.create_dataset("energy", data=r.scan.energy_ev).attrs["units"] = "eV"
        inst.create_dataset("wavelength", data=p.wavelength_m).attrs["units"] = "m"
        inst.create_dataset("distance", data=r.scan.distance_m).attrs["units"] = "m"
        inst.create_dataset("frame_shape", data=np.array(p.frame_shape))
        if "rotation_angle_deg" in r.scan.metadata:
            sample = e.create_group("sample")
            sample.attrs["NX_class"] = "NXsample"
            sample.create_dataset("rotation_angle", data=r.scan.metadata["rotation_angle_deg"]).attrs["units"] = "deg"


def _complex_rgb(z: np.ndarray) -> np.ndarray:
    from matplotlib.colors import hsv_to_rgb  # on first use: the declaration stays light

    amp = np.abs(z)
    v = amp / max(float(amp.max()), 1e-30)
    h = (np.angle(z) + np.pi) / (2 * np.pi)
    return hsv_to_rgb(np.stack([h, np.ones_like(h), v], axis=-1))


def _limits(img: np.ndarray) -> dict[str, float]:
    """Grey levels from the 1-99 % percentiles of the central part (the scan's edges are
    dimly lit and noisy)."""
    h, w = img.shape
    core = img[h // 6 : h - h // 6, w // 6 : w - w // 6]
    lo, hi = np.percentile(core if core.size else img, [1, 99])
    return {"vmin": float(lo), "vmax": float(hi)} if hi > lo else {}


def write_png(path: Path, r: Reconstruction, lit: np.ndarray | None = None) -> None:
    """A 2 x 2 overview: object phase and amplitude (scanned area), probe (first mode,
    hue = phase), error history."""
    s, p = r.state, r.problem
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 8.5), dpi=90)
    FigureCanvasAgg(fig)
    axs = fig.subplots(2, 2)
    h, w = p.frame_shape
    pos = s.positions
    y0 = max(int(pos[:, 0].min() + h / 4), 0)
    y1 = min(int(pos[:, 0].max() + 3 * h / 4), s.obj.shape[0])
    x0 = max(int(pos[:, 1].min() + w / 4), 0)
    x1 = min(int(pos[:, 1].max() + 3 * w / 4), s.obj.shape[1])
    crop = s.obj[y0:y1, x0:x1]
    dx_um = p.pixel_size_m * 1e6
    ext = (x0 * dx_um, x1 * dx_um, y1 * dx_um, y0 * dx_um)
    phase = np.angle(crop * np.exp(-1j * np.angle(crop.mean())))
    im = axs[0, 0].imshow(phase, cmap="gray", extent=ext, **_limits(phase))
    fig.colorbar(im, ax=axs[0, 0], label="phase (rad)")
    axs[0, 0].set_title("object phase")
    im = axs[0, 1].imshow(np.abs(crop), cmap="gray", extent=ext, **_limits(np.abs(crop)))
    fig.colorbar(im, ax=axs[0, 1], label="amplitude")
    axs[0, 1].set_title("object amplitude")
    for ax in axs[0]:
        ax.set_xlabel("x (µm)")
        ax.set_ylabel("y (µm)")
    pe = (-w / 2 * dx_um, w / 2 * dx_um, h / 2 * dx_um, -h / 2 * dx_um)
    axs[1, 0].imshow(_complex_rgb(s.probe[0]), extent=pe)
    power = (np.abs(s.probe) ** 2).sum(axis=(1, 2))
    axs[1, 0].set_title(f"probe mode 1 ({100 * power[0] / max(power.sum(), 1e-30):.0f} % of power)")
    axs[1, 0].set_xlabel("x (µm)")
    it = [row["iteration"] for row in s.history]
    axs[1, 1].semilogy(it, [max(row["fourier_error"], 1e-12) for row in s.history])
    axs[1, 1].set_xlabel("iteration")
    axs[1, 1].set_ylabel("Fourier error")
    axs[1, 1].set_title(" -> ".join(r.engines))
    fig.suptitle(f"{r.key}: {s.obj.shape[1]}x{s.obj.shape[0]} px of {p.pixel_size_m * 1e9:.1f} nm")
    fig.tight_layout()
    fig.savefig(path)
