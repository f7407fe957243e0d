"""Cancellation reaches every iteration of the ptychography engines (issue 12): a job of
10 000 DM iterations with the stop rule off, on a real service on loopback, ends CANCELLED
within 2 s of the cancel, its worker free and nothing published."""

from __future__ import annotations

import time

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
