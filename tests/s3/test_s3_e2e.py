"""End to end: a technique server whose stores come from the environment reduces s3://
inputs into an s3:// output prefix on the real S3 server, with provenance."""

from __future__ import annotations

import hashlib
import io
import json

import h5py
import numpy as np
import pytest

from panreduce import errors
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.storage import Stores

pytestmark = pytest.mark.s3


def npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_reduction_from_s3_inputs_to_an_s3_prefix(s3, s3_prefix, s3_env, tmp_path):
    arrays = {"scan1/a.npy": np.arange(10.0), "scan1/b.npy": np.full((3, 4), 2.5), "c.npy": np.array([7.0, -1.0])}
    for name, a in arrays.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(npy_bytes(a))
    s3.publish([(tmp_path / "in" / n, n) for n in arrays], s3_prefix + "raw")
    payload = {n: npy_bytes(a) for n, a in arrays.items()}

    stores = Stores.from_env(tmp_path / "store", environ=s3_env)
    server = start_technique(Toy, stores=stores)
    try:
        with Client(server.address, timeout=120) as c:
            inputs = [s3_prefix + "raw/scan1/", s3_prefix + "raw/c.npy"]
            out = s3_prefix + "results/job1/"
            done = c.reduce("toy", inputs, {"scale": 2.0}, out)
            expected = 2.0 * sum(float(a.sum()) for a in arrays.values())
            assert done.summary["total"] == pytest.approx(expected)

            # the outputs appear under the requested prefix, with provenance.json
            names = sorted(r.name for r in s3.list(out))
            assert names == ["provenance.json", "toy.csv", "toy.nxs"]
            assert {o.uri for o in done.outputs} == {out + n for n in names}
            for o in done.outputs:  # the result's checksums are the stored objects' checksums
                staged = s3.stage(s3.list(o.uri)[0], tmp_path / "check")
                assert hashlib.sha256(staged.read_bytes()).hexdigest() == o.sha256
            record = json.loads((tmp_path / "check" / "provenance.json").read_text())
            assert done.result.provenance_uri == out + "provenance.json"
            assert {i["uri"]: i["sha256"] for i in record["inputs"]} == {
                s3_prefix + "raw/" + n: hashlib.sha256(d).hexdigest() for n, d in payload.items()
            }
            assert record["request"]["inputs"] == inputs
            with h5py.File(tmp_path / "check" / "toy.nxs", "r") as f:
                assert float(f["entry/total"][()]) == pytest.approx(expected)
                assert "provenance" in f["entry"]
            assert (tmp_path / "check" / "toy.csv").read_text().startswith("#")

            # Download of an s3:// output through the server
            got = c.download(out + "toy.csv", tmp_path / "dl.csv")
            assert (tmp_path / "dl.csv").read_bytes() == (tmp_path / "check" / "toy.csv").read_bytes()
            assert got.sha256 == next(o.sha256 for o in done.outputs if o.uri.endswith("toy.csv"))

            # the same output location again: refused, and nothing changes
            before = {r.name: r.size for r in s3.list(out)}
            with pytest.raises(errors.FailedPrecondition, match="overwrite"):
                c.reduce("toy", inputs, {"scale": 3.0}, out)
            assert {r.name: r.size for r in s3.list(out)} == before

            # a missing s3:// input is NOT_FOUND before any job runs
            with pytest.raises(errors.InputNotFound):
                c.reduce("toy", [s3_prefix + "raw/nope.npy"], {}, s3_prefix + "results/job2/")
            with pytest.raises(errors.InputNotFound):
                s3.list(s3_prefix + "results/job2/")
    finally:
        server.drain_and_stop(2)
