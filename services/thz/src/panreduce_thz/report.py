"""Outputs of the thz technique: NeXus (thz.nxs), CSV of the binned waveform, PNG
figures, and the HDF5 partial statistics a shard hands to the combine."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import nexus
from panreduce_thz.binning import BinnedWaveform, DelayAccumulator
from panreduce_thz.pipeline import HIST_PX, PositionStats, RunStats
from panreduce_thz.spectra import Harmonic, Spectrum


@dataclass(frozen=True)
class Analysis:
    """One waveform's analysis: the binned waveform, its spectrum and harmonics."""

    label: str
    wave: BinnedWaveform
    spectrum: Spectrum | None
    harmonics: list[Harmonic]
    filled_bins: int


def harmonic_rows(hs: list[Harmonic]) -> list[dict]:
    return [
        {
            "order": h.order,
            "frequency_thz": h.frequency_thz,
            "amplitude": h.amplitude,
            "amplitude_err": h.amplitude_err,
            "phase_rad": h.phase_rad,
            "phase_err_rad": h.phase_err_rad,
            "significance": min(h.significance, 1e12),
        }
        for h in hs
    ]


def _write_wave(entry: h5py.Group, name: str, w: BinnedWaveform, title: str, *, default: bool) -> None:
    g = nexus.write_nxdata(
        entry,
        name,
        signal="signal",
        data=w.signal,
        errors=w.error,
        axes=[("delay", w.delay_ps)],
        units={"delay": "ps", "signal": ""},
        long_names={
            "delay": "pump-probe delay, bin centre (ps)",
            "signal": "mean gated signal (a.u.)",
            "signal_errors": "standard error of the mean",
        },
        title=title,
        default=default,
    )
    g.create_dataset("pulses", data=w.count).attrs["long_name"] = "pulses per bin (0: empty, signal NaN)"
    g.attrs["auxiliary_signals"] = ["pulses"]


def _write_spectrum(entry: h5py.Group, name: str, a: Analysis) -> None:
    s = a.spectrum
    g = nexus.write_nxdata(
        entry,
        name,
        signal="amplitude",
        data=s.amplitude,
        axes=[("frequency", s.frequency_thz)],
        units={"frequency": "THz", "amplitude": ""},
        long_names={"frequency": "frequency (THz)", "amplitude": "window-normalised amplitude 2|FFT|/sum(w)"},
        default=False,
    )
    power = g.create_dataset("power", data=s.power)
    power.attrs.update(units="", long_name="power amplitude^2/2")
    g.attrs["auxiliary_signals"] = ["power"]
    h = nexus.make_group(g, "harmonics", "NXcollection")
    rows = harmonic_rows(a.harmonics)
    for key, unit in (
        ("order", ""),
        ("frequency_thz", "THz"),
        ("amplitude", ""),
        ("amplitude_err", ""),
        ("phase_rad", "rad"),
        ("phase_err_rad", "rad"),
    ):
        h.create_dataset(key, data=np.array([r[key] for r in rows], dtype=float)).attrs["units"] = unit


def write_nexus(
    path: Path,
    *,
    corrected: Analysis,
    uncorrected: Analysis,
    stats: RunStats,
    pixel_to_ps: float,
    program: str,
    version: str,
    date: str | None,
    pulse_table: Path | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> None:
    """thz.nxs: one NXentry (no application definition fits a pump-probe THz waveform)
    with NXdata ``waveform`` (the default), ``waveform_uncorrected``, ``spectrum``(s),
    ``timing`` (the arrival-time histogram), NXcollection ``positions``, the optional
    per-pulse table and NXprocess ``process``."""
    with h5py.File(path, "w") as f:
        f.attrs.update(NX_class="NXroot", creator=f"{nexus.program_name(program)} {version}")
        e = nexus.make_group(f, "entry", "NXentry")
        nexus.write_text(e, "title", "THz pump-probe waveform")
        if date:
            nexus.write_text(e, "start_time", date)
        _write_wave(e, "waveform", corrected.wave, "jitter-corrected waveform", default=True)
        _write_wave(e, "waveform_uncorrected", uncorrected.wave, "stage-only waveform", default=False)
        if corrected.spectrum is not None:
            _write_spectrum(e, "spectrum", corrected)
        if uncorrected.spectrum is not None:
            _write_spectrum(e, "spectrum_uncorrected", uncorrected)
        mean_px, _ = stats.arrival_mean_rms_px()
        centres = (np.arange(stats.histogram.size) + 0.5) * HIST_PX
        t = nexus.write_nxdata(
            e,
            "timing",
            signal="pulses",
            data=stats.histogram,
            axes=[("jitter", (centres - mean_px) * pixel_to_ps * 1000)],
            units={"jitter": "fs"},
            long_names={"jitter": "arrival time - run mean (fs)"},
            default=False,
        )
        t.create_dataset("arrival_pixel", data=centres).attrs["units"] = "pixel"
        p = nexus.make_group(e, "positions", "NXcollection")
        q = stats.positions
        p.create_dataset("stage_position", data=[x.position_mm for x in q]).attrs["units"] = "mm"
        p.create_dataset("stage_delay", data=[x.stage_ps for x in q]).attrs["units"] = "ps"
        p.create_dataset("pulses", data=[x.pulses for x in q])
        p.create_dataset("mean_arrival_pixel", data=[x.arrival_sum / max(x.pulses, 1) for x in q]).attrs["units"] = (
            "pixel"
        )
        if pulse_table is not None:
            with h5py.File(pulse_table, "r") as src:
                g = nexus.make_group(e, "pulses", "NXdata", signal="signal", axes=["delay"])
                for key in src:
                    src.copy(src[key], g, name=key)
        nexus.write_nxprocess(
            e,
            technique=program,
            version=version,
            parameters=parameters,
            notes={"pixel_to_ps": f"{pixel_to_ps!r} ps per camera pixel"},
        )


def write_csv(path: Path, w: BinnedWaveform) -> None:
    with open(path, "w", newline="") as fh:
        fh.write(
            "# jitter-corrected binned waveform; delay_ps = bin centre (the facility's notebook "
            "writes the upper edge, half a bin later); empty bins: pulses 0, signal empty\n"
        )
        out = csv.writer(fh)
        out.writerow(["delay_ps", "signal", "error", "pulses"])
        for t, y, e, n in zip(w.delay_ps, w.signal, w.error, w.count, strict=True):
            out.writerow([f"{t:.6f}", "" if np.isnan(y) else f"{y:.8g}", "" if np.isnan(e) else f"{e:.3g}", int(n)])


# -- shard partials ----------------------------------------------------------------------
def save_stats(path: Path, stats: RunStats, *, pixel_to_ps: float, date: str | None) -> None:
    with h5py.File(path, "w") as f:
        a = stats.corrected
        f.attrs.update(
            bin_ps=a.bin_ps,
            first=a.first,
            width_px=stats.width_px,
            dropped=stats.dropped,
            pixel_to_ps=pixel_to_ps,
            date=date or "",
        )
        for key in ("count", "total", "total_sq"):
            f.create_dataset(key, data=getattr(a, key))
        f.create_dataset("histogram", data=stats.histogram)
        cols = ("position_mm", "stage_ps", "pulses", "signal_sum", "signal_sq", "arrival_sum", "arrival_sq")
        f.create_dataset(
            "positions",
            data=np.array([[getattr(q, c) for c in cols] for q in stats.positions], dtype=float).reshape(-1, len(cols)),
        )


def load_stats(path: Path) -> tuple[RunStats, str]:
    with h5py.File(path, "r") as f:
        a = DelayAccumulator(
            float(f.attrs["bin_ps"]), int(f.attrs["first"]), f["count"][()], f["total"][()], f["total_sq"][()]
        )
        positions = [PositionStats(r[0], r[1], int(r[2]), r[3], r[4], r[5], r[6]) for r in f["positions"][()]]
        return (
            RunStats(a, int(f.attrs["width_px"]), positions, f["histogram"][()], int(f.attrs["dropped"])),
            str(f.attrs["date"]),
        )


# -- figures -----------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_waveform(path: Path, corrected: Analysis, uncorrected: Analysis) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    w = corrected.wave
    ax.fill_between(w.delay_ps, w.signal - w.error, w.signal + w.error, color="C0", alpha=0.3, lw=0)
    ax.plot(w.delay_ps, w.signal, color="C0", lw=0.8, label="jitter-corrected")
    u = uncorrected.wave
    ok = u.count > 0
    ax.plot(u.delay_ps[ok], u.signal[ok], ".-", color="C1", ms=2, lw=0.6, label="stage only")
    ax.set_xlabel("delay (ps)")
    ax.set_ylabel("signal (a.u.)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_spectrum(path: Path, corrected: Analysis, uncorrected: Analysis, *, band_thz=(0.15, 3.0)) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    for a, colour in ((corrected, "C0"), (uncorrected, "C1")):
        if a.spectrum is None:
            continue
        s = a.spectrum
        sel = (s.frequency_thz >= band_thz[0]) & (s.frequency_thz <= band_thz[1])
        ax.semilogy(s.frequency_thz[sel], np.maximum(s.power[sel], 1e-30), color=colour, lw=0.8, label=a.label)
    for h in corrected.harmonics:
        ax.axvline(h.frequency_thz, color="grey", ls=":", lw=0.8)
        ax.annotate(
            f"{h.order}f0", (h.frequency_thz, 1), xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=8
        )
    ax.set_xlabel("frequency (THz)")
    ax.set_ylabel("power (a.u.)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_jitter(path: Path, stats: RunStats, *, pixel_to_ps: float) -> None:
    plt = _plt()
    mean_px, rms_px = stats.arrival_mean_rms_px()
    centres = ((np.arange(stats.histogram.size) + 0.5) * HIST_PX - mean_px) * pixel_to_ps * 1000
    nz = np.flatnonzero(stats.histogram)
    sl = slice(nz[0], nz[-1] + 1) if nz.size else slice(None)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step(centres[sl], stats.histogram[sl], where="mid")
    ax.set_xlabel("arrival time - mean (fs)")
    ax.set_ylabel("pulses")
    ax.set_title(f"timing jitter {rms_px * pixel_to_ps * 1000:.1f} fs rms")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
