"""S3 staging throughput: PaNReduce's S3Store.stage against the plain obstore client, side
by side on the same server (the Ceph RADOS Gateway of scripts/s3-server.sh, started here
when PANREDUCE_S3_ENDPOINT is not set), one object of ``size_mib`` MiB.

Rows (median of ``repeats`` interleaved rounds, MiB/s):
- ``obstore get -> memory``: one GET, whole body into memory;
- ``obstore get_ranges -> memory``: the plain client's ranged reads (part-size ranges);
- ``obstore get -> file``: one streamed GET written to a file (a plain stager);
- ``S3Store.stage -> file``: ours — parallel ranged GETs pinned to the ETag, written to
  the scratch file, SHA-256 computed and checked against the object's metadata.

The ratio compares ours with the best plain row that also ends in a file, and with the
best in-memory row (which skips the disk the stager must write to).

    .venv/bin/python benchmarks/s3_staging.py [--size-mib 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import obstore

from panreduce.s3 import S3Config, S3Store
from panreduce.storage import ObjectRef

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
OURS = "S3Store.stage -> file + SHA-256"


def _cpu_seconds() -> float:
    """CPU time of this process, all threads (steadier than wall time on a busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_env() -> tuple[dict[str, str], bool]:
    """(the S3 settings, whether this call started the server): from the environment,
    else from scripts/s3-server.sh (started when it is not running)."""
    if os.environ.get("PANREDUCE_S3_ENDPOINT"):
        return dict(os.environ), False
    script = str(REPO / "scripts" / "s3-server.sh")
    was_running = subprocess.run([script, "status"], capture_output=True).returncode == 0
    out = subprocess.run([script, "start"], check=True, capture_output=True, text=True, timeout=900).stdout
    env = dict(os.environ)
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip('"')
    return env, not was_running


def bench_s3_staging(size_mib: int = 256, repeats: int = 3, bucket: str = "panreduce") -> dict:
    """Stage one ``size_mib`` MiB object ``repeats`` times by each method; MiB/s per row."""
    env, started = server_env()
    try:
        return _bench(S3Config.from_env(env), size_mib, repeats, bucket)
    finally:
        if started:
            subprocess.run([str(REPO / "scripts" / "s3-server.sh"), "stop"], capture_output=True, timeout=60)


def _bench(config: S3Config | None, size_mib: int, repeats: int, bucket: str) -> dict:
    if config is None:
        raise RuntimeError("S3 is not configured")
    ours = S3Store(config)
    prefix = f"s3://{bucket}/bench/{uuid.uuid4().hex[:8]}/"
    uri = prefix + "object.bin"
    size = size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="s3-bench-"))
    try:
        src = work / "object.bin"
        src.write_bytes(np.random.default_rng(0).bytes(size))
        t0 = time.perf_counter()
        ours.publish([(src, "object.bin")], prefix)
        put_mibs = size_mib / (time.perf_counter() - t0)
        src.unlink()
        store, key = ours.store_for(uri)
        part = config.part_size

        def get_memory() -> int:
            return len(obstore.get(store, key).bytes())

        def get_ranges_memory() -> int:
            starts = list(range(0, size, part))
            ends = [min(s + part, size) for s in starts]
            return sum(len(b) for b in obstore.get_ranges(store, key, starts=starts, ends=ends))

        def get_file() -> int:
            out = work / "plain.bin"
            n = 0
            with open(out, "wb") as f:
                for block in obstore.get(store, key).stream(min_chunk_size=8 * MiB):
                    n += f.write(block)
            out.unlink()
            return n

        def get_file_sha256() -> int:
            out = work / "plain.bin"
            n = 0
            digest = hashlib.sha256()
            with open(out, "wb") as f:
                for block in obstore.get(store, key).stream(min_chunk_size=8 * MiB):
                    n += f.write(block)
                    digest.update(block)
            out.unlink()
            return n

        def stage() -> int:
            scratch = work / "scratch"
            path = ours.stage(ObjectRef(uri, "object.bin", size), scratch)
            n = path.stat().st_size
            assert ours.known_sha256(path)
            shutil.rmtree(scratch)
            return n

        methods = {
            "obstore get -> memory": get_memory,
            "obstore get_ranges -> memory": get_ranges_memory,
            "obstore get -> file": get_file,
            "obstore get -> file + SHA-256": get_file_sha256,
            OURS: stage,
        }
        speeds: dict[str, list[float]] = {name: [] for name in methods}
        cpu: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(repeats):
            for name, fn in methods.items():
                c0 = _cpu_seconds()
                t = time.perf_counter()
                n = fn()
                dt = time.perf_counter() - t
                assert n == size, (name, n, size)
                speeds[name].append(size_mib / dt)
                cpu[name].append((_cpu_seconds() - c0) * 1024 / size_mib)
        rows = {name: statistics.median(v) for name, v in speeds.items()}
        ours_speed = rows[OURS]
        return {
            "size_mib": size_mib,
            "repeats": repeats,
            "endpoint": config.endpoint,
            "part_size_mib": part / MiB,
            "concurrency": config.concurrency,
            "publish_mibs": put_mibs,
            "mibs": rows,
            "client_cpu_s_per_gib": {name: statistics.median(v) for name, v in cpu.items()},
            "ratio_vs_plain_same_work": ours_speed / rows["obstore get -> file + SHA-256"],
            "ratio_vs_plain_to_file": ours_speed / rows["obstore get -> file"],
            "ratio_vs_best_plain": ours_speed / max(v for k, v in rows.items() if k != OURS),
            "load_average": os.getloadavg()[0],
        }
    finally:
        try:
            ours.delete_prefix(prefix)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def table(result: dict) -> str:
    w = 34
    lines = [
        f"S3 staging, one {result['size_mib']} MiB object on {result['endpoint']} (median of "
        f"{result['repeats']}; ranges {result['part_size_mib']:.0f} MiB x {result['concurrency']}; "
        f"load average {result['load_average']:.1f})",
        f"{'method':<{w}} {'MiB/s':>7} {'client CPU s/GiB':>17}",
        f"{'-' * w} {'-' * 7} {'-' * 17}",
    ]
    lines += [
        f"{name:<{w}} {speed:>7.0f} {result['client_cpu_s_per_gib'][name]:>17.2f}"
        for name, speed in result["mibs"].items()
    ]
    lines += [
        f"{'-' * w} {'-' * 7} {'-' * 17}",
        f"{'ours / plain get -> file + SHA-256':<{w}} {result['ratio_vs_plain_same_work']:>7.2f}",
        f"{'ours / plain get -> file':<{w}} {result['ratio_vs_plain_to_file']:>7.2f}",
        f"{'ours / best plain row':<{w}} {result['ratio_vs_best_plain']:>7.2f}",
        f"{'(publish, for reference)':<{w}} {result['publish_mibs']:>7.0f}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(table(bench_s3_staging(args.size_mib, args.repeats)))


if __name__ == "__main__":
    main()
