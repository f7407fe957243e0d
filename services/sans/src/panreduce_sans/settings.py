"""The reduction settings of a batch: what the ISIS user file, the instrument and the
Mantid correction files (direct-beam efficiency, flat cell) fix for every row
(:func:`settings_from_user_file`), read once per job; :mod:`panreduce_sans.chain` runs
the reduction of each row with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panreduce_sans.batch import RKHData
from panreduce_sans.binning import rebin_edges
from panreduce_sans.corrections import direct_beam_histogram
from panreduce_sans.instrument import Bank, Instrument
from panreduce_sans.userfile import MergeSettings, TransmissionFit, UserFile


class ReductionError(ValueError):
    """Settings or data the reduction cannot use (the caller's to fix)."""


@dataclass(frozen=True)
class Resolution:
    r1: float  # m, source aperture radius (or equivalent)
    r2: float  # m, sample aperture radius
    collimation_length: float  # m
    delta_r: float  # m
    moderator: tuple[np.ndarray, np.ndarray] | None = None  # (lambda Å, sigma_t µs)


@dataclass(frozen=True)
class BankSettings:
    """What one detector bank needs: its description, beam centre, corrections and masks."""

    name: str  # "main" (rear, LAB) or "hab" (front)
    bank: Bank
    centre: tuple[float, float]  # m, SET CENTRE[/HAB]
    direct: tuple[np.ndarray, np.ndarray]  # D and its error on the wavelength grid
    flat: tuple[np.ndarray, np.ndarray]  # F and its error per pixel of the bank
    direct_file: str
    flat_file: str  # "" when there is none (F = 1)
    time_masks: tuple[tuple[float, float], ...]  # µs
    mask_rows: frozenset[int] = frozenset()
    mask_columns: frozenset[int] = frozenset()
    mask_boxes: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = ()
    mask_lines: tuple[tuple[float, float, float | None, float | None], ...] = ()  # m, deg, m, m


@dataclass(frozen=True)
class Settings:
    instrument: Instrument
    detector: str  # DET/: "main", "hab", "both" or "merged"
    banks: tuple[BankSettings, ...]  # the banks to reduce, main first
    wavelength_rebin: tuple[float, ...]  # the L/WAV rebin string
    wavelength_edges: np.ndarray  # Å
    q_edges: np.ndarray  # 1/Å
    radius_min: float  # m
    radius_max: float  # m
    mask_spectra: frozenset[int]
    sample_z: float  # m (L1)
    scale: float  # SET SCALES first value
    incident_monitor: int
    transmission_monitor: int
    incident_monitor_z: float
    monitor_background: tuple[float, float] | None
    trans_background: dict[int, tuple[float, float] | None]
    prompt_peak: tuple[float, float] | None
    fit_sample: TransmissionFit
    fit_can: TransmissionFit
    radius_cut: float = 0.0  # m
    wave_cut: float = 0.0  # Å
    wide_angle: bool = False  # SAMPLE/PATH/ON
    normalisation_errors: bool = True
    split: bool = False
    qxy: tuple[float, float] | None = None  # (q_max, step)
    resolution: Resolution | None = None
    phi: tuple[float, float, bool] | None = None  # L/PHI sector (deg, deg, mirror)
    gravity: bool = False
    gravity_extra_length: float = 0.0  # m
    merge: MergeSettings = field(default_factory=MergeSettings)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def bank(self, name: str) -> BankSettings:
        for b in self.banks:
            if b.name == name:
                return b
        raise KeyError(name)

    @property
    def spectra_range(self) -> tuple[int, int]:
        """(first, last) detector spectrum of the banks reduced: the block to read."""
        lo = min(int(b.bank.spectra.min()) for b in self.banks)
        hi = max(int(b.bank.spectra.max()) for b in self.banks)
        return lo, hi


def _flat_per_pixel(flat: RKHData | None, spectra: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """F and its error per pixel (spectrum order) from an RKH flat-cell file; 1 without one."""
    if flat is None:
        return np.ones(spectra.size), np.zeros(spectra.size)
    index = {int(s): k for k, s in enumerate(spectra)}
    flat_y = np.full(spectra.size, np.nan)
    flat_e = np.zeros(spectra.size)
    for x, y, e in zip(np.rint(flat.x).astype(np.int64), flat.y, flat.e, strict=True):
        k = index.get(int(x))
        if k is not None:
            flat_y[k], flat_e[k] = y, e
    if np.isnan(flat_y).any():
        raise ReductionError(f"the flat-cell file lacks {int(np.isnan(flat_y).sum())} {what} spectra")
    return flat_y, flat_e


def settings_from_user_file(
    uf: UserFile,
    instrument: Instrument,
    direct: RKHData | dict[str, RKHData],
    flat: RKHData | dict[str, RKHData],
    *,
    normalisation_errors: bool = True,
    split: bool = False,
    want_qxy: bool = False,
    moderator: RKHData | None = None,
    radius_cut: float | None = None,
    wave_cut: float | None = None,
) -> Settings:
    """Turn a parsed user file (and its direct-beam and flat-cell files) into settings.

    ``direct`` and ``flat`` map a bank (``main``, ``hab``) to its RKH file; a single file is
    the main bank's. A bank without a flat-cell file gets F = 1 (noted). ``radius_cut`` (mm)
    and ``wave_cut`` (Å), when given, replace L/Q/RCUT and L/Q/WCUT. Raises
    :class:`ReductionError` for what the user file asks but this reduction cannot do, or for
    missing essentials.
    """
    where = uf.lines
    if not isinstance(direct, dict):
        direct = {"main": direct}
    if not isinstance(flat, dict):
        flat = {"main": flat}
    if uf.instrument and uf.instrument != instrument.name:
        raise ReductionError(f"the user file is for {uf.instrument}, not {instrument.name}")
    names = {"main": ("main",), "hab": ("hab",), "both": ("main", "hab"), "merged": ("main", "hab")}[uf.detector]
    if "hab" in names and instrument.hab is None:
        raise ReductionError(f"line {where.get('detector', '?')}: {instrument.name} has no high-angle bank")
    if uf.wavelength_rebin is None or uf.q_rebin is None:
        raise ReductionError("the user file must give L/WAV and L/Q")
    try:
        lam_edges = rebin_edges(uf.wavelength_rebin)
        q_edges = rebin_edges(uf.q_rebin)
    except ValueError as exc:
        raise ReductionError(f"binning: {exc}") from None
    notes: list[str] = []
    banks = []
    for name in names:
        bank = instrument.bank(name)
        centre = uf.centre if name == "main" else uf.centre_hab
        if centre is None:
            raise ReductionError(
                f"the user file must give SET CENTRE{'' if name == 'main' else '/HAB'} for the {bank.name}"
            )
        if name not in direct:
            raise ReductionError(
                f"no direct-beam efficiency file for the {bank.name} "
                f"({'MON/DIRECT' if name == 'main' else 'MON/HAB or MON/DIRECT'})"
            )
        try:
            d, de = direct_beam_histogram(direct[name].x, direct[name].y, direct[name].e, lam_edges)
        except ValueError as exc:
            raise ReductionError(f"direct-beam file for the {bank.name}: {exc}") from None
        if name not in flat:
            notes.append(f"no flat-cell file for the {bank.name}: F = 1")
        flat_pix = _flat_per_pixel(flat.get(name), bank.spectra, bank.name)
        rows = frozenset(i for b, i in uf.mask_rows if b == name)
        cols = frozenset(i for b, i in uf.mask_columns if b == name)
        boxes = tuple((r, c) for b, r, c in uf.mask_boxes if b == name)
        if (rows or cols or boxes) and not bank.grid:
            raise ReductionError(
                f"row, column and box masks (MASK Hn, Vn) are not defined on the modular "
                f"{bank.name}; mask spectra (MASK Sn) instead"
            )
        lines = ()
        if name == "main":  # a beam-stop arm sits in front of the rear bank
            lines = tuple(
                (w / 1e3, a, None if x is None else x / 1e3, None if y is None else y / 1e3)
                for w, a, x, y in uf.mask_lines
            )
        sample_z = instrument.sample_z + uf.sample_offset / 1e3
        if bank.z <= sample_z:
            raise ReductionError(
                f"line {where.get('SAMPLE/OFFSET', '?')}: SAMPLE/OFFSET {uf.sample_offset} mm puts "
                f"the sample at z = {sample_z:.4f} m, not in front of the {bank.name} at z = {bank.z} m"
            )
        if name == "hab" and instrument.hab_note:
            notes.append(instrument.hab_note)
        banks.append(
            BankSettings(
                name=name,
                bank=bank,
                centre=(centre[0] / 1e3, centre[1] / 1e3),
                direct=(d, de),
                flat=flat_pix,
                direct_file=uf.direct_files.get(name, ""),
                flat_file=uf.flat_files.get(name, ""),
                time_masks=tuple((m.t_min, m.t_max) for m in uf.time_masks if m.detector in (None, name)),
                mask_rows=rows,
                mask_columns=cols,
                mask_boxes=boxes,
                mask_lines=lines,
            )
        )
    mon = uf.incident_monitor or instrument.incident_monitor
    trans_mon = uf.transmission_monitor or instrument.transmission_monitor
    mon_z = uf.monitor_lengths.get(mon, instrument.monitor_z.get(mon))
    if mon_z is None:
        raise ReductionError(f"no position for incident monitor spectrum {mon}")
    default_bg = uf.transmission_background or uf.monitor_background
    trans_bg: dict[int, tuple[float, float] | None] = {}
    for spec in (instrument.incident_monitor, trans_mon, mon):
        trans_bg[spec] = uf.monitor_background_by_spectrum.get(spec, default_bg)
    mon_bg = uf.monitor_background_by_spectrum.get(mon, uf.monitor_background)
    resolution = None
    if uf.qresol.on:
        qr = uf.qresol
        r1 = (qr.a1 / 2e3) if qr.a1 else (np.sqrt((qr.h1**2 + qr.w1**2) / 6) / 1e3 if qr.h1 and qr.w1 else None)
        r2 = (qr.a2 / 2e3) if qr.a2 else (np.sqrt((qr.h2**2 + qr.w2**2) / 6) / 1e3 if qr.h2 and qr.w2 else None)
        if r1 is None or r2 is None or qr.collimation_length is None or qr.delta_r is None:
            raise ReductionError("QRESOL/ON needs A1/A2 (or H/W), LCOLLIM and DELTAR")
        mod = None
        if moderator is not None:
            mod = (moderator.x, moderator.y)
        else:
            notes.append("Q resolution without a moderator file: sigma_moderator = 0")
        resolution = Resolution(r1, r2, qr.collimation_length, qr.delta_r / 1e3, mod)
    qxy_spec = None
    if want_qxy:
        if uf.qxy_max is None or uf.qxy_step is None:
            raise ReductionError("2-D output needs L/QXY in the user file")
        if uf.qxy_step < 0:
            raise ReductionError("logarithmic L/QXY binning is not implemented")
        qxy_spec = (uf.qxy_max, uf.qxy_step)
    return Settings(
        instrument=instrument,
        detector=uf.detector,
        banks=tuple(banks),
        wavelength_rebin=tuple(uf.wavelength_rebin),
        wavelength_edges=lam_edges,
        q_edges=q_edges,
        radius_min=(uf.radius_min or 0.0) / 1e3,
        radius_max=(uf.radius_max / 1e3) if uf.radius_max and uf.radius_max > 0 else np.inf,
        mask_spectra=frozenset(uf.mask_spectra),
        sample_z=instrument.sample_z + uf.sample_offset / 1e3,
        scale=uf.scales[0] if uf.scales else 1.0,
        incident_monitor=mon,
        transmission_monitor=trans_mon,
        incident_monitor_z=mon_z,
        monitor_background=mon_bg,
        trans_background=trans_bg,
        prompt_peak=uf.prompt_peak or instrument.prompt_peak,
        fit_sample=uf.fit_for("sample"),
        fit_can=uf.fit_for("can"),
        radius_cut=(uf.radius_cut if radius_cut is None else radius_cut) / 1e3,
        wave_cut=uf.wave_cut if wave_cut is None else wave_cut,
        wide_angle=uf.sample_path,
        normalisation_errors=normalisation_errors,
        split=split,
        qxy=qxy_spec,
        resolution=resolution,
        phi=uf.phi,
        gravity=uf.gravity,
        gravity_extra_length=uf.gravity_extra_length,
        merge=uf.merge,
        notes=tuple(notes),
    )
