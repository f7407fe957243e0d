"""Benchmark: Eiger-4M-sized frames integrated by the saxs service vs pyFAI called directly.

    make bench-saxs            # or: .venv/bin/python benchmarks/bench_saxs.py [--frames N]

Frames of 2167 x 2070 float32 (Eiger 4M, its module gaps masked) in one NeXus file, 1000 q
bins, no pixel splitting, solid angle, Poisson errors. For 1 and 2 OpenMP threads (one
subprocess each, OMP_NUM_THREADS set before pyFAI loads), it times side by side, best of
``--repeats`` rounds:

* pyFAI direct: read each frame from the file (h5py) and ``integrate1d`` it;
* service azimuthal: the saxs technique's units + reduce_block + combine + write
  (integration, normalisation, NXcanSAS/CSV/PNG outputs) on the same file, in-process
  through the kit's Context
  (the kit's staging checksum of the inputs is timed apart);
* service map: the same frames as a scan map (Gaussian fit per frame, grid, NeXus maps,
  ASCII images, plots).

It prints frames/s and the service/direct ratio, and the time a 10 000-frame map would take
extrapolated from the per-frame cost measured here (the 180 GB such a scan needs is not
written).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPE = (2167, 2070)
NPT = 1000
ROOT = Path(__file__).resolve().parents[1]


def make_stack(path: Path, n: int) -> None:
    import h5py
    import numpy as np
    from pyFAI.detectors import detector_factory

    det = detector_factory("Eiger4M")
    rows = np.arange(SHAPE[0])[:, None] - 1083.7
    cols = np.arange(SHAPE[1])[None, :] - 1035.2
    r = np.hypot(rows, cols) * 75e-6
    q = 4 * np.pi * np.sin(np.arctan(r / 2.0) / 2) / 1.0
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        d = e.create_group("instrument/detector")
        e["instrument"].attrs["NX_class"] = "NXinstrument"
        d.attrs["NX_class"] = "NXdetector"
        ds = d.create_dataset("data", shape=(n, *SHAPE), dtype="float32", chunks=(1, *SHAPE))
        s = e.create_group("sample")
        s.attrs["NX_class"] = "NXsample"
        nx = max(int(np.sqrt(n)), 1)
        s.create_dataset("tx", data=(np.arange(n) % nx) * 0.01)
        s.create_dataset("tz", data=(np.arange(n) // nx) * 0.01)
        for k in range(n):
            q0 = 0.05 + 0.01 * (k % 7) / 7
            law = 30 * np.exp(-0.5 * ((q - q0) / 0.002) ** 2) + 5 + 200 * np.exp(-((q * 40) ** 2) / 3)
            img = rng.poisson(law).astype(np.float32)
            img[det.mask.astype(bool)] = -1
            ds[k] = img


def worker(paths: str, repeats: int) -> dict:
    """Times both files; the difference gives the marginal cost of a frame, the rest is
    the fixed cost of a job (staging checksums, masks, plots, output files)."""
    small, large = paths.split(",")
    a = _worker(small, repeats)
    b = _worker(large, repeats)
    out = {"frames": [a["frames"], b["frames"]], "staging_per_frame_s": b["staging"] / b["frames"]}
    dn = b["frames"] - a["frames"]
    for key in ("direct", "azimuthal", "map"):
        per_frame = max(b[key] - a[key], 1e-9) / dn
        out[key] = {"per_frame_s": per_frame, "fixed_s": a[key] - a["frames"] * per_frame, "total_s": [a[key], b[key]]}
    return out


def _worker(path: str, repeats: int) -> dict:
    """Runs in a subprocess with OMP_NUM_THREADS already set."""
    import h5py
    import numpy as np
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    from panreduce.storage import stage_paths as stage  # inputs staged as the kit stages them

    params = {
        "geometry": {
            "distance_mm": 2000.0,
            "wavelength_angstrom": 1.0,
            "beam_center_px": [1035.2, 1083.7],
            "pixel_um": 75.0,
        },
        "masks": {"detector": "Eiger4M", "beamstop": "none", "below": 0},
        "integration": {"q_bins": NPT},
        "mode": "azimuthal",
    }
    with h5py.File(path) as f:
        n = f["entry/instrument/detector/data"].shape[0]
        first = f["entry/instrument/detector/data"][0]

    det = Detector(pixel1=75e-6, pixel2=75e-6, max_shape=SHAPE)
    ai = AzimuthalIntegrator(detector=det)
    ai.setFit2D(2000.0, 1035.2, 1083.7, pixelX=75, pixelY=75)
    ai.wavelength = 1e-10
    from panreduce_saxs.masks import detector_gap_mask, threshold_mask

    mask = (detector_gap_mask("Eiger4M", SHAPE) | threshold_mask(first, 0)).astype(np.int8)

    def direct() -> float:
        t = time.perf_counter()
        with h5py.File(path) as f:
            ds = f["entry/instrument/detector/data"]
            for k in range(n):
                ai.integrate1d(
                    ds[k],
                    NPT,
                    unit="q_A^-1",
                    method=("no", "csr", "cython"),
                    correctSolidAngle=True,
                    error_model="poisson",
                    mask=mask,
                )
        return time.perf_counter() - t

    from panreduce.kit import Context
    from panreduce_saxs.technique import Technique

    t = time.perf_counter()
    inputs = stage([path])  # the kit's staging checksums (sha256) are timed apart
    staging = time.perf_counter() - t

    def service(mode: str) -> float:
        p = dict(params, mode=mode)
        if mode == "map":
            p["map"] = {"peak_q_range": [0.035, 0.075]}
        technique = Technique()
        valid = technique.validate_parameters(p)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            ctx = Context(job_id="bench", scratch=Path(tmp))  # the shard contract, unsharded
            units = technique.units(inputs, valid)
            part = technique.reduce_block(units, inputs, valid, ctx)
            technique.write(technique.combine([part], valid), valid, ctx)
            return time.perf_counter() - t

    direct()  # warm: builds pyFAI's CSR matrix once
    service("azimuthal")
    best = {"direct": [], "azimuthal": [], "map": []}
    for _ in range(repeats):  # side by side, interleaved
        best["direct"].append(direct())
        best["azimuthal"].append(service("azimuthal"))
        best["map"].append(service("map"))
    return {"frames": n, "staging": staging, **{k: min(v) for k, v in best.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--frames",
        type=int,
        default=30,
        help="Eiger-4M frames in the larger test file (18 MB each); the smaller holds a third",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small, large = Path(tmp) / "eiger4m_small.nxs", Path(tmp) / "eiger4m_large.nxs"
        t = time.perf_counter()
        make_stack(small, max(args.frames // 3, 2))
        make_stack(large, args.frames)
        print(
            f"# wrote {max(args.frames // 3, 2)} + {args.frames} Eiger-4M frames "
            f"({(small.stat().st_size + large.stat().st_size) / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s; "
            f"{os.cpu_count()} CPU cores on this machine",
            flush=True,
        )
        rows = []
        for threads in [int(x) for x in args.threads.split(",")]:
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            out = subprocess.run(
                [sys.executable, __file__, "--worker", f"{small},{large}", "--repeats", str(args.repeats)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append((threads, json.loads(out.stdout.strip().splitlines()[-1])))
    print(
        f"\n{'threads':>7} | {'pyFAI direct':>13} | {'service 1-D':>13} | {'ratio':>5} | "
        f"{'service map':>13} | {'ratio':>5} | {'job fixed s':>12} | {'sha256':>8} | 10 000-frame map (extrapolated)"
    )
    print("-" * 125)
    for threads, r in rows:
        fd, fa, fm = (1 / r[k]["per_frame_s"] for k in ("direct", "azimuthal", "map"))
        map10k = r["map"]["fixed_s"] + 10_000 * r["map"]["per_frame_s"]
        direct10k = r["direct"]["fixed_s"] + 10_000 * r["direct"]["per_frame_s"]
        print(
            f"{threads:>7} | {fd:>8.2f} fr/s | {fa:>8.2f} fr/s | {fa / fd:>5.2f} | {fm:>8.2f} fr/s | "
            f"{fm / fd:>5.2f} | {r['azimuthal']['fixed_s']:>5.1f} / {r['map']['fixed_s']:>4.1f} | "
            f"{r['staging_per_frame_s'] * 1e3:>5.0f} ms | "
            f"{map10k / 60:.1f} min vs pyFAI alone {direct10k / 60:.1f} min ({map10k / direct10k - 1:+.0%})"
        )
    print(
        "\nframes/s: the marginal rate (time difference between the two files / frame difference), best of "
        "the interleaved rounds;\nratio: service / direct pyFAI in the same run (goal >= 0.90); job fixed s: "
        "per-job cost of the 1-D / map service runs (masks, plots, files);\nsha256: the kit's staging checksum per "
        "frame of input (18 MB), paid once per input file, not included in the service times."
    )


if __name__ == "__main__":
    main()
