"""From runs and parameters to per-run and stitched ORSO data sets (no kit, no transport).

``plan_runs`` resolves each run's settings (θ, ROI, background, λ range); ``reduce_one``
reduces a run to an :class:`OrtSet` on aligned log-Q bins; ``stitch_sets`` stitches them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from panreduce_reflectometry import core
from panreduce_reflectometry.output import MONITOR_ONLY_WARNING, OrtSet
from panreduce_reflectometry.params import ReflectometryParameters
from panreduce_reflectometry.reduction import (
    AlgorithmicCorrection,
    Transmission,
    binned,
    find_specular,
    join_transmissions,
    ranges_text,
    reduce_run,
    transmission_from_run,
)
from panreduce_reflectometry.runs import TofRun
from panreduce_reflectometry.stitch import Curve, stitch

DEFAULT_ANCHOR = 1e-3  # 1/Å: log bins are anchor·(1 + dQ/Q)^k unless q_range names the first qmin
DEFAULT_DQ_Q = 0.03


@dataclass(frozen=True)
class RunPlan:
    index: int  # position in run order (over all shards)
    theta_deg: float
    theta_source: str  # "request", "log"
    roi: tuple[int, int]
    background_roi: tuple[int, ...] | None  # one spectrum range, or two (one each side of the beam)
    roi_source: str  # "request", "found"
    q_range: tuple[float, float] | None


def pick(values: list | None, index: int, n_runs: int):
    """A per-run list's value for run ``index``: one value for all, or one per run."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    if len(values) != n_runs:
        raise ValueError(f"has {len(values)} values for {n_runs} runs (give one, or one per run)")
    return values[index]


def _wavelength_centres(run: TofRun, rows: np.ndarray) -> np.ndarray:
    from panreduce_reflectometry.runs import pixel_two_theta

    _, _, l2 = pixel_two_theta(run, theta_deg=0.0)
    edges = core.tof_to_wavelength(
        run.tof_edges_us - run.tof_offset_us, float(run.source_to_sample_m + l2[rows[len(rows) // 2]])
    )
    return 0.5 * (edges[1:] + edges[:-1])


def gravity_geometry(run: TofRun) -> tuple[float, float]:
    """(collimation slit distance, first slit → sample) [m] for the gravity correction."""
    if not (run.slit_distance_mm and run.first_slit_to_sample_m):
        raise ValueError(f"gravity: run {run.run_number} ({run.instrument.name}) records no collimation slit distances")
    return run.slit_distance_mm / 1000.0, run.first_slit_to_sample_m


def gravity_on(run: TofRun, p: ReflectometryParameters) -> bool:
    """Whether θ(λ) is corrected for gravity: ``gravity`` when given, else the instrument's
    default where the run records its collimation slits (Platypus)."""
    if p.gravity is not None:
        return p.gravity
    return run.instrument.gravity_default and bool(run.slit_distance_mm and run.first_slit_to_sample_m)


def direct_beam_height(run: TofRun, p: ReflectometryParameters) -> float:
    """Height [m] of the direct beam on the detector (for θ from the detector); with
    ``gravity`` its centre for an infinitely fast neutron (the per-λ drop removed)."""
    from panreduce_reflectometry import gravity

    roi = p.transmission_roi or find_specular(run.counts, run.spectra)[0]
    rows = np.flatnonzero((run.spectra >= roi[0]) & (run.spectra <= roi[1]))
    lam = _wavelength_centres(run, rows)
    drop = None
    if gravity_on(run, p):
        coll, to_sample = gravity_geometry(run)
        drop = gravity.drop_at(lam, coll, to_sample + float(np.median(run.pixel_z_m)))
    rng = p.wavelength_range or run.instrument.wavelength_range_angstrom
    return gravity.ridge_centre(run.counts, run.pixel_y_m, lam, rng, rows=ridge_rows(run, roi), drop_m=drop)[0]


def ridge_rows(run: TofRun, roi: tuple[int, int]) -> np.ndarray:
    """The detector rows the ridge search fits: the beam's ROI and three ROI widths of
    background on each side (clipped to the detector), so the fit's flat level is the
    background's, not a neighbouring feature's."""
    w = max(roi[1] - roi[0], 1)
    return np.flatnonzero((run.spectra >= roi[0] - 3 * w) & (run.spectra <= roi[1] + 3 * w))


def theta_from_detector(
    run: TofRun, roi: tuple[int, int], p: ReflectometryParameters, direct_height_m: float | None
) -> float:
    """θ [°] from the specular beam's height: ½·atan((y_R − y_D)/L) against the direct beam,
    or ½·2θ of the beam when no direct beam is known (positions as the file records them)."""
    from panreduce_reflectometry import gravity

    if run.instrument.placement != "recorded":
        raise ValueError(
            f"theta_from: the {run.instrument.name} detector is placed from θ itself (moved to 2θ): give theta_deg"
        )
    rows = np.flatnonzero((run.spectra >= roi[0]) & (run.spectra <= roi[1]))
    lam = _wavelength_centres(run, rows)
    rng = p.wavelength_range or run.instrument.wavelength_range_angstrom
    window = ridge_rows(run, roi)
    y = gravity.ridge_centre(run.counts, run.pixel_y_m, lam, rng, rows=window)[0]
    z = float(np.median(run.pixel_z_m[rows]))
    if direct_height_m is None:
        return math.degrees(0.5 * math.atan2(y, z))
    omega = gravity.omega_from_heights(y, direct_height_m, z)
    if gravity_on(run, p):
        # the direct beam's height is that of an infinitely fast neutron; the reflected beam's
        # per-λ centroid is moved to one too: it fell d(λ) like the direct beam and left the
        # sample 2|ε(λ)| steeper (it came in ε(λ) below the horizontal), so y_R − d + 2Lε(λ)
        coll, to_sample = gravity_geometry(run)
        drop = gravity.drop_at(lam, coll, to_sample + z)
        eps = gravity.elevation_at_sample(
            np.clip(lam, 0.1, None), omega, collimation_m=coll, slit_to_sample_m=to_sample
        )
        y = gravity.ridge_centre(run.counts, run.pixel_y_m, lam, rng, rows=window, drop_m=drop - 2.0 * z * np.tan(eps))[
            0
        ]
        omega = gravity.omega_from_heights(y, direct_height_m, z)
    return math.degrees(omega)


def plan_run(
    run: TofRun, index: int, n_runs: int, p: ReflectometryParameters, direct_height_m: float | None = None
) -> RunPlan:
    """Settings of one run; ValueError('<field>: why') when the request cannot be met."""
    try:
        theta = pick(p.theta_deg, index, n_runs)
    except ValueError as exc:
        raise ValueError(f"theta_deg: {exc}") from None
    source = "request"
    # direct_height_m is given when the load chose the detector (asked for, or the default)
    if p.theta_from == "detector" or (p.theta_from is None and theta is None and direct_height_m is not None):
        theta, source = None, "detector"
    elif theta is None:
        if run.theta_log_deg is None or not run.theta_log_deg > 0:
            raise ValueError(
                f"theta_deg: run {run.run_number} ({run.instrument.name}) records no usable θ log: give theta_deg"
            )
        theta, source = float(run.theta_log_deg), "log"
    try:
        roi = pick(p.roi, index, n_runs)
        bg = pick(p.background_roi, index, n_runs)
        qr = pick(p.q_range, index, n_runs)
    except ValueError as exc:
        raise ValueError(f"roi/background_roi/q_range: {exc}") from None
    roi_source = "request"
    if roi is None:
        roi, found_bg, _ = find_specular(run.counts, run.spectra)
        roi_source = "found"
        if bg is None:
            bg = found_bg
    if source == "detector":
        theta = theta_from_detector(run, roi, p, direct_height_m)
        if not 0.01 <= theta <= 30.0:
            raise ValueError(
                f"theta_from: run {run.run_number}: θ from the detector is {theta:.4g}°, outside "
                "0.01–30° (is the beam on the detector, the direct beam the right run?)"
            )
    return RunPlan(index, float(theta), source, roi, bg, roi_source, qr)


def slit_dq_q(run: TofRun, theta_deg: float) -> float | None:
    """dQ/Q (FWHM) from the run's collimation slits, None when the file has no slits."""
    if run.slit_gaps_mm and run.slit_distance_mm:
        return core.slit_resolution(
            slit1_mm=run.slit_gaps_mm[0],
            slit2_mm=run.slit_gaps_mm[1],
            slit_distance_mm=run.slit_distance_mm,
            theta_rad=math.radians(theta_deg),
        )
    return None


def common_step(runs: list[TofRun], p: ReflectometryParameters) -> float:
    """The log-bin step shared by all runs (so they stitch on one grid): ``dq_q``, else the
    median slit resolution of the runs rounded to 3 decimals, else 0.03."""
    if p.dq_q is not None:
        return p.dq_q
    res = []
    for i, run in enumerate(runs):
        theta = pick(p.theta_deg, i, len(runs)) if p.theta_deg else run.theta_log_deg
        if theta:
            r = slit_dq_q(run, float(theta))
            if r is not None:
                res.append(r)
    return max(round(float(np.median(res)), 3), 0.001) if res else DEFAULT_DQ_Q


def resolution_dq_q(run: TofRun, theta_deg: float, step: float) -> tuple[float, float, str]:
    """(binning dQ/Q, resolution dQ/Q FWHM, where the resolution came from)."""
    slit = slit_dq_q(run, theta_deg)
    if slit is not None:
        return step, slit, "slits"
    return step, step, "binning"


def anchor_of(p: ReflectometryParameters) -> float:
    return p.q_range[0][0] if p.q_range else DEFAULT_ANCHOR


def correction_of(p: ReflectometryParameters) -> AlgorithmicCorrection | None:
    """The algorithmic correction the parameters ask for (Mantid CorrectionAlgorithm), if any."""
    kind = p.correction_kind
    if kind == "polynomial":
        return AlgorithmicCorrection("polynomial", tuple(p.polynomial or ()))
    if kind == "exponential":
        return AlgorithmicCorrection("exponential", (float(p.c0), float(p.c1)))
    return None


def reduce_one(
    run: TofRun,
    plan: RunPlan,
    p: ReflectometryParameters,
    *,
    transmission: Transmission | None,
    step: float,
    version: str,
    call: str,
) -> tuple[OrtSet, dict]:
    """One run to its ORSO data set on aligned log bins, and its summary record."""
    inst = run.instrument
    lam = p.wavelength_range or inst.wavelength_range_angstrom
    mon_bg = p.monitor_background_range or inst.monitor_background_angstrom
    mon_int = p.monitor_integration_range or inst.monitor_integration_angstrom
    correction = correction_of(p)
    res = reduce_run(
        run,
        theta_deg=plan.theta_deg,
        roi=plan.roi,
        background_roi=plan.background_roi,
        summation=p.summation,
        reduction_type=p.reduction_type,
        wavelength_range=lam,
        monitor_background=mon_bg,
        monitor_integration=mon_int,
        transmission=transmission,
        correction=correction,
        gravity=gravity_geometry(run) if gravity_on(run, p) else None,
    )
    step, resolution, res_source = resolution_dq_q(run, plan.theta_deg, step)
    edges, r, var = binned(res, dq_q=step, anchor=anchor_of(p), q_range=plan.q_range)
    q = 0.5 * (edges[:-1] + edges[1:])
    corrections = [
        f"time of flight to wavelength (L1 = {run.source_to_sample_m:.4f} m)",
        "incident-beam monitor normalisation"
        + (" (integrated)" if run.monitor_counts is not None else " (total count)"),
        f"sum in {'Q (Cubitt 2015, ' + p.reduction_type + ')' if p.summation == 'q' else 'wavelength'}",
        f"log binning dQ/Q = {step:.4g}",
    ]
    if plan.background_roi:
        corrections.insert(1, f"background: per-pixel average of spectra {ranges_text(plan.background_roi)}")
    if transmission is not None:
        corrections.append(f"transmission/direct-beam normalisation ({transmission.source})")
    if gravity_on(run, p):
        corrections.append("gravity: wavelength-dependent angle of incidence (parabolic trajectory)")
    if correction is not None:
        corrections.append(f"algorithmic transmission correction: divided by {correction.source} (λ in Å)")
    comment = (
        "absolute reflectivity (direct-beam normalised)"
        if transmission is not None
        else (
            f"divided by the given {correction.kind} correction ({correction.source}): the absolute scale is "
            "that of its coefficients"
        )
        if correction is not None
        else MONITOR_ONLY_WARNING
    )
    record = {
        "run": run.run_number,
        "file": run.source,
        "instrument": inst.name,
        "index": plan.index,
        "theta_deg": plan.theta_deg,
        "theta_source": plan.theta_source,
        "gravity": gravity_on(run, p),
        "two_theta_r_deg": res.two_theta_r_deg,
        "roi": list(plan.roi),
        "roi_source": plan.roi_source,
        "background_roi": list(plan.background_roi) if plan.background_roi else None,
        "wavelength_range": list(lam),
        "i0": res.i0,
        "normalisation": res.normalisation,
        "transmission": transmission.source
        if transmission is not None
        else correction.source
        if correction is not None
        else None,
        "dq_q": step,
        "anchor": anchor_of(p),
        "resolution_dq_q": resolution,
        "resolution_from": res_source,
        "q_min": float(edges[0]),
        "q_max": float(edges[-1]),
        "n_points": int(q.size),
        "notes": res.notes,
    }
    s = OrtSet(
        name=str(run.run_number),
        q=q,
        r=r,
        dr=np.sqrt(var),
        dq=q * resolution,
        instrument=inst.name,
        facility=inst.facility,
        title=run.title,
        sample=run.sample_name,
        start_time=run.start_time,
        theta_deg=[plan.theta_deg],
        wavelength_range=tuple(lam),
        data_files=[run.source] + ([transmission.source] if transmission is not None else []),
        corrections=corrections,
        call=call,
        comment=comment,
        software_version=version,
        extra={"panreduce": record},
    )
    return s, record


def edges_from_centres(q: np.ndarray, dq_q: float) -> np.ndarray:
    """Bin edges of aligned log bins from their centres: c = e·(2 + dQ/Q)/2."""
    lower = 2.0 * np.asarray(q) / (2.0 + dq_q)
    return np.append(lower, lower[-1] * (1.0 + dq_q))


def stitch_sets(
    sets: list[OrtSet], records: list[dict], *, manual: list[float] | None, version: str, call: str
) -> tuple[OrtSet, dict]:
    """Stitch per-run data sets (all on one aligned grid) into one; the factors reported."""
    steps = {round(rec["dq_q"], 12) for rec in records}
    if len(steps) != 1:
        raise ValueError(f"dq_q differs between runs ({sorted(steps)}): give dq_q to stitch on one grid")
    step = records[0]["dq_q"]
    curves = [Curve(edges_from_centres(s.q, step), s.r, s.dr**2) for s in sets]
    result = stitch(curves, manual_factors=manual)
    c = result.curve
    ok = np.isfinite(c.r)
    q = 0.5 * (c.edges[:-1] + c.edges[1:])
    res = np.interp(q, np.concatenate([s.q for s in sets]), np.concatenate([s.dq / s.q for s in sets]))
    factors = [
        {"run": rec["run"], "factor": f, "error": e, "overlap_q": list(o) if o else None}
        for rec, f, e, o in zip(records, result.factors, result.factor_errors, result.overlaps, strict=True)
    ]
    info = {"mode": result.mode, "factors": factors}
    first = sets[0]
    absolute = all(rec["normalisation"] != "monitor" for rec in records)
    corrections = [
        *first.corrections,
        f"stitched ({result.mode} scale factors: " + ", ".join(f"{f['factor']:.5g}" for f in factors) + ")",
    ]
    out = replace(
        first,
        name="stitched",
        q=q[ok],
        r=c.r[ok],
        dr=np.sqrt(c.var[ok]),
        dq=(q * res)[ok],
        theta_deg=[rec["theta_deg"] for rec in records],
        data_files=sorted({f for s in sets for f in s.data_files}),
        corrections=corrections,
        comment=(first.comment if absolute else MONITOR_ONLY_WARNING) + "; scaled to the first run",
        call=call,
        software_version=version,
        extra={"panreduce": {"stitch": info, "runs": [rec["run"] for rec in records]}},
    )
    return out, info


def build_transmission(
    runs: list[TofRun], p: ReflectometryParameters, *, sample_roi: tuple[int, int] | None
) -> tuple[Transmission, list[str]]:
    """T(λ) from one or two direct-beam/transmission runs (joined in their λ overlap)."""
    notes: list[str] = []
    parts = []
    for run in runs:
        inst = run.instrument
        lam = p.wavelength_range or inst.wavelength_range_angstrom
        roi, bg = p.transmission_roi, None
        if roi is None:
            if sample_roi is not None and inst.name != "PLATYPUS":
                roi = sample_roi
            else:
                roi, bg, _ = find_specular(run.counts, run.spectra)
                notes.append(
                    f"direct beam {run.run_number}: spectra {roi[0]}-{roi[1]} found, background {ranges_text(bg)}"
                    if bg
                    else f"direct beam {run.run_number}: spectra {roi[0]}-{roi[1]}"
                )
        parts.append(
            transmission_from_run(
                run,
                roi=roi,
                background_roi=bg,
                wavelength_range=lam,
                monitor_background=p.monitor_background_range or inst.monitor_background_angstrom,
                monitor_integration=p.monitor_integration_range or inst.monitor_integration_angstrom,
            )
        )
    if len(parts) == 1:
        return parts[0], notes
    joined, factor = join_transmissions(parts[0], parts[1], overlap=p.transmission_overlap)
    notes.append(f"transmission runs joined with factor {factor:.5g}")
    return joined, notes


def offspecular_for(run: TofRun, plan: RunPlan, p: ReflectometryParameters, *, i0: float):
    """The off-specular map of one run over the whole detector (counts / I0)."""
    from panreduce_reflectometry.offspecular import offspecular_map
    from panreduce_reflectometry.runs import pixel_two_theta

    tt, _, l2 = pixel_two_theta(run, theta_deg=plan.theta_deg)
    edges = core.tof_to_wavelength(run.tof_edges_us - run.tof_offset_us, run.source_to_sample_m + l2)
    lam = p.wavelength_range or run.instrument.wavelength_range_angstrom
    return offspecular_map(
        run.counts,
        run.variances,
        edges,
        tt,
        theta_rad=math.radians(plan.theta_deg),
        i0=i0,
        wavelength_range=lam,
        axes=p.offspecular_axes,
    )
