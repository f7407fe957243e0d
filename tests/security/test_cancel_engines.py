"""Cancellation reaches every iteration (issue 12), on real services on loopback: a job of
10 000 ptychography DM iterations with the stop rule off, and a 2000-frame SAXS
integration, end CANCELLED within 2 s of the cancel, their worker free and nothing
published; a GetMetadata walk of a wide file stops within 2 s of the caller's cancel or
deadline."""

from __future__ import annotations

import time

import pytest
from faults_support import assert_cancel_stops_within, wait_for

from panreduce import registry
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.storage import Stores
from panreduce_ptychography.heldout import CASES, generate
from panreduce_ptychography.io import write_nexus


def test_cancel_of_a_long_ptychographic_reconstruction_stops_within_2s(tmp_path):
    case = next(c for c in CASES if c.name == "zp-fermat-48")
    scan = tmp_path / "data" / "scan.nxs"
    scan.parent.mkdir()
    write_nexus(scan, generate(case).scan)
    service = start_technique(registry.load("ptychography"), stores=Stores(tmp_path / "store"))
    try:
        with Client(service.address, timeout=60) as client:
            job = client.submit(
                "ptychography",
                [str(scan)],
                {
                    "iterations": 10_000,
                    "ml_iterations": 0,
                    "convergence": {"stop": False},
                    "plots": False,
                    "device": "cpu",
                },
                str(tmp_path / "out"),
            )
            seen = wait_for(lambda: client.get_job(job.job_id).progress.fraction > 0.05, 120)
            assert seen, f"the job never reached its iterations: {client.get_job(job.job_id)}"
            time.sleep(0.5)
            assert_cancel_stops_within(client, service, job.job_id)
        assert not (tmp_path / "out").exists()
    finally:
        service.drain_and_stop(2)


# -- the SAXS frame loop ----------------------------------------------------------------------
def _saxs_stack(path, frames: int) -> None:
    """A NeXus stack of ``frames`` flat 120 x 140 frames (the fill value: no bytes on disk)
    with its geometry, as a detector writes it."""
    import h5py

    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("data", shape=(frames, 120, 140), dtype="f4", chunks=(1, 120, 140), fillvalue=100.0)
        for key, value, units in (
            ("distance", 1000.0, "mm"),
            ("x_pixel_size", 172.0, "um"),
            ("y_pixel_size", 172.0, "um"),
            ("beam_center_x", 70.3, "pixel"),
            ("beam_center_y", 60.6, "pixel"),
        ):
            det.create_dataset(key, data=value).attrs["units"] = units
        mono = inst.create_group("monochromator")
        mono.attrs["NX_class"] = "NXmonochromator"
        mono.create_dataset("energy", data=12.398).attrs["units"] = "keV"


def _frame_reached(client, job_id: str) -> int:
    message = client.get_job(job_id).progress.message  # "frame K/N" while integrating
    return int(message.split()[1].split("/")[0]) if message.startswith("frame ") else 0


def test_cancel_of_a_long_saxs_integration_stops_within_2s(tmp_path):
    """2000 frames (~40 s of integration here): cancelled mid-loop, the job is CANCELLED and
    the worker free within 2 s, and nothing is published."""
    stack = tmp_path / "data" / "stack.nxs"
    stack.parent.mkdir()
    _saxs_stack(stack, 2000)
    service = start_technique(registry.load("saxs"), stores=Stores(tmp_path / "store"))
    try:
        with Client(service.address, timeout=60) as client:
            job = client.submit("saxs", [str(stack)], {"masks.beamstop": "none"}, str(tmp_path / "out"))
            assert wait_for(lambda: _frame_reached(client, job.job_id) >= 20, 120), client.get_job(job.job_id)
            assert _frame_reached(client, job.job_id) < 1500, "the stack is too short to cancel mid-loop"
            assert_cancel_stops_within(client, service, job.job_id)
        assert not (tmp_path / "out").exists()
    finally:
        service.drain_and_stop(2)


# -- the metadata walk ------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _busy(pid: int, seconds: float = 1.0) -> float:
    """The fraction of one core the process used over the next ``seconds``."""
    before = _cpu_seconds(pid)
    time.sleep(seconds)
    return (_cpu_seconds(pid) - before) / seconds


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_a_cancelled_metadata_walk_stops_within_2s(tmp_path, how):
    """GetMetadata on a wide file (400 datasets of 4.9 M values each, ~40 ms apiece to
    summarise: ~15 s of walk) at a real service process: after the caller cancels, or its
    deadline passes, the service stops walking within 2 s (its CPU falls to idle)."""
    import grpc
    import h5py
    from faults_support import free_port, service, wait_serving

    from panreduce.v1 import reduce_pb2 as pb
    from panreduce.v1 import reduce_pb2_grpc as pb_grpc

    wide = tmp_path / "wide.h5"
    with h5py.File(wide, "w") as f:
        group = f.create_group("entry")
        for i in range(400):
            group.create_dataset(f"d{i:04d}", shape=(4_900_000,), dtype="f8", chunks=(1 << 20,), fillvalue=1.5)
    port = free_port()
    proc = service("scan", port, tmp_path / "store", tmp_path)
    try:
        wait_serving(f"127.0.0.1:{port}", process=proc)
        pid = proc.proc.pid
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ReducerStub(channel)
            call = stub.GetMetadata.future(pb.MetadataRequest(uri=str(wide)), timeout=3.0 if how == "deadline" else 60)
            time.sleep(1.0)
            walking = _busy(pid)
            assert walking > 0.15, f"the walk is not running ({walking:.0%} of a core): the check could not fail"
            if how == "cancel":
                call.cancel()
            with pytest.raises(grpc.FutureCancelledError if how == "cancel" else grpc.RpcError):
                call.result(timeout=10)
            ended = time.monotonic()
            assert call.done() and not call.running()
            if how == "deadline":
                assert call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(max(0.0, 2.0 - (time.monotonic() - ended)))
            busy = _busy(pid)
        assert busy < 0.08, f"the service still used {busy:.0%} of a core 2 s after the call ended"
    finally:
        proc.stop()
