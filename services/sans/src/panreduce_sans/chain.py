"""The ISIS TOF SANS reduction chain for one batch row, built from the pure steps.

Sample and can are reduced identically (own summed runs, monitor, transmission fit and
volume; shared direct-beam efficiency, flat cell, masks and grids), then subtracted bin by
bin (fact sheet ``loq-sans.md`` §5.11). The settings come from
:mod:`panreduce_sans.settings`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from panreduce import constants
from panreduce_sans.batch import BatchRow, RunRef
from panreduce_sans.binning import bin_centres, rebin_counts, rebin_edges
from panreduce_sans.corrections import (
    FitResult,
    absolute_scale,
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
from panreduce_sans.instrument import PixelGeometry, pixel_geometry
from panreduce_sans.merge import MergeResult, fit_rescale_shift, merge_range, stitch
from panreduce_sans.q1d import IQ, IQxy, q1d, q_resolution_sigma, qxy
from panreduce_sans.rawfile import RawRun, SampleGeometry
from panreduce_sans.settings import BankSettings, ReductionError, Settings
from panreduce_sans.userfile import MergeSettings, TransmissionFit


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
            spectra.append(
                monitor_spectrum(
                    tof,
                    counts,
                    z,
                    edges,
                    prompt_peak=settings.prompt_peak,
                    background=settings.trans_background.get(spec),
                )
            )
    t, te = transmission_ratio(spectra[0], spectra[1], spectra[2], spectra[3])
    try:
        fitted = fit_transmission(
            bin_centres(edges),
            t,
            te,
            bin_centres(settings.wavelength_edges),
            method=fit.method,
            order=fit.order,
            lambda_min=fit.lambda_min,
            lambda_max=fit.lambda_max,
        )
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
    if (rows >= run.spectra.size).any() or not np.array_equal(
        run.spectra[np.minimum(rows, run.spectra.size - 1)], bank.spectra
    ):
        raise ReductionError(
            f"{run.source}: lacks spectra of the {bank.name} ({bank.n_pixels} pixels, "
            f"spectra {bank.spectra[0]}-{bank.spectra[-1]})"
        )
    lam_edges = settings.wavelength_edges
    keep = det.keep
    geo = det.geometry
    # detector: time masks in TOF, then TOF -> wavelength per pixel and proportional rebin
    tmask = time_mask_bins(run.tof, list(bs.time_masks))
    y = run.counts[rows[keep]]
    if tmask.any():
        y = y.copy()
        y[:, tmask] = 0.0
    factor = constants.NEUTRON_H_OVER_M / (geo.l1 + geo.l2[keep])  # lambda = factor * t
    s, v, m = rebin_counts(run.tof, y, y, lam_edges, scale=factor, masked=tmask if tmask.any() else None)
    cut = radius_wave_cut(geo.radius[keep], lam_edges, settings.radius_cut, settings.wave_cut)
    if cut.any():
        s, v, m = np.where(cut, 0.0, s), np.where(cut, 0.0, v), np.where(cut, 1.0, m)
    # monitor normalisation M(lambda)
    tof_m, counts_m = _monitor_counts(run, settings.incident_monitor)
    mon, mon_e = monitor_spectrum(
        tof_m,
        counts_m,
        settings.incident_monitor_z,
        lam_edges,
        prompt_peak=settings.prompt_peak,
        background=settings.monitor_background,
    )
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
        two_theta = gravity_two_theta(geo.x[keep], geo.y[keep], dz, lam_c, extra_length=settings.gravity_extra_length)
        y_aim = gravity_aim(geo.y[keep], geo.l2[keep], lam_c, extra_length=settings.gravity_extra_length)
    iq = q1d(
        s,
        v,
        m,
        lam_edges,
        wav,
        wav_e,
        two_theta,
        pix,
        pix_e,
        settings.q_edges,
        scale=const,
        normalisation_errors=settings.normalisation_errors,
        split=settings.split,
        q_sigma=q_sigma,
        pixel_wavelength_adj=wide,
    )
    iqxy = None
    if settings.qxy is not None:
        iqxy = qxy(
            s,
            v,
            m,
            lam_edges,
            wav,
            geo.x[keep],
            geo.y[keep],
            geo.l2[keep],
            pix,
            settings.qxy[0],
            settings.qxy[1],
            scale=const,
            pixel_wavelength_adj=wide,
            y_aim=y_aim,
        )
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
        sigma_mod = constants.NEUTRON_H_OVER_M * sigma_t / (geo.l1 + float(np.median(geo.l2[keep])))
    return q_resolution_sigma(
        q,
        lam,
        np.diff(lam_edges),
        l1=res.collimation_length,
        l2=geo.l2[keep],
        r1=res.r1,
        r2=res.r2,
        delta_r=res.delta_r,
        sigma_moderator=sigma_mod,
    )


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
        iqxy = IQxy(
            iqxy.qx_edges, iqxy.qy_edges, iqxy.intensity - can.iqxy.intensity, np.hypot(iqxy.error, can.iqxy.error)
        )
    return RowResult(
        name, s.intensity - c.intensity, np.hypot(s.error, c.error), s.q_edges, s.q_dev, sample, can, iqxy, sample.bank
    )


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
        rescale, shift = fit_rescale_shift(
            main.intensity,
            main.error,
            hab.intensity,
            hab.error,
            fit_bins,
            fit_rescale=merge.fit_rescale,
            fit_shift=merge.fit_shift,
            rescale=merge.rescale,
            shift=merge.shift,
        )
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
    q_dev = np.select(
        [source == 2, source == 0, source == 1],
        [(n_m * main.q_dev + n_h * hab.q_dev) / np.where(n_m + n_h > 0, n_m + n_h, 1.0), main.q_dev, hab.q_dev],
        0.0,
    )
    result = MergeResult(intensity, error, rescale, shift, overlap, source)
    return RowResult(
        main.name, intensity, error, main.q_edges, q_dev, main.sample, main.can, None, "merged", result, (main, hab)
    )


class BatchChain:
    """The reduction of the rows of one batch: each transmission and each reduced run is
    computed once, however many rows use it (``functools.cache`` on pure functions of the
    run labels, the sample geometry and the bank)."""

    def __init__(self, settings: Settings, scatter: Mapping[str, RawRun], trans: Mapping[str, RawRun]) -> None:
        self.settings = settings
        self.detectors = {b.name: detector_setup(settings, b.name) for b in settings.banks}

        @functools.cache
        def transmission(trans_label: str, direct_label: str, which: str) -> TransmissionResult:
            fit = settings.fit_sample if which == "sample" else settings.fit_can
            return calculate_transmission(trans[trans_label], trans[direct_label], settings, fit)

        @functools.cache
        def reduced(
            label: str, t_key: tuple[str, str, str] | None, sample: SampleGeometry | None, bank: str
        ) -> ScatterResult:
            t = None if t_key is None else transmission(*t_key)
            return reduce_scatter(scatter[label], t, settings, self.detectors[bank], sample=sample)

        self._reduced = reduced

    def row(self, row: BatchRow, run: RawRun) -> dict[str, RowResult]:
        """The outputs of one batch row (``run`` its summed sample run): {name: result}, one
        per bank reduced, or the merged result and both banks' for DET/MERGED."""
        settings = self.settings
        # batch-row geometry overrides apply to sample and can alike (one row, one state);
        # without them each uses the sample block of the first run of its own sum
        overridden = bool(row.sample_thickness or row.sample_width or row.sample_height)
        geom = run.sample
        if overridden:
            geom = SampleGeometry(
                row.sample_thickness or geom.thickness,
                row.sample_width or geom.width,
                row.sample_height or geom.height,
                geom.shape,
            )
        key_s = _trans_key(row.sample_trans, row.sample_direct_beam, "sample")
        key_c = _trans_key(row.can_trans, row.can_direct_beam, "can")
        per_bank = {}
        for b in settings.banks:
            res_s = self._reduced(row.sample_sans.label, key_s, geom, b.name)
            res_c = None
            if row.can_sans is not None:
                res_c = self._reduced(row.can_sans.label, key_c, geom if overridden else None, b.name)
            per_bank[b.name] = subtract(row.output_as, res_s, res_c)
        if settings.detector == "merged":
            merged = merge_rows(per_bank["main"], per_bank["hab"], settings.merge)
            return {row.output_as: merged, **{f"{row.output_as}_{b}": r for b, r in per_bank.items()}}
        if settings.detector == "both":
            return {f"{row.output_as}_{b}": r for b, r in per_bank.items()}
        return {row.output_as: per_bank[settings.detector]}


def _trans_key(trans: RunRef | None, direct: RunRef | None, which: str) -> tuple[str, str, str] | None:
    return None if trans is None or direct is None else (trans.label, direct.label, which)
