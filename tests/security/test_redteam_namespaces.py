"""Red team (issue 12): proposal names that are not one clean path component. The upload
area of a proposal was its name with other characters dropped: proposals 'AB/1' and 'AB1'
shared one area (AB1's member reduced AB/1's upload: B's values summed into A's result),
and proposal '..' wrote its uploads outside the uploads area, into the store's root (and a
job of '..' had the whole store in its scope). Now the area is the proposal verbatim, or
the upload is FAILED_PRECONDITION and the job's scope has no uploads area; and such a
proposal names no location at all (proposal '.' had the whole data tree as its prefix). Real toy service
behind a real gateway with ``--allowed-prefix DATA/{proposal}/``, the identities as an OIDC proposals
claim would give them (a tokens file refuses these names at start)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from panreduce import errors, locations
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.scope import job_scope
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.auth import Access, Authenticator, Identity, StaticTokens, TokensFileError
from panreduce_gateway.gateway import GatewayConfig, GatewayService

SECRET = 73519.25
MEMBERS = {"alice": "AB1", "bob": "AB/1", "carol": "..", "dave": "Müller-2.1", "eve": "."}


class ClaimedProposals(Authenticator):
    """Identities as an OIDC provider's proposals claim gives them: ``t-<member>`` is the
    member of ``MEMBERS[member]``, whatever the name (no tokens-file validation)."""

    def identify(self, token: str) -> Identity | None:
        member = token.removeprefix("t-")
        return Identity(member, frozenset([MEMBERS[member]])) if member in MEMBERS else None


def test_a_tokens_file_refuses_these_names_at_start(tmp_path):
    tokens = tmp_path / "tokens.json"
    for name in ("AB/1", "..", "."):
        tokens.write_text(json.dumps({"tokens": [{"token": "t", "subject": "x", "proposals": [name]}]}))
        with pytest.raises(TokensFileError, match="fills one path component"):
            StaticTokens.from_file(tokens)


@pytest.fixture
def site(tmp_path):
    data = tmp_path / "data"
    for p in ("AB1", "AB/1", "Müller-2.1"):
        (data / p).mkdir(parents=True)
    np.save(data / "AB/1" / "secret.npy", np.full(3, SECRET))
    np.save(data / "AB1" / "v.npy", np.arange(5.0))
    np.save(data / "Müller-2.1" / "v.npy", np.arange(3.0))
    # a tokens file refuses such names at start (test_tokens_file.py); an OIDC provider's
    # proposals claim can still carry them, so the identities come from claims here
    access = Access([ClaimedProposals()], prefixes=[str(data) + "/{proposal}/"])
    stores = Stores(tmp_path / "store")
    toy = start_technique(Toy, stores=stores)
    gateway = GatewayService({"toy": toy.address}, stores=stores, config=GatewayConfig(access=access))
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    clients = {k: Client(gw.address, token=f"t-{k}", timeout=30) for k in MEMBERS}
    try:
        yield data, tmp_path / "store", clients
    finally:
        for c in clients.values():
            c.close()
        gw.drain_and_stop(2)
        gateway.close()
        toy.drain_and_stop(2)


def test_proposals_whose_names_are_not_one_component_hold_no_uploads(site):
    data, store, c = site
    for who, path in (("bob", data / "AB/1" / "secret.npy"), ("carol", data / "AB1" / "v.npy")):
        with pytest.raises(errors.PanReduceError) as info:
            c[who].upload(path)
        assert info.value.code.name == "FAILED_PRECONDITION" and "cannot hold uploads" in str(info.value), who
    with pytest.raises(errors.PanReduceError) as info:
        c["alice"].reduce("toy", ["upload://AB1/"], {})
    assert info.value.code.name == "NOT_FOUND"  # nothing of AB/1's in AB1's area
    assert sorted(p.name for p in store.iterdir()) in ([], ["results"], ["results", "uploads"], ["uploads"])
    # such a proposal names no location either: '.' was the whole data tree (eve read
    # AB/1's data), 'AB/1' a folder inside proposal AB's
    for who, path in (("eve", data / "AB/1" / "secret.npy"), ("eve", data / "AB1" / "v.npy"), ("bob", data / "AB/1")):
        with pytest.raises(errors.PanReduceError) as info:
            c[who].reduce("toy", [str(path)], {})
        assert info.value.code.name == "PERMISSION_DENIED" and "cannot name a location" in str(info.value), who
        assert str(SECRET) not in str(info.value)


def test_clean_names_keep_their_uploads_verbatim(site):
    data, _, c = site
    for who, path, total in (("alice", data / "AB1" / "v.npy", 10.0), ("dave", data / "Müller-2.1" / "v.npy", 3.0)):
        up = c[who].upload(path)
        assert up.uri.startswith(f"upload://{MEMBERS[who]}/")
        assert c[who].reduce("toy", [up.uri], {}).summary["total"] == total
    with pytest.raises(errors.PanReduceError):
        c["alice"].reduce("toy", ["upload://Müller-2.1/"], {})


def test_a_proposal_fills_one_component_of_a_prefix(tmp_path):
    for bad in (".", "..", "AB/1", "AB%2f1", "a\\b", "a\nb"):
        with pytest.raises(errors.PermissionDenied, match="cannot name a location"):
            locations.resolve_prefixes([str(tmp_path) + "/{proposal}/", "s3://b/{proposal}/"], bad)
    ok = locations.resolve_prefixes([str(tmp_path) + "/{proposal}/", "s3://b/{proposal}/"], "Müller 2")
    assert [p.key for p in ok] == [str(tmp_path.resolve() / "Müller 2"), "b/Müller 2"]


def test_the_namespace_rule_and_the_job_scope(tmp_path):
    for ok in ("AB1", "cm33911-1", "x.y", "Müller"):
        assert locations.upload_namespace(ok) == ok
    assert locations.upload_namespace("") == "shared"
    for bad in ("AB/1", "..", ".", "a b", "a\\b", "p:1", "a%2f"):
        with pytest.raises(errors.FailedPrecondition):
            locations.upload_namespace(bad)
    prefixes = locations.resolve_prefixes([str(tmp_path) + "/{proposal}/"], "AB1")  # (AB/1, '..': none)
    uploads = tmp_path / "store" / "uploads"
    (tmp_path / "store" / "uploads").mkdir(parents=True)

    def allowed(proposal):
        return [p.uri for p in job_scope(prefixes, uploads=uploads, proposal=proposal).prefixes]

    assert any(u.endswith("uploads/AB1/") for u in allowed("AB1"))
    for bad in ("..", "AB/1"):  # '..' was the store itself, 'AB/1' was AB1's area
        assert not any(str(tmp_path / "store") in u for u in allowed(bad)), bad
