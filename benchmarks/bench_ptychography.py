"""Ptychography benchmark (``make bench-ptychography``): iterations/s, peak memory and phase
error after N iterations for each engine on one CPU core (and on a GPU when one is
present), for the two simulated scans of issue 7, next to PtyPy's and pty-chi's published
figures on this machine class.

Every iteration also records the error metric of the current estimate (on 32 frames: a
forward FFT of 32 frames more per iteration), as in the service.

Rows: ``default`` the technique's default command (DM then ML with exact shifts, each
ended by the stop rule, caps ``--iterations`` and 3 x ``--iterations``); ``dm`` the technique's DM (sub-pixel shifts on a 1/4 px grid, DPC
initial object, modulus projection damped by ``dm_fourier_eps`` = 3 sqrt(photons)), pure
DM; ``dm-plain`` the same with the plain projection (``dm_fourier_eps=0.1``); ``dm+ml``
the preset ``iterations=85 ml_iterations=15`` (100 iterations in all: DM, then Poisson
ML); ``dm-exact`` DM with exact sub-pixel shifts; ``dm-int`` DM with positions rounded to
whole pixels (PtyPy's model). it/s counts every iteration and includes the initial
object.

Cases: 161 frames of 128 x 128 on a 492 x 492 object (the size of PtyPy's MoonFlower
demo) and 310 frames of 256 x 256. Fermat spiral with 0.3 px jitter, 1e8 photons per
frame with Poisson noise, probe a defocused pupil; every engine starts from the DPC
object (``engines.initial_object``) and a probe model 5-15 % off the truth. Phase error: RMS over the well-lit region after
removing global phase, linear ramp and sub-pixel shift.

The peer: PtyLab (PyPI ``ptylab``, numpy), run in its own environment
``.bench-envs/ptylab`` (made by ``make bench-ptychography``; its numpy 2 / Python 3.11
pins are kept apart from the workspace) on the very same scan in the same run, from the
same 5-15 % wrong probe model and a flat object (PtyLab's default start), with its own
whole-pixel positions (its model), one core: rows ``ptylab-<engine>``; it/s counts the
engine's iterations only (not its set-up). Without that environment the rows are left out
and the reason is printed.

Usage: python benchmarks/bench_ptychography.py [--iterations 100] [--cases small,large]
       [--engines dm,dm-plain,dm+ml,dm-exact,dm-int,ml,lsqml] [--device cpu|gpu]
       [--peer-engines mPIE,ePIE,qNewton | none]
       python benchmarks/bench_ptychography.py pxct [--cases small,medium]   (the PXCT stage,
       ``make bench-ptychography BENCH_ARGS=pxct``: alignment and volume error on a phantom)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import h5py
import numpy as np

from panreduce_ptychography import metrics
from panreduce_ptychography.backend import get_backend
from panreduce_ptychography.engines import Options, State, StopRule, initial_object, initial_probe, reconstruct
from panreduce_ptychography.problem import prepare, wavelength_m
from panreduce_ptychography.simulate import Simulation, make_probe, simulate

#: the peer's interpreter (``make bench-ptychography`` creates it when PtyLab installs)
PEER_PYTHON = Path(__file__).resolve().parent.parent / ".bench-envs" / "ptylab" / "bin" / "python"
PEER_ENGINES = ("mPIE", "ePIE", "qNewton")

#: run by the peer's interpreter: argv = scan.h5 out.npz engine iterations
PTYLAB_WORKER = """
import logging
import sys
import time

import h5py
import numpy as np

logging.disable(logging.WARNING)
from PtyLab import Engines, ExperimentalData, Params, Reconstruction
from PtyLab.Monitor.Monitor import DummyMonitor

path, out, engine_name, iterations = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with h5py.File(path) as f:
    probe0 = f['probe0'][()]
t0 = time.perf_counter()
data = ExperimentalData(path, 'CPM')
params = Params()
params.propagatorType = 'Fraunhofer'
params.positionOrder = 'random'
params.probePowerCorrectionSwitch = False
params.comStabilizationSwitch = False
params.gpuSwitch = False
rec = Reconstruction(data, params)
rec.initialProbe = 'circ'
rec.initialObject = 'ones'  # PtyLab's default start
rec.initializeObjectProbe()
np_ = rec.probe.shape[-1]
rec.probe = probe0.reshape(rec.probe.shape).astype(np.complex64)  # our start's probe
eng = getattr(Engines, engine_name)(rec, data, params, DummyMonitor())
eng.numIterations = iterations
t1 = time.perf_counter()
eng.reconstruct()
t2 = time.perf_counter()
np.savez(
    out,
    obj=np.asarray(rec.object).reshape(rec.No, rec.No),
    positions=np.asarray(rec.positions),
    dxo=rec.dxo,
    setup_s=t1 - t0,
    run_s=t2 - t1,
)
"""

CASES = {
    # name: (frames, frame side, object side or None, probe diameter (px), step (px))
    "small": (161, 128, 492, 64.0, 22.0),
    "large": (310, 256, None, 128.0, 40.0),
}

#: published figures on this machine class (issue 7), 161 x 128^2 on 492^2
REFERENCE = [
    ("PtyPy DM (1 core)", "5.5", "0.10"),
    ("PtyPy ML (1 core)", "2.5-3.2", ""),
    ("pty-chi DM", "1.2", "0.016"),
    ("pty-chi LSQML", "2", ""),
    ("PtyPy GPU engines, 670 pos., 128^2-256^2 (RTX A6000)", "5.3-7.1", ""),
]

ENGINES = {
    # label: (stages [(engine, fraction of the iterations)], options); the technique's
    # defaults (DPC initial object, sub-pixel shifts on a 1/4 px grid) unless named
    "dm": ([("dm", 1.0)], {"subpixel_grid": 4}),
    # the technique's default command: DM then ML (exact shifts), each ended by the stop
    # rule (caps --iterations and 3 x --iterations, as iterations=100, ml_iterations=300)
    "default": ([("dm", None), ("ml", None)], {"subpixel_grid": 4}),
    "dm+ml": ([("dm", 0.85), ("ml", 0.15)], {"subpixel_grid": 4}),
    "dm-plain": ([("dm", 1.0)], {"subpixel_grid": 4, "dm_fourier_eps": 0.1}),
    "dm-exact": ([("dm", 1.0)], {"subpixel_grid": 0}),
    "dm-int": ([("dm", 1.0)], {"subpixel": False}),
    "ml": ([("ml", 1.0)], {"subpixel_grid": 4}),
    "lsqml": ([("lsqml", 1.0)], {"subpixel_grid": 4}),
}


def peer_missing() -> str:
    """Why the PtyLab rows cannot be run ('' when they can)."""
    if not PEER_PYTHON.exists():
        return f"PtyLab is not installed ({PEER_PYTHON} missing: make bench-ptychography creates it)"
    probe = subprocess.run([str(PEER_PYTHON), "-c", "import PtyLab"], capture_output=True, text=True)
    return "" if probe.returncode == 0 else f"PtyLab does not import: {probe.stderr.strip().splitlines()[-1]}"


def run_ptylab(sim: Simulation, probe0: np.ndarray, engine: str, iterations: int) -> tuple[float, float]:
    """PtyLab's ``engine`` for ``iterations`` on ``sim``'s scan from ``probe0``, in its own
    interpreter (one core). Returns (iterations/s of the engine alone, phase error (rad)
    in the well-lit region, as for our rows)."""
    scan = sim.scan
    centres = np.asarray(scan.positions_m)
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "scan.h5", Path(tmp) / "out.npz"
        with h5py.File(src, "w") as f:  # PtyLab's CPM layout, lengths in m
            f["ptychogram"] = np.asarray(scan.frames, np.float32)
            f["wavelength"] = wavelength_m(scan.energy_ev)
            f["encoder"] = centres - centres.mean(axis=0)
            f["dxd"] = scan.pixel_size_m[0]
            f["zo"] = scan.distance_m
            f["probe0"] = np.asarray(probe0, np.complex64)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        run = subprocess.run(
            [str(PEER_PYTHON), "-c", PTYLAB_WORKER, str(src), str(out), engine, str(iterations)],
            capture_output=True,
            text=True,
            env=env,
        )
        if run.returncode != 0:
            raise RuntimeError(f"PtyLab {engine} failed: {run.stderr.strip()[-2000:]}")
        res = np.load(out)
        obj, pos, run_s = res["obj"], res["positions"], float(res["run_s"])
    if not np.isclose(float(res["dxo"]), sim.pixel_size_m, rtol=1e-6):
        raise RuntimeError(f"PtyLab's object pixel {float(res['dxo']):.4g} m is not ours {sim.pixel_size_m:.4g} m")
    # PtyLab's grid: window corners pos (whole pixels) = our corners + a whole-pixel offset
    off = np.round(np.mean(pos - sim.corners, axis=0)).astype(int)
    truth = np.ones(obj.shape, np.complex64)
    ys, xs = slice(max(off[0], 0), None), slice(max(off[1], 0), None)
    part = sim.obj[max(-off[0], 0) :, max(-off[1], 0) :]
    h, w = min(truth[ys].shape[0], part.shape[0]), min(truth[:, xs].shape[1], part.shape[1])
    truth[ys.start : ys.start + h, xs.start : xs.start + w] = part[:h, :w]
    region = metrics.well_lit(obj.shape, sim.probe, sim.corners + off, 0.3)
    return iterations / max(run_s, 1e-9), metrics.compare(obj, truth, region).phase_error_rad


def run_case(
    name: str, engines: list[str], iterations: int, device: str, peer_engines: list[str] | None = None
) -> list[tuple]:
    n_frames, side, obj_side, diameter, step = CASES[name]
    sim = simulate(
        frame_size=side,
        n_positions=n_frames,
        photons=1e8,
        probe_diameter_px=diameter,
        step_px=step,
        object_shape=(obj_side, obj_side) if obj_side else None,
        jitter_px=0.3,
        seed=0,
    )
    rows = []
    for label in engines:
        stages, extra = ENGINES[label]
        backend = get_backend(device, workers=1)
        tracemalloc.start()
        problem = prepare(sim.scan)
        probe0 = make_probe(side, diameter_px=diameter * 1.15, pupil_radius=0.25 * 0.95)
        if backend.name == "torch":
            backend.torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()  # the initial object (DPC) is part of the timed run
        probe = initial_probe(problem, probe0, 1)
        out = State(obj=initial_object(problem, probe), probe=probe, positions=problem.positions.copy())
        done = 0
        for k, (engine, share) in enumerate(stages):
            rule = StopRule() if share is None else None
            if share is None:
                n_it = iterations if engine == "dm" else 3 * iterations  # the technique's caps: 100, 300
            else:
                n_it = iterations - done if k == len(stages) - 1 else round(share * iterations)
            out = reconstruct(
                problem,
                out,
                engine=engine,
                iterations=n_it,
                backend=backend,
                options=Options(**{**extra, "subpixel_grid": 0}) if rule and engine == "ml" else Options(**extra),
                start_iteration=done,
                stop=rule,
            )
            done = len(out.history)
        backend.synchronize()
        dt = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        gpu_peak = backend.peak_memory()
        lo = np.round(np.array(problem.origin_m) / problem.pixel_size_m).astype(int)
        truth = np.ones(problem.object_shape, np.complex64)
        h = min(problem.object_shape[0], sim.obj.shape[0] - lo[0])
        w = min(problem.object_shape[1], sim.obj.shape[1] - lo[1])
        truth[:h, :w] = sim.obj[lo[0] : lo[0] + h, lo[1] : lo[1] + w]
        region = metrics.well_lit(problem.object_shape, sim.probe, sim.corners - lo, 0.3)
        err = metrics.compare(out.obj, truth, region).phase_error_rad
        mem = gpu_peak if gpu_peak else peak
        rows.append(
            (
                f"{n_frames} x {side}^2 on {problem.object_shape[0]}x{problem.object_shape[1]}",
                label if label != "default" else f"default ({done} it)",
                f"{done / dt:.2f}",
                f"{mem / 2**20:.0f}",
                f"{err:.4f}",
            )
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    label = f"{n_frames} x {side}^2 on {problem.object_shape[0]}x{problem.object_shape[1]}"
    probe0 = make_probe(side, diameter_px=diameter * 1.15, pupil_radius=0.25 * 0.95)
    for engine in peer_engines or []:
        its, err = run_ptylab(sim, probe0, engine, iterations)
        rows.append((label, f"ptylab-{engine}", f"{its:.2f}", "", f"{err:.4f}"))
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--cases", default="small,large")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu", "torch-cpu"])
    ap.add_argument(
        "--peer-engines",
        default=",".join(PEER_ENGINES),
        help="PtyLab engines run on the same scans (in .bench-envs/ptylab); none to leave them out",
    )
    args = ap.parse_args(argv)
    peer = [] if args.peer_engines in ("", "none") else args.peer_engines.split(",")
    why = peer_missing() if peer else ""
    if why:
        print(f"PtyLab rows left out: {why}", file=sys.stderr)
        peer = []
    rows = []
    for case in args.cases.split(","):
        rows += run_case(case, args.engines.split(","), args.iterations, args.device, peer)
    head = ("case", "engine", "it/s", "peak MiB", f"phase err (rad) @{args.iterations}")
    print(
        f"\nptychography, device {args.device} ({'1 core' if args.device == 'cpu' else args.device}), "
        f"{args.iterations} iterations from a DPC object and a 5-15 % wrong probe model\n"
    )
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(5)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    if why:
        print(f"\nPtyLab rows left out: {why}")
    print("\npublished, same problem size (161 x 128^2 on 492^2), this machine class:")
    for name, its, err in REFERENCE:
        print(f"  {name}: {its} it/s" + (f", phase error {err} rad" if err else ""))
    print("goal: >= 11 it/s with DM on one core at <= 0.02 rad (row dm: pure DM; dm+ml: 85 DM + 15 ML iterations)")
    return 0


# -- PXCT: the tomographic stage (panreduce_ptychography.pxct) --------------------------
#: name: (projections, rows, columns) of pxct.simulate_projections' phantom
PXCT_CASES = {"small": (45, 40, 48), "medium": (90, 64, 80)}


def run_pxct(cases: list[str]) -> list[tuple]:
    """Per case: seconds of pxct.pxct (unwrap, ramps, alignment, gridrec), alignment error
    (RMS and max, px, against the true shifts), volume error (normalised RMS against the
    phantom) and, for reference, the volume error of gridrec on the exact projections."""
    from panreduce_ptychography import pxct

    rows = []
    for name in cases:
        n_angles, h, w = PXCT_CASES[name]
        sim = pxct.simulate_projections(n_angles, h, w)
        t0 = time.perf_counter()
        res = pxct.pxct(sim.phases, sim.angles_deg)
        dt = time.perf_counter() - t0
        err = res.shifts + sim.shifts
        exact = pxct.reconstruct(sim.projections, np.deg2rad(sim.angles_deg), sim.center)
        rows.append(
            (
                f"{n_angles} x {h}x{w} -> {h}x{w}x{w}",
                f"{dt:.1f}",
                f"{np.sqrt(np.mean(err**2)):.3f} / {np.abs(err).max():.3f}",
                f"{pxct.normalised_rms(res.volume, sim.truth):.3f}",
                f"{pxct.normalised_rms(exact, sim.truth):.3f}",
                str(len(res.history) - 1),
            )
        )
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def pxct_main(argv: list[str] | None = None) -> int:
    """``python benchmarks/bench_ptychography.py pxct [--cases small,medium]``."""
    ap = argparse.ArgumentParser(description="PXCT tomographic stage on a simulated phantom")
    ap.add_argument("--cases", default=",".join(PXCT_CASES))
    args = ap.parse_args(argv)
    rows = run_pxct(args.cases.split(","))
    head = (
        "projections x rows x cols -> volume",
        "s",
        "align err RMS / max (px)",
        "volume NRMS",
        "exact NRMS",
        "rounds",
    )
    print("\nPXCT (wrapped phases, random offsets, ramps <= 0.05 rad/px, shifts <= 3 px, 0.02 rad noise), 1 process\n")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(pxct_main(sys.argv[2:]) if sys.argv[1:2] == ["pxct"] else main())
