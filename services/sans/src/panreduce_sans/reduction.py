"""The ISIS TOF SANS reduction chain for one batch row, built from the pure steps.

Sample and can are reduced identically (own summed runs, monitor, transmission fit and
volume; shared direct-beam efficiency, flat cell, masks and grids), then subtracted bin by
bin (fact sheet ``loq-sans.md`` §5.11).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panreduce_sans.batch import RKHData
from panreduce_sans.binning import bin_centres, rebin_counts, rebin_edges
from panreduce_sans.corrections import (
    NEUTRON_H_OVER_M,
    FitResult,
    absolute_scale,
    direct_beam_histogram,
    fit_transmission,
    gravity_aim,
    gravity_two_theta,
    line_mask,
    monitor_spectrum,
    radius_wave_cut,
    sample_volume,
    sector_mask,
    time_mask_bins,
    transmission_ratio,
    wide_angle_transmission,
)
from panreduce_sans.instrument import Bank, Instrument, PixelGeometry, pixel_geometry
from panreduce_sans.merge import MergeResult, fit_rescale_shift, merge_range, stitch
from panreduce_sans.q1d import IQ, IQxy, q1d, q_resolution_sigma, qxy
from panreduce_sans.rawfile import RawRun, SampleGeometry
from panreduce_sans.userfile import MergeSettings, TransmissionFit, UserFile

__all__ = [
    "BankSettings",
    "DetectorSetup",
    "ReductionError",
    "RowResult",
    "ScatterResult",
    "Settings",
    "TransmissionResult",
    "calculate_transmission",
    "detector_setup",
    "merge_rows",
    "reduce_scatter",
    "settings_from_user_file",
    "subtract",
]


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
            raise ReductionError(f"the user file must give SET CENTRE{'' if name == 'main' else '/HAB'} "
                                 f"for the {bank.name}")
        if name not in direct:
            raise ReductionError(f"no direct-beam efficiency file for the {bank.name} "
                                 f"({'MON/DIRECT' if name == 'main' else 'MON/HAB or MON/DIRECT'})")
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
            raise ReductionError(f"row, column and box masks (MASK Hn, Vn) are not defined on the modular "
                                 f"{bank.name}; mask spectra (MASK Sn) instead")
        lines = ()
        if name == "main":  # a beam-stop arm sits in front of the rear bank
            lines = tuple((w / 1e3, a, None if x is None else x / 1e3, None if y is None else y / 1e3)
                          for w, a, x, y in uf.mask_lines)
        sample_z = instrument.sample_z + uf.sample_offset / 1e3
        if bank.z <= sample_z:
            raise ReductionError(f"line {where.get('SAMPLE/OFFSET', '?')}: SAMPLE/OFFSET {uf.sample_offset} mm puts "
                                 f"the sample at z = {sample_z:.4f} m, not in front of the {bank.name} at z = {bank.z} m")
        if name == "hab" and instrument.hab_note:
            notes.append(instrument.hab_note)
        banks.append(BankSettings(
            name=name, bank=bank, centre=(centre[0] / 1e3, centre[1] / 1e3), direct=(d, de), flat=flat_pix,
            direct_file=uf.direct_files.get(name, ""), flat_file=uf.flat_files.get(name, ""),
            time_masks=tuple((m.t_min, m.t_max) for m in uf.time_masks if m.detector in (None, name)),
            mask_rows=rows, mask_columns=cols, mask_boxes=boxes, mask_lines=lines))
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


@dataclass(frozen=True)
class DetectorSetup:
    bank: BankSettings
    geometry: PixelGeometry  # every pixel of the bank
    keep: np.ndarray  # bool per pixel: used in the reduction


def detector_setup(settings: Settings, bank: str = "main") -> DetectorSetup:
    """Pixel geometry of one bank after its beam-centre move, and its pixel mask (§5.3):
    radius, rows, columns, boxes, spectra, lines and the L/PHI sector."""
    inst = settings.instrument
    bs = settings.bank(bank)
    shift = inst.beam_centre_shift(bs.centre)
    geo = pixel_geometry(bs.bank, sample_z=settings.sample_z, shift=shift)
    keep = (geo.radius >= settings.radius_min) & (geo.radius <= settings.radius_max)
    if bs.mask_rows or bs.mask_columns or bs.mask_boxes:
        ix, iy = bs.bank.indices()
        if bs.mask_rows:
            keep &= ~np.isin(iy, list(bs.mask_rows))
        if bs.mask_columns:
            keep &= ~np.isin(ix, list(bs.mask_columns))
        for (r0, r1), (c0, c1) in bs.mask_boxes:
            keep &= ~((iy >= r0) & (iy <= r1) & (ix >= c0) & (ix <= c1))
    if settings.mask_spectra:
        keep &= ~np.isin(geo.spectra, list(settings.mask_spectra))
    for width, angle, x0, y0 in bs.mask_lines:
        # the arm starts at the beam axis unless a point (relative to the beam axis) is given
        keep &= ~line_mask(geo.x, geo.y, width, angle, x0=x0 or 0.0, y0=y0 or 0.0)
    if settings.phi is not None:
        keep &= sector_mask(geo.x, geo.y, settings.phi[0], settings.phi[1], mirror=settings.phi[2])
    return DetectorSetup(bs, geo, keep)


@dataclass(frozen=True)
class TransmissionResult:
    run: str  # transmission run label
    direct: str  # direct run label
    fit_edges: np.ndarray  # Å, the grid of the unfitted spectrum
    transmission: np.ndarray  # unfitted T on fit_edges
    error: np.ndarray
    fit: FitResult  # fitted T on the reduction grid

    @property
    def wavelength(self) -> np.ndarray:
        return bin_centres(self.fit_edges)


def _fit_grid(settings: Settings, fit: TransmissionFit) -> np.ndarray:
    """The FIT/TRANS range binned with the L/WAV step, or the reduction grid."""
    rebin = settings.wavelength_rebin
    if fit.method == "off" or fit.lambda_min is None or fit.lambda_max is None or len(rebin) != 3:
        return settings.wavelength_edges
    return rebin_edges([fit.lambda_min, rebin[1], fit.lambda_max])


def _monitor_counts(run: RawRun, spectrum: int) -> tuple[np.ndarray, np.ndarray]:
    """(TOF edges, counts) of a monitor spectrum, from the monitor block or the detector block."""
    if spectrum in run.monitors:
        return run.monitor_tof, run.monitors[spectrum]
    if np.any(run.spectra == spectrum):
        return run.tof, run.spectrum(spectrum)
    raise ReductionError(f"{run.source}: has no spectrum {spectrum}")


def calculate_transmission(
    trans: RawRun, direct: RawRun, settings: Settings, fit: TransmissionFit
) -> TransmissionResult:
    """T = (S3/S2)/(D3/D2) on the fit grid, and its fit on the reduction grid (§5.6)."""
    inst = settings.instrument
    inc, tra = inst.incident_monitor, settings.transmission_monitor
    edges = _fit_grid(settings, fit)
    spectra = []
    for run in (trans, direct):
        for spec in (inc, tra):
            z = inst.trans_monitor_z.get(spec)
            if z is None:
                raise ReductionError(f"no position for transmission-run spectrum {spec}")
            tof, counts = _monitor_counts(run, spec)
            spectra.append(monitor_spectrum(tof, counts, z, edges, prompt_peak=settings.prompt_peak,
                                            background=settings.trans_background.get(spec)))
    t, te = transmission_ratio(spectra[0], spectra[1], spectra[2], spectra[3])
    try:
        fitted = fit_transmission(bin_centres(edges), t, te, bin_centres(settings.wavelength_edges),
                                  method=fit.method, order=fit.order,
                                  lambda_min=fit.lambda_min, lambda_max=fit.lambda_max)
    except ValueError as exc:
        raise ReductionError(f"transmission of run {trans.name}: {exc}") from None
    return TransmissionResult(trans.name, direct.name, edges, t, te, fitted)


@dataclass(frozen=True)
class ScatterResult:
    run: RawRun
    iq: IQ
    iqxy: IQxy | None
    transmission: TransmissionResult | None
    monitor: np.ndarray  # M(lambda)
    wavelength_adj: np.ndarray
    volume: float  # mm^3
    scale: float  # the constant applied to the counts
    sample: SampleGeometry
    bank: str = "main"


def reduce_scatter(
    run: RawRun,
    transmission: TransmissionResult | None,
    settings: Settings,
    det: DetectorSetup,
    *,
    sample: SampleGeometry | None = None,
) -> ScatterResult:
    """One (summed) scattering run to absolute I(Q) on the bank of ``det`` (§5.3–5.9)."""
    inst = settings.instrument
    bs = det.bank
    bank = bs.bank
    rows = np.searchsorted(run.spectra, bank.spectra)
    if (rows >= run.spectra.size).any() or not np.array_equal(run.spectra[np.minimum(rows, run.spectra.size - 1)],
                                                              bank.spectra):
        raise ReductionError(f"{run.source}: lacks spectra of the {bank.name} ({bank.n_pixels} pixels, "
                             f"spectra {bank.spectra[0]}-{bank.spectra[-1]})")
    lam_edges = settings.wavelength_edges
    keep = det.keep
    geo = det.geometry
    # detector: time masks in TOF, then TOF -> wavelength per pixel and proportional rebin
    tmask = time_mask_bins(run.tof, list(bs.time_masks))
    y = run.counts[rows[keep]]
    if tmask.any():
        y = y.copy()
        y[:, tmask] = 0.0
    factor = NEUTRON_H_OVER_M / (geo.l1 + geo.l2[keep])  # lambda = factor * t
    s, v, m = rebin_counts(run.tof, y, y, lam_edges, scale=factor, masked=tmask if tmask.any() else None)
    cut = radius_wave_cut(geo.radius[keep], lam_edges, settings.radius_cut, settings.wave_cut)
    if cut.any():
        s, v, m = np.where(cut, 0.0, s), np.where(cut, 0.0, v), np.where(cut, 1.0, m)
    # monitor normalisation M(lambda)
    tof_m, counts_m = _monitor_counts(run, settings.incident_monitor)
    mon, mon_e = monitor_spectrum(tof_m, counts_m, settings.incident_monitor_z, lam_edges,
                                  prompt_peak=settings.prompt_peak, background=settings.monitor_background)
    d, de = bs.direct
    wav = d * mon
    rel2 = np.divide(de, d, out=np.zeros_like(d), where=d > 0) ** 2
    rel2 += np.divide(mon_e, mon, out=np.zeros_like(mon), where=mon > 0) ** 2
    if transmission is not None:
        tf, tfe = transmission.fit.values, transmission.fit.errors
        wav = wav * tf
        rel2 += np.divide(tfe, tf, out=np.zeros_like(tf), where=tf > 0) ** 2
    wav_e = np.abs(wav) * np.sqrt(rel2)
    flat, flat_e = bs.flat
    omega = geo.solid_angle[keep]
    pix = omega * flat[keep]
    pix_e = omega * flat_e[keep]
    sample = sample or run.sample
    try:
        volume = sample_volume(sample.shape, sample.thickness, sample.width, sample.height)
        const = absolute_scale(settings.scale, volume, inst.scale_factor)
    except ValueError as exc:
        raise ReductionError(f"{run.source}: sample geometry: {exc}") from None
    q_sigma = None
    if settings.resolution is not None:
        q_sigma = _resolution(settings, geo, keep)
    wide = None
    if settings.wide_angle and transmission is not None:
        wide = wide_angle_transmission(geo.two_theta[keep], transmission.fit.values)
    two_theta = geo.two_theta[keep]
    y_aim = None
    if settings.gravity:
        dz = bank.z - settings.sample_z
        lam_c = bin_centres(lam_edges)
        two_theta = gravity_two_theta(geo.x[keep], geo.y[keep], dz, lam_c,
                                      extra_length=settings.gravity_extra_length)
        y_aim = gravity_aim(geo.y[keep], geo.l2[keep], lam_c, extra_length=settings.gravity_extra_length)
    iq = q1d(s, v, m, lam_edges, wav, wav_e, two_theta, pix, pix_e, settings.q_edges,
             scale=const, normalisation_errors=settings.normalisation_errors, split=settings.split,
             q_sigma=q_sigma, pixel_wavelength_adj=wide)
    iqxy = None
    if settings.qxy is not None:
        iqxy = qxy(s, v, m, lam_edges, wav, geo.x[keep], geo.y[keep], geo.l2[keep], pix,
                   settings.qxy[0], settings.qxy[1], scale=const, pixel_wavelength_adj=wide, y_aim=y_aim)
    return ScatterResult(run, iq, iqxy, transmission, mon, wav, volume, const, sample, bs.name)


def _resolution(settings: Settings, geo: PixelGeometry, keep: np.ndarray) -> np.ndarray:
    res = settings.resolution
    assert res is not None
    lam_edges = settings.wavelength_edges
    lam = bin_centres(lam_edges)
    q = 4 * np.pi * np.sin(0.5 * geo.two_theta[keep])[:, None] / lam[None, :]
    sigma_mod = 0.0
    if res.moderator is not None:
        # moderator time spread (µs) -> wavelength spread over the full flight path
        sigma_t = np.interp(lam, res.moderator[0], res.moderator[1])
        sigma_mod = NEUTRON_H_OVER_M * sigma_t / (geo.l1 + float(np.median(geo.l2[keep])))
    return q_resolution_sigma(q, lam, np.diff(lam_edges), l1=res.collimation_length, l2=geo.l2[keep],
                              r1=res.r1, r2=res.r2, delta_r=res.delta_r, sigma_moderator=sigma_mod)


@dataclass(frozen=True)
class RowResult:
    name: str
    intensity: np.ndarray
    error: np.ndarray
    q_edges: np.ndarray
    q_dev: np.ndarray
    sample: ScatterResult
    can: ScatterResult | None
    iqxy: IQxy | None
    bank: str = "main"  # "main", "hab" or "merged"
    merge: MergeResult | None = None  # for "merged": the factors and the range used
    parts: tuple[RowResult, ...] = ()  # for "merged": the main and HAB results

    @property
    def q(self) -> np.ndarray:
        return bin_centres(self.q_edges)


def subtract(name: str, sample: ScatterResult, can: ScatterResult | None) -> RowResult:
    """I = I_sample - I_can, sigma = sqrt(sigma_s^2 + sigma_c^2), bin by bin (§5.11)."""
    s = sample.iq
    iqxy = sample.iqxy
    if can is None:
        return RowResult(name, s.intensity, s.error, s.q_edges, s.q_dev, sample, None, iqxy, sample.bank)
    c = can.iq
    if not np.array_equal(s.q_edges, c.q_edges):
        raise ReductionError("sample and can are on different Q grids")
    if iqxy is not None and can.iqxy is not None:
        iqxy = IQxy(iqxy.qx_edges, iqxy.qy_edges, iqxy.intensity - can.iqxy.intensity,
                    np.hypot(iqxy.error, can.iqxy.error))
    return RowResult(name, s.intensity - c.intensity, np.hypot(s.error, c.error), s.q_edges,
                     s.q_dev, sample, can, iqxy, sample.bank)


def merge_rows(main: RowResult, hab: RowResult, merge: MergeSettings) -> RowResult:
    """DET/MERGED: the main and HAB results of one row joined (:mod:`panreduce_sans.merge`).

    The rescale and shift are fitted on the can-subtracted curves; then the sample and the can
    are each stitched with their own normalisations (the shift on the sample only) and the
    stitched can is subtracted from the stitched sample."""
    if not np.array_equal(main.q_edges, hab.q_edges):
        raise ReductionError("the main and HAB results are on different Q grids")
    q = main.q
    s_m, s_h = main.sample.iq, hab.sample.iq
    try:
        overlap = merge_range(q, s_m.denominator, s_h.denominator, merge.overlap)
        if merge.fit_range is not None:
            fit_bins = (q >= merge.fit_range[0]) & (q <= merge.fit_range[1])
        else:
            fit_bins = (q >= overlap[0]) & (q <= overlap[1])
        fit_bins &= (s_m.denominator > 0) & (s_h.denominator > 0)
        rescale, shift = fit_rescale_shift(main.intensity, main.error, hab.intensity, hab.error, fit_bins,
                                           fit_rescale=merge.fit_rescale, fit_shift=merge.fit_shift,
                                           rescale=merge.rescale, shift=merge.shift)
    except ValueError as exc:
        raise ReductionError(f"merging the banks: {exc}") from None

    def curve(iq: IQ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return iq.intensity, iq.error, iq.denominator

    i_s, e_s, source = stitch(q, curve(s_m), curve(s_h), rescale=rescale, shift=shift, overlap=overlap)
    intensity, error = i_s, e_s
    if main.can is not None and hab.can is not None:
        i_c, e_c, _ = stitch(q, curve(main.can.iq), curve(hab.can.iq), rescale=rescale, shift=0.0, overlap=overlap)
        intensity, error = i_s - i_c, np.hypot(e_s, e_c)
    n_m, n_h = s_m.denominator, s_h.denominator / rescale
    q_dev = np.select([source == 2, source == 0, source == 1],
                      [(n_m * main.q_dev + n_h * hab.q_dev) / np.where(n_m + n_h > 0, n_m + n_h, 1.0),
                       main.q_dev, hab.q_dev], 0.0)
    result = MergeResult(intensity, error, rescale, shift, overlap, source)
    return RowResult(main.name, intensity, error, main.q_edges, q_dev, main.sample, main.can, None,
                     "merged", result, (main, hab))
