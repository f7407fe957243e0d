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
from panreduce_gateway.gateway import GatewayService


@pytest.mark.parametrize("kind", STORES)
def test_plain_paths_into_the_gateways_store_are_refused(tmp_path, kind, request):
    files = proposal_data(tmp_path)
    access = Access([StaticTokens([{"token": t, "subject": s, "proposals": p} for t, (s, p) in TOKENS.items()])])
    with (
        job_store(kind, tmp_path, request) as store,
        toy_platform(tmp_path, access=access, store=store) as (_, gw, gateway),
        Client(gw.address, token="bob-token", timeout=30) as bob,
        Client(gw.address, token="alice-token", timeout=30) as alice,
    ):
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
        for inputs in (
            [str(upload_path)],
            ["file://" + str(upload_path)],
            [str(upload_path.parent) + "/"],
            [str(root) + "/"],
            [str(root / "uploads") + "/"],
            [str(tmp_path / "mine" / "link.npy")],
            [str(tmp_path / "mine-dir") + "/"],
            [str(result)],
        ):
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


class Checkless(GatewayService):
    """A gateway with its own location check broken: only the service's check is left."""

    def _check_request_uris(self, identity, proposal, request):
        return list(request.inputs), request.output


@pytest.mark.parametrize("kind", STORES)
def test_the_services_refuse_the_store_too_when_no_prefixes_are_configured(tmp_path, kind, request, monkeypatch):
    """Without prefixes the gateway sends "anywhere but its own store" (its uploads area
    and the job's output excepted); a service refuses the rest even if the gateway's own
    check failed, and staging and publishing check it again."""
    files = proposal_data(tmp_path)
    monkeypatch.setattr("service_support.GatewayService", Checkless)
    access = Access([StaticTokens([{"token": t, "subject": s, "proposals": p} for t, (s, p) in TOKENS.items()])])
    with (
        job_store(kind, tmp_path, request) as store,
        toy_platform(tmp_path, access=access, store=store) as (_, gw, gateway),
        Client(gw.address, token="bob-token", timeout=30) as bob,
        Client(gw.address, token="alice-token", timeout=30) as alice,
    ):
        up = bob.upload(files["pB"])
        job = bob.reduce("toy", [up.uri], {})
        upload_path = gateway.stores.uploads.path_of(up.uri)
        result = Path(job.outputs[0].uri)
        for inputs, output in (([str(upload_path)], ""), ([str(files["pA"])], str(result.parent / "more"))):
            with pytest.raises(errors.PermissionDenied, match="outside the locations the gateway gave"):
                alice.reduce("toy", inputs, {}, output)
        assert not (result.parent / "more").exists()
        mine = alice.upload(files["pA"])
        assert alice.reduce("toy", [mine.uri], {}).summary["total"] == pytest.approx(10.0)
        assert alice.reduce("toy", [str(files["pA"]), str(files["pB"])], {}).summary["total"] == pytest.approx(110.0)


def test_a_scope_with_a_denied_part_round_trips_and_admits_exceptions(tmp_path):
    from panreduce import locations
    from panreduce.scope import Scope

    (tmp_path / "store" / "uploads" / "pA").mkdir(parents=True)
    scope = Scope.anywhere_but([str(tmp_path / "store") + "/"], [str(tmp_path / "store" / "uploads" / "pA") + "/"])
    assert Scope.decode(scope.encode()) == scope
    assert scope.admits(locations.resolve("/elsewhere/x"))
    assert not scope.admits(locations.resolve(str(tmp_path / "store" / "jobs.sqlite")))
    assert not scope.admits(locations.resolve(str(tmp_path / "store" / "uploads" / "pB" / "x")))
    assert scope.admits(locations.resolve(str(tmp_path / "store" / "uploads" / "pA" / "x")))
    for bad in ('{"deny": []}', '{"allow": "*", "deny": "x"}', '{"allow": 1}', '{"allow": "*", "other": []}'):
        with pytest.raises(errors.InvalidRequest):
            Scope.decode(bad)
