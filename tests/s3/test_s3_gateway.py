"""Acceptance: a reduction whose input is an s3:// object runs through the gateway and
its outputs appear under the requested s3:// prefix, with provenance; with access
control, a proposal's S3 prefix is its own."""

from __future__ import annotations

import json

import h5py
import pytest

from panreduce import errors
from panreduce.client import Client
from panreduce_gateway.auth import Access, StaticTokens
from panreduce_gateway.embedded import Platform
from panreduce_gateway.gateway import GatewayConfig

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_platform(s3_env, monkeypatch, tmp_path):
    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    yield lambda **kw: Platform(["scan"], store_root=tmp_path / "store", **kw)


def test_scan_from_s3_through_the_gateway_to_an_s3_prefix(s3_platform, s3, s3_prefix, dataset, tmp_path):
    src = dataset("i16-scans/794932.nxs")
    s3.publish([(src, "794932.nxs")], s3_prefix + "raw/cm12345-1")
    out = s3_prefix + "processed/cm12345-1/run1/"
    with s3_platform() as platform, Client(platform.address, timeout=180) as c:
        done = c.reduce(
            "scan", [s3_prefix + "raw/cm12345-1/794932.nxs"], {"model": "gaussian"}, out, labels={"sample": "CuO film"}
        )
        listed = c.list_jobs(sample="cuo")
        assert [j.job_id for j in listed] == [done.job_id]
        assert c.list_jobs(owner="i16user")[0].job_id == done.job_id  # the user named in the NeXus file
    summary = done.summary
    assert summary["axis"] == "eta" and 29.9 < summary["center"] < 30.1
    names = sorted(r.name for r in s3.list(out))
    assert names == ["794932.png", "provenance.json", "scans.csv", "scans.nxs"]
    assert all(o.uri.startswith(out) for o in done.outputs)
    nexus = s3.stage(s3.list(out + "scans.nxs")[0], tmp_path / "check")
    with h5py.File(nexus) as f:
        record = json.loads(
            next(g["provenance/data"][()] for g in f.values() if isinstance(g, h5py.Group) and "provenance" in g)
        )
    assert record["inputs"][0]["uri"] == s3_prefix + "raw/cm12345-1/794932.nxs"
    from panreduce.storage import sha256_file

    assert record["inputs"][0]["sha256"] == sha256_file(src)


def test_proposal_prefixes_on_s3(s3_platform, s3, s3_prefix, dataset):
    src = dataset("i16-scans/794933.nxs")
    for proposal in ("pA", "pB"):
        s3.publish([(src, "scan.nxs")], f"{s3_prefix}{proposal}/raw")
    tokens = StaticTokens(
        [{"token": "a", "subject": "alice", "proposals": ["pA"]}, {"token": "b", "subject": "bob", "proposals": ["pB"]}]
    )
    config = GatewayConfig(access=Access([tokens], prefixes=[s3_prefix + "{proposal}/"]))
    with s3_platform(config=config) as platform:
        with Client(platform.address, token="a", timeout=180) as a:
            done = a.reduce("scan", [f"{s3_prefix}pA/raw/scan.nxs"], {}, f"{s3_prefix}pA/out/")
            with pytest.raises(errors.PermissionDenied):
                a.reduce("scan", [f"{s3_prefix}pB/raw/scan.nxs"], {}, f"{s3_prefix}pA/out2/")
            with pytest.raises(errors.PermissionDenied):
                a.reduce("scan", [f"{s3_prefix}pA/raw/scan.nxs"], {}, f"{s3_prefix}pB/planted/")
            with pytest.raises(errors.PermissionDenied):
                a.reduce("scan", [f"{s3_prefix}pA/raw/../../pB/raw/scan.nxs"], {})
        with Client(platform.address, token="b", timeout=60) as b:
            with pytest.raises(errors.PermissionDenied):
                b.download(done.outputs[0].uri, platform.stores.root / "stolen")
            with pytest.raises(errors.JobNotFound):
                b.get_job(done.job_id)
    assert s3.list(f"{s3_prefix}pA/out/")
    with pytest.raises(errors.InputNotFound):
        s3.list(f"{s3_prefix}pB/planted/")
