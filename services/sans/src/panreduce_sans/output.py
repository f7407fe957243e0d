"""Outputs: NXcanSAS (1-D and 2-D), canSAS 1-D XML (written by SasView's ``sasdata``) and a
log-log PNG of I(Q).

NXcanSAS follows the NeXus application definition (``NXcanSAS``, canSAS 1.1) as used by
Mantid's SaveNXcanSAS: ``/sasentry01`` (NXentry, SASentry) with ``sasdata01`` (Q, I, Idev,
Qdev), ``sasinstrument`` (source, detector), ``sassample``, ``sasprocess`` (with the user
file as a note) and one ``sastransmission_spectrumNN`` per transmission (``@name`` sample or
can, unfitted T(lambda)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from panreduce_sans.q1d import IQxy
from panreduce_sans.reduction import RowResult, TransmissionResult

__all__ = ["OutputMetadata", "plot_iq", "write_cansas_xml", "write_nxcansas", "write_nxcansas_2d"]


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


def _str(group: h5py.Group, name: str, value: str) -> h5py.Dataset:
    return group.create_dataset(name, data=np.bytes_(value.encode("utf-8")))


def _group(parent: h5py.Group, name: str, nx: str, cansas: str | None = None) -> h5py.Group:
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx
    if cansas:
        g.attrs["canSAS_class"] = cansas
    return g


def _entry(f: h5py.File, title: str, run: str) -> h5py.Group:
    f.attrs["default"] = "sasentry01"
    f.attrs["file_name"] = Path(f.filename).name
    f.attrs["file_time"] = datetime.now(UTC).isoformat()
    f.attrs["NX_class"] = "NXroot"
    entry = _group(f, "sasentry01", "NXentry", "SASentry")
    entry.attrs["version"] = "1.1"
    entry.attrs["default"] = "sasdata01"
    _str(entry, "definition", "NXcanSAS")
    _str(entry, "title", title)
    _str(entry, "run", run)
    return entry


def _instrument_sample_process(entry: h5py.Group, result: RowResult, meta: OutputMetadata) -> None:
    inst = _group(entry, "sasinstrument", "NXinstrument", "SASinstrument")
    _str(inst, "name", meta.instrument)
    src = _group(inst, "sassource", "NXsource", "SASsource")
    _str(src, "radiation", "Spallation Neutron Source")
    _str(src, "probe", "neutron")
    _str(src, "type", "Spallation Neutron Source")
    det = _group(inst, "sasdetector", "NXdetector", "SASdetector")
    _str(det, "name", meta.detector)
    det.create_dataset("SDD", data=meta.sdd).attrs["units"] = "m"
    det.create_dataset("beam_center_x", data=meta.beam_centre[0]).attrs["units"] = "mm"
    det.create_dataset("beam_center_y", data=meta.beam_centre[1]).attrs["units"] = "mm"
    det.create_dataset("x_pixel_size", data=meta.pixel_size[0]).attrs["units"] = "mm"
    det.create_dataset("y_pixel_size", data=meta.pixel_size[1]).attrs["units"] = "mm"

    sample = result.sample
    smp = _group(entry, "sassample", "NXsample", "SASsample")
    _str(smp, "name", sample.run.title)
    _str(smp, "ID", sample.run.title)
    smp.create_dataset("thickness", data=sample.sample.thickness).attrs["units"] = "mm"
    _str(smp, "details", f"shape {sample.sample.shape}, width {sample.sample.width} mm, "
         f"height {sample.sample.height} mm, volume {sample.volume:.4f} mm^3")

    proc = _group(entry, "sasprocess", "NXprocess", "SASprocess")
    _str(proc, "name", meta.program)
    _str(proc, "version", meta.version)
    _str(proc, "date", datetime.now(UTC).isoformat())
    terms = {
        "sample_runs": " ".join(str(r) for r in sample.run.runs),
        "can_runs": " ".join(str(r) for r in result.can.run.runs) if result.can else "",
        "sample_transmission": _trans_label(sample.transmission),
        "can_transmission": _trans_label(result.can.transmission) if result.can else "",
        "scale_factor": f"{sample.scale:.6g}",
        "user_file": meta.user_file_name,
        **meta.terms,
    }
    for i, (name, value) in enumerate(terms.items()):
        d = _str(proc, f"term{i:02d}", value)
        d.attrs["name"] = name
    note = _group(proc, "user_file", "NXnote", "SASprocessnote")
    _str(note, "name", meta.user_file_name)
    _str(note, "type", "text/plain")
    _str(note, "data", meta.user_file_text)


def _trans_label(t: TransmissionResult | None) -> str:
    return "" if t is None else f"{t.run} / direct {t.direct}, fit {t.fit.method}"


def write_nxcansas(path: Path, result: RowResult, meta: OutputMetadata) -> None:
    """The 1-D result of one batch row as NXcanSAS (readable by sasdata)."""
    with h5py.File(path, "w") as f:
        entry = _entry(f, result.name, str(result.sample.run.run_number))
        data = _group(entry, "sasdata01", "NXdata", "SASdata")
        data.attrs["signal"] = "I"
        data.attrs["I_axes"] = "Q"
        data.attrs["Q_indices"] = np.int32(0)
        q = data.create_dataset("Q", data=result.q)
        q.attrs["units"] = "1/angstrom"
        q.attrs["resolutions"] = "Qdev"
        i = data.create_dataset("I", data=result.intensity)
        i.attrs["units"] = "1/cm"
        i.attrs["uncertainties"] = "Idev"
        data.create_dataset("Idev", data=result.error).attrs["units"] = "1/cm"
        data.create_dataset("Qdev", data=result.q_dev).attrs["units"] = "1/angstrom"
        _instrument_sample_process(entry, result, meta)
        spectra = [("sample", result.sample.transmission)]
        if result.can is not None:
            spectra.append(("can", result.can.transmission))
        k = 0
        for name, t in spectra:
            if t is None:
                continue
            k += 1
            g = _group(entry, f"sastransmission_spectrum{k:02d}", "NXdata", "SAStransmission_spectrum")
            g.attrs["name"] = name
            g.attrs["signal"] = "T"
            g.attrs["T_axes"] = "lambda"
            g.attrs["T_indices"] = np.int32(0)
            g.create_dataset("lambda", data=t.wavelength).attrs["units"] = "angstrom"
            tt = g.create_dataset("T", data=t.transmission)
            tt.attrs["units"] = "none"
            tt.attrs["uncertainties"] = "Tdev"
            g.create_dataset("Tdev", data=t.error).attrs["units"] = "none"


def write_nxcansas_2d(path: Path, name: str, run: str, iqxy: IQxy, result: RowResult, meta: OutputMetadata) -> None:
    """I(Qx, Qy) as a 2-D NXcanSAS file (Qx, Qy, I, Idev of shape (nqy, nqx))."""
    qx_c = 0.5 * (iqxy.qx_edges[1:] + iqxy.qx_edges[:-1])
    qy_c = 0.5 * (iqxy.qy_edges[1:] + iqxy.qy_edges[:-1])
    qx, qy = np.meshgrid(qx_c, qy_c)
    with h5py.File(path, "w") as f:
        entry = _entry(f, name, run)
        data = _group(entry, "sasdata01", "NXdata", "SASdata")
        data.attrs["signal"] = "I"
        data.attrs["I_axes"] = "Qx,Qy"  # as sasdata's own NXcanSAS writer
        data.attrs["Q_indices"] = np.array([0, 1], dtype=np.int32)
        i = data.create_dataset("I", data=iqxy.intensity)
        i.attrs["units"] = "1/cm"
        i.attrs["uncertainties"] = "Idev"
        data.create_dataset("Idev", data=iqxy.error).attrs["units"] = "1/cm"
        data.create_dataset("Qx", data=qx).attrs["units"] = "1/angstrom"
        data.create_dataset("Qy", data=qy).attrs["units"] = "1/angstrom"
        _instrument_sample_process(entry, result, meta)


def write_cansas_xml(path: Path, result: RowResult, meta: OutputMetadata) -> None:
    """canSAS 1-D XML (v1.1) written by sasdata's own canSAS writer."""
    from sasdata.dataloader.data_info import Data1D, Detector, TransmissionSpectrum
    from sasdata.dataloader.readers.cansas_reader import Reader

    d = Data1D(x=np.asarray(result.q), y=np.asarray(result.intensity),
               dx=np.asarray(result.q_dev), dy=np.asarray(result.error))
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
    ax.errorbar(q[pos], result.intensity[pos], yerr=result.error[pos], fmt="o", ms=3, capsize=1.5,
                label=f"{result.name} (sample - can)")
    if result.parts:
        m = result.merge
        for part in result.parts:
            ok = part.sample.iq.denominator > 0
            if part.bank == "hab" and m is not None:
                ax.plot(q[ok], m.rescale * (part.intensity[ok] + m.shift), "-", lw=0.8, alpha=0.7,
                        label=f"hab bank, x{m.rescale:.3g} after {m.shift:+.3g} 1/cm")
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
