"""Benchmark of the reflectometry technique (make bench-reflectometry).

Side by side in one run, wall and CPU time (best of ``BENCH_REPEATS``, imports excluded):
* the three OFFSPEC runs 46992-46994 (SumInQ, non_flat_sample, dQ/Q 3 %, stitched, ORSO + PNG);
* the Platypus set 708-710 with the direct beam 711 (SumInLambda, dQ/Q 5 %, stitched);
* refnx's Platypus reducer (``refnx.reduce.PlatypusReduce``, PyPI refnx) on the same four
  files, in its own environment under ``.bench-envs/refnx`` (created on first use), each
  angle reduced against 711 with 5 % rebinning, files not saved;
and the agreement of the two Platypus R(Q): per angle, the median and 90th percentile of
|R_ours/R_refnx − 1| where both have data (ours interpolated in log R, log Q onto refnx's Q).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from panreduce import datasets
from panreduce.kit import Context
from panreduce.storage import stage_paths
from panreduce_reflectometry.technique import Technique

ROOT = Path(__file__).resolve().parents[1]
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
PEER_ENV = ROOT / ".bench-envs" / "refnx"
PEER_PACKAGES = ("refnx==0.1.67", "pandas", "h5py")  # the version the stored reference was made with

PEER_SCRIPT = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
from refnx.reduce import PlatypusReduce
folder, repeats = sys.argv[1], int(sys.argv[2])
best = None
for _ in range(repeats):
    w0, c0 = time.perf_counter(), time.process_time()
    red = PlatypusReduce(f"{folder}/PLP0000711.nx.hdf")
    out = {}
    for run in (708, 709, 710):
        _, r = red.reduce(f"{folder}/PLP0000{run}.nx.hdf", save=False, rebin_percent=5,
                          lo_wavelength=2.8, hi_wavelength=18)
        out[run] = [np.ravel(r["x"]).tolist(), np.ravel(r["y"]).tolist(), np.ravel(r["y_err"]).tolist(),
                    float(np.mean(r["omega"]))]
    t = (time.perf_counter() - w0, time.process_time() - c0)
    if best is None or t[0] < best[0][0]:
        best = (t, out)
print(json.dumps({"wall": best[0][0], "cpu": best[0][1], "curves": best[1]}))
"""


def _clock():
    return time.perf_counter(), time.process_time()


def run_ours(inputs, params: dict) -> tuple[float, float, dict]:
    technique = Technique()
    best = None
    for _ in range(REPEATS):
        with tempfile.TemporaryDirectory() as tmp:
            p = technique.validate_parameters(params)
            ctx = Context(job_id="bench", scratch=Path(tmp))
            w0, c0 = _clock()
            units = technique.units(inputs, p)
            part = technique.reduce_block(units, inputs, p, ctx)
            summary = technique.write(technique.combine([part], p), p, ctx)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            curves = {}
            if best is None or wall < best[0]:
                from orsopy import fileio

                for o in ctx.outputs:
                    if o.name.endswith(".ort") and "stitched" not in o.name:
                        d = fileio.load_orso(str(o.path))[0].data
                        curves[o.name.removesuffix(".ort")] = d
                best = (wall, cpu, {"summary": summary, "curves": curves})
    return best


def ensure_peer() -> Path | None:
    py = PEER_ENV / "bin" / "python"
    if py.exists():
        return py
    uv = subprocess.run([str(ROOT / "scripts" / "ensure-uv.sh")], capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run([uv, "venv", "-q", str(PEER_ENV), "--python", sys.executable], check=True, timeout=120)
        subprocess.run(
            [uv, "pip", "install", "-q", *PEER_PACKAGES],
            check=True,
            timeout=600,
            env={**os.environ, "VIRTUAL_ENV": str(PEER_ENV)},
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"refnx environment could not be made ({exc}): peer skipped")
        return None
    return py


def run_peer(folder: Path) -> dict | None:
    py = ensure_peer()
    if py is None:
        return None
    res = subprocess.run(
        [str(py), "-c", PEER_SCRIPT, str(folder), str(REPEATS)], capture_output=True, text=True, timeout=1200
    )
    if res.returncode != 0:
        print("refnx failed:", res.stderr[-2000:])
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])


def agreement(
    ours: np.ndarray, peer: list, q_scale: float = 1.0, max_rel_error: float | None = None
) -> tuple[float, float, int]:
    """Median and 90th percentile of |R_ours/R_refnx − 1| over the common Q range (only refnx
    points with σR/R below ``max_rel_error`` when given), and the number of points."""
    q, r, dr = np.asarray(peer[0]) * q_scale, np.asarray(peer[1]), np.asarray(peer[2])
    ok = np.isfinite(r) & (r > 0)
    if max_rel_error is not None:
        ok &= dr < max_rel_error * r
    q, r = q[ok], r[ok]
    oq, orr = ours[:, 0], ours[:, 1]
    good = np.isfinite(orr) & (orr > 0)
    oq, orr = oq[good], orr[good]
    inside = (q > oq[0]) & (q < oq[-1])
    mine = np.exp(np.interp(np.log(q[inside]), np.log(oq), np.log(orr)))
    dev = np.abs(mine / r[inside] - 1.0)
    return float(np.median(dev)), float(np.percentile(dev, 90)), int(inside.sum())


def main() -> None:
    try:
        offspec = [datasets.path(f"offspec-polymer/raw/OFFSPEC0004699{n}.nxs") for n in (2, 3, 4)]
        plp = [datasets.path(f"platypus-refnx/PLP0000{n}.nx.hdf") for n in (708, 709, 710, 711)]
    except datasets.DatasetMissing as exc:
        print(f"skipped: {exc}")
        return
    Technique().warm_up()
    import matplotlib.pyplot  # noqa: F401  (imports are the service's start-up, not the job's)
    import orsopy.fileio  # noqa: F401

    off_params = {
        "theta_deg": "0.5,1.5,2.5",
        "roi": "399-410,390-420,390-420",
        "summation": "q",
        "reduction_type": "non_flat_sample",
        "dq_q": 0.03,
    }
    plp_params = {"transmission": "PLP0000711.nx.hdf", "dq_q": 0.05, "wavelength_range": "2.8-18"}
    rows = []
    for name, files, params in (
        ("OFFSPEC 46992-4, SumInQ, stitched, ORT+PNG", offspec, off_params),
        ("OFFSPEC 46992-4, no PNG", offspec, {**off_params, "plots": False}),
        ("Platypus 708-710 + db 711, stitched, ORT+PNG (θ: detector, gravity)", plp, plp_params),
        (
            "Platypus 708-710 + db 711, no PNG, θ from the log, gravity",
            plp,
            {**plp_params, "plots": False, "theta_from": "log"},
        ),
        (
            "Platypus, no PNG, θ from the detector, no gravity",
            plp,
            {**plp_params, "plots": False, "theta_from": "detector", "gravity": False},
        ),
        ("Platypus, no PNG, θ from the detector, gravity (the defaults)", plp, {**plp_params, "plots": False}),
    ):
        wall, cpu, out = run_ours(stage_paths([str(f) for f in files]), params)
        rows.append((f"panreduce: {name}", wall, cpu, out))
    peer = run_peer(plp[0].parent)
    print(f"reflectometry benchmark: {os.cpu_count()} CPU(s), best of {REPEATS}; load average {os.getloadavg()[0]:.1f}")
    print()
    print(f"| {'case':<72} | {'wall s':>7} | {'CPU s':>7} |")
    print(f"|{'-' * 74}|{'-' * 9}|{'-' * 9}|")
    for name, wall, cpu, _ in rows:
        print(f"| {name:<72} | {wall:>7.3f} | {cpu:>7.3f} |")
    if peer is not None:
        print(
            f"| {'refnx PlatypusReduce: 708-710 + db 711 (no files written)':<72} | "
            f"{peer['wall']:>7.3f} | {peer['cpu']:>7.3f} |"
        )
        print()
        print("Platypus R(Q), panreduce vs refnx, per angle (before stitching; both direct-beam normalised):")
        print()
        print(
            f"| {'run':<16} | {'θ ours °':>8} | {'ω refnx °':>9} | {'points':>6} | {'median |ratio-1|':>17} "
            f"| {'90th pct':>9} | {'σR/R<10%: med':>14} | {'90th pct':>9} | {'same θ: median':>14} | {'90th pct':>9} |"
        )
        print(
            f"|{'-' * 18}|{'-' * 10}|{'-' * 11}|{'-' * 8}|{'-' * 19}|{'-' * 11}|{'-' * 16}|{'-' * 11}"
            f"|{'-' * 16}|{'-' * 11}|"
        )
        for label, row in (("θ log+g", rows[3]), ("θ det", rows[4]), ("θ det+g", rows[5])):
            agreement_rows(label, row[3], peer)
    else:
        print("(refnx not available: no side-by-side row)")


def agreement_rows(label: str, out: dict, peer: dict) -> None:
    """One table row per Platypus angle: our θ, refnx's mean ω and the |R ratio − 1| statistics."""
    curves = out["curves"]
    thetas = {r["run"]: r["theta_deg"] for r in out["summary"]["runs"]}
    for run in (708, 709, 710):
        pc = peer["curves"][str(run)]
        theta = thetas[f"PLP0000{run}"]
        med, p90, n = agreement(curves[f"PLP0000{run}"], pc)
        med_w, p90_w, _ = agreement(curves[f"PLP0000{run}"], pc, max_rel_error=0.1)
        # the same curves with refnx's Q put on our angle (Q ∝ sin θ at each λ)
        scale = float(np.sin(np.radians(theta)) / np.sin(np.radians(pc[3])))
        med_t, p90_t, _ = agreement(curves[f"PLP0000{run}"], pc, scale)
        print(
            f"| {label + ' ' + str(run):<16} | {theta:>8.3f} | {pc[3]:>9.3f} | {n:>6} | {med:>17.3f} "
            f"| {p90:>9.3f} | {med_w:>14.3f} | {p90_w:>9.3f} | {med_t:>14.3f} | {p90_t:>9.3f} |"
        )


if __name__ == "__main__":
    main()
