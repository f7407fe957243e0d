"""Outputs: NXcanSAS (1-D and 2-D, written by the kit's :mod:`panreduce.nxcansas`), canSAS 1-D
XML (written by SasView's ``sasdata``) and a log-log PNG of I(Q).

NXcanSAS follows the NeXus application definition (``NXcanSAS``, canSAS 1.1) as used by
Mantid's SaveNXcanSAS: ``/sasentry01`` (NXentry, SASentry) with ``sasdata01`` (Q, I, Idev,
Qdev), ``sasinstrument`` (source, detector), ``sassample``, ``sasprocess`` (with the user
file as a note) and one ``sastransmission_spectrumNN`` per transmission (``@name`` sample or
can, unfitted T(lambda)).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce.nxcansas import (
    SasMetadata,
    set_file_attributes,
    write_entry,
    write_entry_2d,
    write_transmission_spectrum,
)
from panreduce_sans.batch import BatchRow
from panreduce_sans.chain import RowResult, TransmissionResult
from panreduce_sans.instrument import Instrument
from panreduce_sans.params import SansParameters
from panreduce_sans.q1d import IQxy
from panreduce_sans.settings import Settings

__all__ = [
    "OutputMetadata",
    "output_metadata",
    "plot_iq",
    "row_summary",
    "write_cansas_xml",
    "write_nxcansas",
    "write_nxcansas_2d",
]


@dataclass(frozen=True)
class OutputMetadata:
    instrument: str
    detector: str
    sdd: float  # m, sample -> detector bank
    beam_centre: tuple[float, float]  # mm
    pixel_size: tuple[float, float]  # mm
    user_file_name: str
    user_file_text: str
    program: str
    version: str
    terms: dict[str, str] = field(default_factory=dict)  # process terms (file names, batch row...)


def _sas_metadata(result: RowResult, meta: OutputMetadata) -> SasMetadata:
    """The NXcanSAS description of one output: instrument, sample, process terms, user file."""
    sample = result.sample
    terms = {
        "sample_runs": " ".join(str(r) for r in sample.run.runs),
        "can_runs": " ".join(str(r) for r in result.can.run.runs) if result.can else "",
        "sample_transmission": _trans_label(sample.transmission),
        "can_transmission": _trans_label(result.can.transmission) if result.can else "",
        "scale_factor": f"{sample.scale:.6g}",
        "user_file": meta.user_file_name,
        **meta.terms,
    }
    return SasMetadata(
        title=result.name,
        run=str(sample.run.run_number),
        sample_name=sample.run.title,
        sample_id=sample.run.title,
        thickness_mm=float(sample.sample.thickness),
        sample_details=(
            f"shape {sample.sample.shape}, width {sample.sample.width} mm, "
            f"height {sample.sample.height} mm, volume {sample.volume:.4f} mm^3"
        ),
        radiation="Spallation Neutron Source",
        probe="neutron",
        source_type="Spallation Neutron Source",
        instrument=meta.instrument,
        detector=meta.detector,
        distance_m=meta.sdd,
        pixel_x_m=meta.pixel_size[0] / 1e3,
        pixel_y_m=meta.pixel_size[1] / 1e3,
        beam_center_mm=meta.beam_centre,
        process_name=meta.program,
        process_version=meta.version,
        process_terms=terms,
        process_notes={"user_file": meta.user_file_text},
    )


def _trans_label(t: TransmissionResult | None) -> str:
    return "" if t is None else f"{t.run} / direct {t.direct}, fit {t.fit.method}"


def write_nxcansas(path: Path, result: RowResult, meta: OutputMetadata) -> None:
    """The 1-D result of one batch row as NXcanSAS (readable by sasdata), with the unfitted
    sample and can transmission spectra."""
    with h5py.File(path, "w") as f:
        set_file_attributes(f, "sasentry01", creator=meta.program)
        entry = write_entry(
            f,
            "sasentry01",
            result.q,
            result.intensity,
            result.error,
            result.q_dev,
            meta=_sas_metadata(result, meta),
            data_name="sasdata01",
        )
        spectra = [("sample", result.sample.transmission)]
        if result.can is not None:
            spectra.append(("can", result.can.transmission))
        k = 0
        for name, t in spectra:
            if t is not None:
                k += 1
                write_transmission_spectrum(
                    entry, f"sastransmission_spectrum{k:02d}", name, t.wavelength, t.transmission, t.error
                )


def write_nxcansas_2d(path: Path, name: str, run: str, iqxy: IQxy, result: RowResult, meta: OutputMetadata) -> None:
    """I(Qx, Qy) as a 2-D NXcanSAS file (Qx, Qy, I, Idev of shape (nqy, nqx))."""
    qx_c = 0.5 * (iqxy.qx_edges[1:] + iqxy.qx_edges[:-1])
    qy_c = 0.5 * (iqxy.qy_edges[1:] + iqxy.qy_edges[:-1])
    qx, qy = np.meshgrid(qx_c, qy_c)
    sas = replace(_sas_metadata(result, meta), title=name, run=run)
    with h5py.File(path, "w") as f:
        set_file_attributes(f, "sasentry01", creator=meta.program)
        write_entry_2d(f, "sasentry01", qx, qy, iqxy.intensity, iqxy.error, meta=sas, data_name="sasdata01")


def write_cansas_xml(path: Path, result: RowResult, meta: OutputMetadata) -> None:
    """canSAS 1-D XML (v1.1) written by sasdata's own canSAS writer."""
    from sasdata.dataloader.data_info import Data1D, Detector, TransmissionSpectrum
    from sasdata.dataloader.readers.cansas_reader import Reader

    d = Data1D(
        x=np.asarray(result.q), y=np.asarray(result.intensity), dx=np.asarray(result.q_dev), dy=np.asarray(result.error)
    )
    d.x_unit = "1/A"
    d.y_unit = "1/cm"
    d.title = result.name
    d.run = [str(result.sample.run.run_number)]
    d.instrument = meta.instrument
    d.source.radiation = "neutron"
    d.sample.name = result.sample.run.title
    d.sample.thickness = float(result.sample.sample.thickness)
    d.sample.thickness_unit = "mm"
    det = Detector()
    det.name = meta.detector
    det.distance = meta.sdd * 1000.0
    det.distance_unit = "mm"
    d.detector.append(det)
    for name, res in (("sample", result.sample), ("can", result.can)):
        if res is None or res.transmission is None:
            continue
        ts = TransmissionSpectrum()
        ts.name = name
        ts.wavelength = res.transmission.wavelength.tolist()
        ts.wavelength_unit = "A"
        ts.transmission = res.transmission.transmission.tolist()
        ts.transmission_deviation = res.transmission.error.tolist()
        d.trans_spectrum.append(ts)
    Reader().write(str(path), d)


def plot_iq(path: Path, result: RowResult) -> None:
    """Log-log I(Q) with error bars: the subtracted result, and the sample and the can (or,
    for merged banks, each bank's subtracted curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.93)
    q = result.q
    pos = result.intensity > 0
    ax.errorbar(
        q[pos],
        result.intensity[pos],
        yerr=result.error[pos],
        fmt="o",
        ms=3,
        capsize=1.5,
        label=f"{result.name} (sample - can)",
    )
    if result.parts:
        m = result.merge
        for part in result.parts:
            ok = part.sample.iq.denominator > 0
            if part.bank == "hab" and m is not None:
                ax.plot(
                    q[ok],
                    m.rescale * (part.intensity[ok] + m.shift),
                    "-",
                    lw=0.8,
                    alpha=0.7,
                    label=f"hab bank, x{m.rescale:.3g} after {m.shift:+.3g} 1/cm",
                )
            else:
                ax.plot(q[ok], part.intensity[ok], "-", lw=0.8, alpha=0.7, label=f"{part.bank} bank")
        if result.merge is not None:
            for edge in result.merge.overlap:
                ax.axvline(edge, color="grey", lw=0.6, ls=":")
    else:
        ax.plot(q, result.sample.iq.intensity, "-", lw=0.8, alpha=0.6, label=f"sample {result.sample.run.name}")
        if result.can is not None:
            ax.plot(q, result.can.iq.intensity, "-", lw=0.8, alpha=0.6, label=f"can {result.can.run.name}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Q (1/Å)")
    ax.set_ylabel("I(Q) (1/cm)")
    ax.set_title(result.name)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path)
    plt.close(fig)


# -- what each output records ----------------------------------------------------------
def output_metadata(
    inst: Instrument,
    settings: Settings,
    result: RowResult,
    *,
    row: BatchRow,
    params: SansParameters,
    version: str,
    user_file_name: str,
    user_file_text: str,
) -> OutputMetadata:
    """Instrument, detector and process metadata of one output (one bank, or merged)."""
    names = ("main", "hab") if result.bank == "merged" else (result.bank,)
    banks = [settings.bank(b) for b in names]
    first = banks[0]
    terms = {
        "batch_file": params.batch_file,
        "batch_line": str(row.line),
        "detector": result.bank,
        "direct_beam_file": " ".join(b.direct_file for b in banks),
        "flat_cell_file": " ".join(b.flat_file or "(none: F = 1)" for b in banks),
        "q_assignment": params.q_assignment,
        "normalisation_errors": str(params.normalisation_errors).lower(),
    }
    if settings.gravity:
        terms["gravity"] = f"on, extra length {settings.gravity_extra_length} m"
    if settings.phi is not None:
        lo, hi, mirror = settings.phi
        terms["sector"] = f"phi {lo} to {hi} deg{' and mirror' if mirror else ''}"
    if result.merge is not None:
        m = result.merge
        terms["merge"] = (
            f"HAB rescale {m.rescale:.6g}{' (fitted)' if settings.merge.fit_rescale else ''}, "
            f"shift {m.shift:.6g} 1/cm{' (fitted)' if settings.merge.fit_shift else ''}, "
            f"merge range {m.overlap[0]:.6g}-{m.overlap[1]:.6g} 1/angstrom"
        )
    if any(b.name == "hab" for b in banks) and inst.hab_note:
        terms["hab_geometry"] = inst.hab_note
    return OutputMetadata(
        instrument=inst.name,
        detector=" + ".join(b.bank.name for b in banks),
        sdd=first.bank.z - settings.sample_z,
        beam_centre=(first.centre[0] * 1e3, first.centre[1] * 1e3),
        pixel_size=(first.bank.pixel_size[0] * 1e3, first.bank.pixel_size[1] * 1e3),
        user_file_name=user_file_name,
        user_file_text=user_file_text,
        program="panreduce-sans",
        version=version,
        terms=terms,
    )


def _num(x: float) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def row_summary(row: BatchRow, name: str, result: RowResult) -> dict[str, Any]:
    s = result.sample
    out: dict[str, Any] = {
        "output": name,
        "batch_line": row.line,
        "detector": result.bank,
        "sample_runs": list(s.run.runs),
        "can_runs": list(result.can.run.runs) if result.can else [],
        "scale": _num(s.scale),
        "volume_mm3": _num(s.volume),
        "n_q": int(result.q.size),
        "i_first": _num(result.intensity[0]),
        "i_last": _num(result.intensity[-1]),
    }
    for which, res in (("sample", s), ("can", result.can)):
        if res is not None and res.transmission is not None:
            t = res.transmission
            out[f"{which}_transmission_mean"] = _num(np.mean(t.fit.values))
            out[f"{which}_transmission_fit"] = [_num(c) for c in t.fit.coefficients]
    if result.merge is not None:
        out["merge_rescale"] = _num(result.merge.rescale)
        out["merge_shift"] = _num(result.merge.shift)
        out["merge_range"] = [_num(result.merge.overlap[0]), _num(result.merge.overlap[1])]
    return out
