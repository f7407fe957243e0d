"""4D-STEM benchmark (``make bench-stem4d``): GB of frames per second per core for virtual
BF/ADF/HAADF + centre of mass in one pass over a synthetic scan on disk, side by side with
LiberTEM's UDF engine (ApplyMasksUDF + CoMUDF, inline executor = one core) and py4DSTEM
(``DataCube.get_virtual_image`` for the three detectors + ``get_origin``, its per-pattern masked
centre of mass) on the same file, and the torch path (CPU where torch is installed, GPU where CUDA is).

The scan: 256 x 256 uint16 frames (a bright disc, an ADF ring, Poisson noise; 64 distinct
frames tiled with row-dependent shifts) written once to a raw file. Every engine runs in its own
process (one thread) so that its peak RSS is its own: ours reads 4 MB chunks of frames with
``os.preadv`` into one reused buffer (``pipeline.stream(read_frames=...)``; the torch path: blocks
of scan rows by ``numpy.fromfile``, ``chunk_mb`` = 256), LiberTEM its "raw" dataset,
py4DSTEM a ``DataCube`` over a ``numpy.memmap`` of the file (its functions index the array per
pattern). LiberTEM and py4DSTEM (which pins numpy 1.26) live in ``.bench-envs/libertem`` and
``.bench-envs/py4dstem``, made by ``make bench-envs``. The file is read from the page cache after
the first pass (ours and LiberTEM: best of ``--repeat`` after a warm-up; py4DSTEM: one pass,
after the others have warmed the cache): the figure is compute, not disk. "GB per CPU-second"
is the scan's size over the process's CPU time (``time.process_time``) in that same pass: the
per-core figure that holds on a loaded machine, where the wall-clock rate is a share of a core. Peak RSS is
``ru_maxrss`` and counts the pages of a memory-mapped file that the process touched.

Usage: python benchmarks/bench_stem4d.py [--gb 1.0] [--repeat 2] [--keep] [--skip-py4dstem]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from panreduce_stem4d import pipeline
from panreduce_stem4d.detectors import Geometry, MaskSpec

ROOT = Path(__file__).resolve().parents[1]
LIBERTEM_PY = ROOT / ".bench-envs" / "libertem" / "bin" / "python"
PY4DSTEM_PY = ROOT / ".bench-envs" / "py4dstem" / "bin" / "python"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
DET = 256
CENTER = (127.3, 128.6)
MRAD_PER_PX = 0.1
DETECTORS = [MaskSpec("bf", 0.0, 2.0), MaskSpec("adf", 3.0, 8.0), MaskSpec("haadf", 8.0, 12.5)]


def write_scan(path: Path, gb: float) -> tuple[int, int]:
    """A raw uint16 scan of about ``gb`` GB: (ny, nx) with nx = 256."""
    frame_bytes = DET * DET * 2
    nx = 256
    ny = max(1, int(gb * 1e9 / (frame_bytes * nx)))
    rng = np.random.default_rng(0)
    yy, xx = np.indices((DET, DET), dtype=np.float64)
    tiles = []
    for k in range(64):
        dy, dx = rng.normal(0, 1.5, 2)
        r = np.hypot(yy - CENTER[0] - dy, xx - CENTER[1] - dx)
        lam = 30.0 * np.clip(15 - r + 0.5, 0, 1) + 2.0 * np.exp(-0.5 * ((r - 50) / 8) ** 2) + 0.05
        tiles.append(rng.poisson(lam * (0.8 + 0.4 * k / 64)).astype(np.uint16))
    tiles = np.stack(tiles)
    with open(path, "wb") as fh:
        for i in range(ny):
            idx = (np.arange(nx) + 7 * i) % 64
            fh.write(np.ascontiguousarray(tiles[idx]).tobytes())
    return ny, nx


def ours(path: Path, ny: int, nx: int, repeat: int, backend: str = "numpy", device: str = "cpu") -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the fastest pass."""
    row_bytes = nx * DET * DET * 2
    frame_bytes = DET * DET * 2

    def read_rows(a: int, b: int) -> np.ndarray:
        flat = np.fromfile(path, dtype=np.uint16, count=(b - a) * nx * DET * DET, offset=a * row_bytes)
        return flat.reshape(b - a, nx, DET, DET)

    fd = os.open(path, os.O_RDONLY)

    def read_frames(f0: int, f1: int, out: np.ndarray) -> None:
        """Frames [f0, f1) straight into the caller's reused buffer (pread: one copy from the page cache)."""
        mv = memoryview(out).cast("B")
        got = 0
        while got < len(mv):
            k = os.preadv(fd, [mv[got:]], f0 * frame_bytes + got)
            if k <= 0:
                raise EOFError(f"{path}: short read at frame {f0}")
            got += k

    calib = pipeline.Calibration(
        Geometry(CENTER, MRAD_PER_PX), 15.0, np.zeros((DET, DET)), detectors=DETECTORS, com_mrad=2.0
    )
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat + 1):  # the first pass warms the page cache
        t0, c0 = time.perf_counter(), time.process_time()
        part = pipeline.stream(
            read_rows,
            (ny, nx, DET, DET),
            calib,
            row0=0,
            row1=ny,
            itemsize=2,
            budget_mb=256,
            backend=backend,
            device=device,
            read_frames=read_frames if backend == "numpy" else None,
            dtype=np.dtype(np.uint16),
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    os.close(fd)
    assert np.isfinite(part.com_raw_yx_px).all()
    return best, best_cpu


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def run_child(python: Path | str, args: list[str], script: str | None = None) -> tuple[dict | None, str]:
    """One engine in its own single-threaded process; its last stdout line is a JSON result."""
    cmd = [str(python), "-c", script, *args] if script else [str(python), *args]
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ONE_THREAD}, timeout=7200)
    after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    if done.returncode != 0:
        return None, "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:100]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # CPU seconds per wall second over the whole child: > 1 means it used more than one core
    out["cores"] = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / wall
    return out, ""


LIBERTEM_SCRIPT = r"""
import json, sys, time, os
import numpy as np
from libertem.api import Context
from libertem.udf.masks import ApplyMasksUDF
from libertem.udf.com import CoMUDF
path, ny, nx, det, cy, cx, repeat = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
ctx = Context.make_with("inline")
ds = ctx.load("raw", path=path, nav_shape=(ny, nx), sig_shape=(det, det), dtype="uint16")
yy, xx = np.indices((det, det))
r = np.hypot(yy - cy, xx - cx) * 0.1
masks = [(r < 2.0), (r >= 3.0) & (r < 8.0), (r >= 8.0) & (r < 12.5)]
factories = [lambda m=m: m.astype(np.float32) for m in masks]
best, best_cpu = 1e99, 1e99
for _ in range(repeat + 1):
    t0, c0 = time.perf_counter(), time.process_time()
    ctx.run_udf(dataset=ds, udf=[ApplyMasksUDF(mask_factories=factories),
                                 CoMUDF.with_params(cy=cy, cx=cx, r=20.0)])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if wall < best:
        best, best_cpu = wall, cpu
import libertem, resource
print(json.dumps({"seconds": best, "cpu_seconds": best_cpu, "version": libertem.__version__,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def libertem(path: Path, ny: int, nx: int, repeat: int) -> tuple[dict | None, str]:
    if not LIBERTEM_PY.exists():
        return None, "not installed (make bench-envs: .bench-envs/libertem)"
    args = [str(path), str(ny), str(nx), str(DET), str(CENTER[0]), str(CENTER[1]), str(repeat)]
    out, err = run_child(LIBERTEM_PY, args, LIBERTEM_SCRIPT)
    if out is None:
        return None, err
    return out, f"LiberTEM {out['version']} (inline executor, ApplyMasksUDF + CoMUDF)"


PY4DSTEM_SCRIPT = r"""
import json, sys, time, resource, warnings
import numpy as np
warnings.filterwarnings("ignore")
import py4DSTEM
from py4DSTEM.process.calibration.origin import get_origin
path, ny, nx, det, cy, cx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
frames = np.memmap(path, dtype=np.uint16, mode="r", shape=(ny, nx, det, det))
t0, c0 = time.perf_counter(), time.process_time()
dc = py4DSTEM.DataCube(data=frames)
# py4DSTEM's (qx, qy) are the array's (row, column); radii in px (0.1 mrad/px)
bf = dc.get_virtual_image("circle", ((cy, cx), 20.0), verbose=False, name="bf")
adf = dc.get_virtual_image("annulus", ((cy, cx), (30.0, 80.0)), verbose=False, name="adf")
haadf = dc.get_virtual_image("annulus", ((cy, cx), (80.0, 125.0)), verbose=False, name="haadf")
t_virtual = time.perf_counter() - t0
# its per-pattern centre of mass inside a disc (r * rscale = 20 px) about the brightest point
qx0, qy0, _ = get_origin(dc, r=15.0, rscale=20.0 / 15.0)
seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
assert np.isfinite(qx0).all() and np.isfinite(bf.data).all()
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "virtual_seconds": t_virtual, "version": py4DSTEM.__version__,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def py4dstem(path: Path, ny: int, nx: int) -> tuple[dict | None, str]:
    if not PY4DSTEM_PY.exists():
        return None, "not installed (make bench-envs: .bench-envs/py4dstem)"
    args = [str(path), str(ny), str(nx), str(DET), str(CENTER[0]), str(CENTER[1])]
    out, err = run_child(PY4DSTEM_PY, args, PY4DSTEM_SCRIPT)
    if out is None:
        return None, err
    return out, (
        f"py4DSTEM {out['version']} (get_virtual_image x3 + get_origin CoM; one pass, cache warm; "
        f"the virtual images alone {out['virtual_seconds']:.1f} s)"
    )


def ours_child(path: Path, ny: int, nx: int, repeat: int, backend: str, device: str) -> tuple[dict | None, str]:
    args = [__file__, "--child", f"{backend}:{device}", "--path", str(path), "--shape", f"{ny},{nx}"]
    return run_child(sys.executable, [*args, "--repeat", str(repeat)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="scan size in GB (the issue's figure: 4)")
    ap.add_argument("--repeat", type=int, default=2, help="timed passes after the warm-up (best kept)")
    ap.add_argument("--dir", default=None, help="where to write the scan (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the scan file")
    ap.add_argument("--skip-py4dstem", action="store_true", help="leave out py4DSTEM (slow: a Python loop per pattern)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--shape", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one of our engines, in its own process
        backend, device = args.child.split(":")
        ny, nx = (int(v) for v in args.shape.split(","))
        sec, cpu = ours(Path(args.path), ny, nx, args.repeat, backend, device)
        print(json.dumps({"seconds": sec, "cpu_seconds": cpu, "rss_mb": peak_rss_mb()}))
        return
    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench-stem4d-"))
    path = folder / "scan_uint16.raw"
    t0 = time.perf_counter()
    ny, nx = write_scan(path, args.gb)
    size_gb = path.stat().st_size / 1e9
    print(
        f"scan: {ny} x {nx} frames of {DET} x {DET} uint16 = {size_gb:.2f} GB, written in "
        f"{time.perf_counter() - t0:.1f} s ({path})"
    )
    rows: list[tuple[str, dict | None, str]] = []
    out, err = ours_child(path, ny, nx, args.repeat, "numpy", "cpu")
    rows.append(
        ("panreduce stem4d (numpy, 1 core)", out, err or "3 virtual detectors + CoM + exact sums + max pattern")
    )
    try:
        import torch

        out, err = ours_child(path, ny, nx, args.repeat, "torch", "cpu")
        rows.append(("panreduce stem4d (torch, CPU, 1 thread)", out, err or f"torch {torch.__version__}"))
        if torch.cuda.is_available():
            out, err = ours_child(path, ny, nx, args.repeat, "torch", "cuda")
            rows.append(("panreduce stem4d (torch, GPU)", out, err or torch.cuda.get_device_name(0)))
        else:
            rows.append(("panreduce stem4d (torch, GPU)", None, "no CUDA GPU here"))
    except ImportError:
        rows.append(("panreduce stem4d (torch)", None, "torch not installed (the gpu extra)"))
    out, note = libertem(path, ny, nx, args.repeat)
    rows.append(("LiberTEM (1 core)", out, note))
    if args.skip_py4dstem:
        rows.append(("py4DSTEM (1 core)", None, "skipped (--skip-py4dstem)"))
    else:
        out, note = py4dstem(path, ny, nx)
        rows.append(("py4DSTEM (1 core)", out, note))
    print()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    print("| engine | scan | seconds | GB/s (wall) | GB per CPU-second | peak RSS (MB) | CPU s / wall s | notes |")
    print("|---|---|---|---|---|---|---|---|")
    for name, res, note in rows:
        s = res["seconds"] if res else None
        rss = f"{res['rss_mb']:.0f}" if res else "—"
        cores = f"{res['cores']:.2f}" if res else "—"
        rate = f"{size_gb / s:.3f}" if s else "—"
        cpu = res.get("cpu_seconds") if res else None
        per_cpu = f"{size_gb / cpu:.3f}" if cpu else "—"
        print(
            f"| {name} | {size_gb:.2f} GB | {f'{s:.2f}' if s else '—'} | {rate} | {per_cpu} | {rss} | {cores} | {note} |"
        )
    if not args.keep:
        path.unlink()
        if args.dir is None:
            folder.rmdir()


if __name__ == "__main__":
    sys.exit(main())
