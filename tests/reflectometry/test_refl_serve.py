"""The issue's three acceptance commands through `panreduce serve` (a real process, real gRPC on
loopback): OFFSPEC 46992-46994, INTER 61440 and Platypus 708-710 with the direct beam 711,
each `panreduce reduce reflectometry ... --gateway` writing ORSO files that orsopy reads back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from faults_support import Process, free_port, panreduce_command, wait_serving
from orsopy import fileio

pytestmark = pytest.mark.data


def _reduce(address: str, cwd: Path, *args: str) -> dict:
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd / "xdg")}
    env.pop("PANREDUCE_GATEWAY", None)
    res = subprocess.run(
        [*panreduce_command(), "reduce", "reflectometry", *args, "--json", "--gateway", address],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return json.loads(res.stdout)


def _stitched(folder: Path, name: str):
    ds = fileio.load_orso(str(folder / name))
    assert len(ds) == 1
    q, r = ds[0].data[:, 0], ds[0].data[:, 1]
    assert np.all(np.diff(q) > 0) and np.all(np.isfinite(r))
    return ds[0], q, r


def test_the_three_acceptance_commands_through_panreduce_serve(tmp_path, dataset, dataset_folder):
    port = free_port()
    proc = Process(
        ["serve", "--techniques", "reflectometry", "--port", str(port), "--store", str(tmp_path / "store")],
        tmp_path / "serve.log",
        env={"TMPDIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg")},
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, 120, proc)

        # OFFSPEC: the command on the raw folder (SumInQ, non-flat sample, dQ/Q 3 %)
        off = tmp_path / "offspec"
        doc = _reduce(
            address,
            tmp_path,
            f"{dataset_folder('offspec-polymer/raw')}/",
            *("-p", "theta_deg=0.5,1.5,2.5", "-p", "roi=399-410,390-420,390-420"),
            *("-p", "summation=q", "-p", "reduction_type=non_flat_sample", "-p", "dq_q=0.03"),
            *("--output", str(off)),
        )
        assert doc["summary"]["stitched"] == "46992_46994_stitched.ort"
        assert {"46992.ort", "46993.ort", "46994.ort"} <= {p.name for p in off.iterdir()}
        ds, q, _ = _stitched(off, "46992_46994_stitched.ort")
        assert ds.info.data_source.experiment.instrument == "OFFSPEC"
        assert q[0] < 0.0095 and q[-1] > 0.25
        assert "not absolute reflectivity" in ds.info.reduction.comment  # its transmission run is not public

        # INTER 61440: θ 0.8°, roi 70-90, background 115-130, λ 1.2-17 Å, dQ/Q 2 %
        inter = tmp_path / "inter"
        doc = _reduce(
            address,
            tmp_path,
            str(dataset("inter-61440/INTER_61440_TOF_MantidSave.nxs")),
            *("-p", "theta_deg=0.8", "-p", "roi=70-90", "-p", "background_roi=115-130"),
            *("-p", "wavelength_range=1.2-17", "-p", "dq_q=0.02", "--output", str(inter)),
        )
        assert doc["summary"]["n_runs"] == 1
        ds = fileio.load_orso(str(inter / "61440.ort"))[0]
        q = ds.data[:, 0]
        # Q = 4π sin θ / λ over λ 1.2-17 Å at 0.8°: 0.0103-0.146 1/Å (to a bin)
        assert q[0] == pytest.approx(4 * np.pi * np.sin(np.radians(0.8)) / 17, rel=0.03)
        assert q[-1] == pytest.approx(4 * np.pi * np.sin(np.radians(0.8)) / 1.2, rel=0.03)

        # Platypus 708-710 with 711 as the direct beam: absolute R, plateau at 1
        plp = tmp_path / "platypus"
        files = [str(dataset(f"platypus-refnx/PLP0000{n}.nx.hdf")) for n in (708, 709, 710, 711)]
        doc = _reduce(address, tmp_path, *files, "-p", "transmission=PLP0000711.nx.hdf", "--output", str(plp))
        assert doc["summary"]["absolute_scale"] is True
        ds, q, r = _stitched(plp, "PLP0000708_PLP0000710_stitched.ort")
        assert ds.info.data_source.experiment.instrument == "PLATYPUS"
        plateau = (q > 0.0065) & (q < 0.009)
        assert np.median(r[plateau]) == pytest.approx(1.0, abs=0.05)
    finally:
        if proc.proc.poll() is None:
            proc.signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        proc.stop()
