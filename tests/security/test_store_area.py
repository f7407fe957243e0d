"""The gateway's own store (every proposal's uploads, results, shard scratch and the job
table) is never reachable by a plain path for a caller that is not an admin, even on a
gateway with tokens but no --allowed-prefix (which otherwise admits any path): uploads are
named upload://, results fetched with Download. Real servers on loopback; the job table
in SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_support import TOKENS, proposal_data, toy_platform
from stores_support import STORES, job_store

from panreduce import errors
from panreduce.client import Client
from panreduce_gateway.auth import Access, StaticTokens


@pytest.mark.parametrize("kind", STORES)
def test_plain_paths_into_the_gateways_store_are_refused(tmp_path, kind, request):
    files = proposal_data(tmp_path)
    access = Access([StaticTokens([{"token": t, "subject": s, "proposals": p} for t, (s, p) in TOKENS.items()])])
    with job_store(kind, tmp_path, request) as store, \
            toy_platform(tmp_path, access=access, store=store) as (_, gw, gateway), \
            Client(gw.address, token="bob-token", timeout=30) as bob, \
            Client(gw.address, token="alice-token", timeout=30) as alice:
        up = bob.upload(files["pB"])
        job = bob.reduce("toy", [up.uri], {})
        assert job.summary["total"] == pytest.approx(100.0)
        upload_path = gateway.stores.uploads.path_of(up.uri)
        result = Path(job.outputs[0].uri)
        root = gateway.stores.root
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "link.npy").symlink_to(upload_path)
        (tmp_path / "mine-dir").mkdir()
        (tmp_path / "mine-dir" / "a.npy").write_bytes(files["pA"].read_bytes())
        (tmp_path / "mine-dir" / "b.npy").symlink_to(upload_path)
        for inputs in ([str(upload_path)], ["file://" + str(upload_path)], [str(upload_path.parent) + "/"],
                       [str(root) + "/"], [str(root / "uploads") + "/"], [str(tmp_path / "mine" / "link.npy")],
                       [str(tmp_path / "mine-dir") + "/"], [str(result)]):
            with pytest.raises(errors.PermissionDenied):
                alice.reduce("toy", inputs, {})
        with pytest.raises(errors.PermissionDenied):
            alice.reduce("toy", [str(files["pA"])], {}, str(result.parent / "more"))
        assert not (result.parent / "more").exists()
        for uri in (str(upload_path), str(root / "jobs.sqlite"), str(result)):
            with pytest.raises(errors.PermissionDenied):
                alice.metadata(uri)
        # bob reaches his own results and upload as before, and alice her own data
        assert bob.download(str(result), tmp_path / "back.nxs").size == job.outputs[0].size
        assert alice.reduce("toy", [str(files["pA"])], {}).summary["total"] == pytest.approx(10.0)
        assert alice.reduce("toy", [str(tmp_path / "mine-dir" / "a.npy")], {}).summary["total"] == pytest.approx(10.0)
