"""Benchmark of the sans technique on the LOQ GFP batch (make bench-sans).

Measures, in one process and side by side, wall and CPU time of:
* the full batch (28 scattering runs summed into 3 samples and 1 can, 5 transmission/direct
  runs; 3 outputs), loading included, with and without the PNGs;
* one sample (one batch row: 7 + 7 summed runs);
* the stages of the full batch: reading the runs, the reduction, writing the outputs;
* the full batch with both banks merged (DET/MERGED, HAB rescale and shift fitted, L/Q to
  1 1/Å): 3 merged outputs plus each bank's, 9 in all.
The service imports matplotlib/sasdata once at start-up (warm_up); that is timed apart.
Each case is run ``REPEATS`` times; the best wall time and its CPU time are reported.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from panreduce import datasets
from panreduce.kit import Context
from panreduce.storage import stage_paths
from panreduce_sans.technique import Technique

REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def _clock():
    return time.perf_counter(), time.process_time()


def _since(t0):
    w, c = _clock()
    return w - t0[0], c - t0[1]


def run(technique: Technique, inputs, params: dict, rows: slice | None = None) -> dict[str, tuple[float, float]]:
    """One job through the technique's shard contract, timed by stage: reading and
    reducing the rows (``units`` + ``reduce_block``; ``rows``: only those batch rows, as a
    shard would) and writing the outputs (``combine`` + ``write``)."""
    p = technique.validate_parameters(params)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context(job_id="bench", scratch=Path(tmp))
        t0 = _clock()
        units = technique.units(inputs, p)
        part = technique.reduce_block(units[rows] if rows else units, inputs, p, ctx)
        t_load = _since(t0)
        t1 = _clock()
        technique.write(technique.combine([part], p), p, ctx)
        t_write = _since(t1)
        total = _since(t0)
    return {"load": t_load, "reduce+write": t_write, "total": total}


def best(technique, inputs, params, rows=None) -> dict[str, tuple[float, float]]:
    runs = [run(technique, inputs, params, rows) for _ in range(REPEATS)]
    return min(runs, key=lambda r: r["total"][0])


def main() -> None:
    try:
        raw = datasets.folder("loq-gfp/raw")
        mantid = datasets.folder("loq-gfp/mantid-files")
    except datasets.DatasetMissing as exc:
        print(f"skipped: {exc}")
        return
    inputs = stage_paths([raw, mantid])
    extra = Path(tempfile.mkdtemp(prefix="bench-sans-"))
    (extra / "USER_MERGED.txt").write_text(
        (mantid / "USER_LOQ_125B.txt")
        .read_text()
        .replace("DET/MAIN", "DET/MERGED\nDET/RESCALE/FIT\nDET/SHIFT/FIT")
        .replace("L/Q .008,0.002,0.08,-0.05,0.285", "L/Q .008,0.002,0.08,-0.05,1.0")
    )
    merged_inputs = stage_paths([raw, mantid, extra])
    technique = Technique()
    t0 = _clock()
    technique.warm_up()
    warm = _since(t0)
    base = {"user_file": "USER_LOQ_125B.txt", "batch_file": "reduce-gfp.csv"}
    rows = [
        ("service warm-up (imports, once per service)", {"total": warm}),
        ("full batch, 3 outputs + PNGs", best(technique, inputs, base)),
        ("full batch, 3 outputs, no PNGs", best(technique, inputs, {**base, "plots": False})),
        ("one sample (batch row 1 of 3) + PNG", best(technique, inputs, base, rows=slice(0, 1))),
        ("full batch + canSAS XML + 2-D I(Qx,Qy)", best(technique, inputs, {**base, "cansas_xml": True, "qxy": True})),
        (
            "full batch, main + HAB merged, 9 outputs + PNGs",
            best(technique, merged_inputs, {**base, "user_file": "USER_MERGED.txt"}),
        ),
    ]
    print(
        f"sans benchmark: LOQ GFP batch, {os.cpu_count()} CPU(s), best of {REPEATS}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print(f"| {'case':<48} | {'wall s':>7} | {'CPU s':>7} | {'read+reduce wall s':>18} | {'write wall s':>12} |")
    print(f"|{'-' * 50}|{'-' * 9}|{'-' * 9}|{'-' * 20}|{'-' * 14}|")
    for name, r in rows:
        wall, cpu = r["total"]
        load = f"{r['load'][0]:.2f}" if "load" in r else "-"
        red = f"{r['reduce+write'][0]:.2f}" if "reduce+write" in r else "-"
        print(f"| {name:<48} | {wall:>7.2f} | {cpu:>7.2f} | {load:>18} | {red:>12} |")


if __name__ == "__main__":
    main()
