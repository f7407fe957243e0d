"""Every location a caller names is resolved once (decoded once, normalised, links
resolved) before the proposal's prefixes are checked, and only the resolved location is
opened: escaped '..', double encoding, links under A's prefix to B's data, prefix
siblings and upload/output tricks are refused through a real gateway on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from locations_support import SECRET, refused, two_proposals
from stores_support import STORES, job_store

from panreduce import errors, locations
from panreduce.sqlstore import SqliteJobStore
from panreduce.storage import Stores


@pytest.fixture(params=STORES)
def site(request, tmp_path):
    """The site with its job table in SQLite or PostgreSQL."""
    with job_store(request.param, tmp_path, request) as store, two_proposals(tmp_path, store) as s:
        yield s


# -- the one resolution, as a function ---------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "error", "words"),
    [
        ("file:///data/propA/%2e%2e/propB/secret.nxs", errors.PermissionDenied, "'..'"),
        ("file:///data/propA/%2E%2E/propB/secret.nxs", errors.PermissionDenied, "'..'"),
        ("file:///data/propA/.%2E/propB/", errors.PermissionDenied, "'..'"),
        ("file:///data/propA/%252e%252e/propB/secret.nxs", errors.InvalidRequest, "decoding once"),
        ("/data/propA/%2e%2e/propB/secret.nxs", errors.InvalidRequest, "plain path"),
        ("/data/propA/../propB/secret.nxs", errors.PermissionDenied, "'..'"),
        ("/data/propA//x", errors.InvalidRequest, "empty path segments"),
        ("file:///data/propA/x%00.nxs", errors.InvalidRequest, r"U\+0000"),
        ("/data/propA/x\x00.nxs", errors.InvalidRequest, r"U\+0000"),
        ("file:///data/propA/x%0a.nxs", errors.InvalidRequest, r"U\+000A"),
        ("file:///data/propA/x%3F.nxs", errors.InvalidRequest, r"'\?'"),
        ("file:///data/propA/x%ff.nxs", errors.InvalidRequest, "not UTF-8"),
        ("file:///data/propA/x.nxs?y", errors.InvalidRequest, "query"),
        ("file://evil/data/propA/x.nxs", errors.InvalidRequest, "no host"),
        ("file:///data/propA/%5c..%5cpropB", errors.PermissionDenied, "backslash"),
        ("upload://propA/%2e%2e/propB/", errors.PermissionDenied, "'..'"),
        ("upload://%2e%2e/etc/", errors.PermissionDenied, "'..'"),
        ("s3://bucket/propA/%2e%2e/propB/k", errors.PermissionDenied, "'..'"),
    ],
)
def test_resolve_refuses_what_decoding_once_would_not_settle(uri, error, words):
    with pytest.raises(error, match=words):
        locations.resolve(uri)


def test_resolve_decodes_once_and_is_its_own_fixpoint(tmp_path):
    (tmp_path / "a b").mkdir()
    loc = locations.resolve(f"file://{tmp_path}/a%20b/./x.nxs")
    assert loc.local == tmp_path.resolve() / "a b" / "x.nxs"
    assert locations.resolve(loc.uri) == loc  # the form passed on resolves to itself
    up = locations.resolve("upload://propA/1234/run%2001.nxs", roots={"upload": tmp_path})
    assert up.local == tmp_path.resolve() / "propA" / "1234" / "run 01.nxs" and up.namespace == "propA"
    assert locations.resolve(up.uri, roots={"upload": tmp_path}) == up


def test_prefixes_compare_whole_components(tmp_path):
    a = locations.resolve_prefixes([str(tmp_path) + "/{proposal}/"], "propA")
    assert locations.resolve(f"{tmp_path}/propA/x").within(a[0])
    assert locations.resolve(f"{tmp_path}/propA").within(a[0])
    assert not locations.resolve(f"{tmp_path}/propAB/x").within(a[0])
    s3 = locations.resolve_prefixes(["s3://beam/{proposal}/"], "propA")[0]
    assert locations.resolve("s3://beam/propA/k").within(s3)
    assert not locations.resolve("s3://beam/propAB/k").within(s3)
    assert not locations.resolve(f"{tmp_path}/propA/x").within(s3)
    # no proposal (access off): the part of the template above {proposal}
    assert locations.resolve_prefixes([str(tmp_path) + "/{proposal}/"], "")[0].local == tmp_path.resolve()


def test_links_are_resolved_and_loops_refused(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "b" / "f")
    assert locations.resolve(str(tmp_path / "link")).local == (tmp_path / "b" / "f").resolve()
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    with pytest.raises(errors.InvalidRequest, match="loop"):
        locations.resolve(str(tmp_path / "loop1"))
    dangling = tmp_path / "out"
    dangling.symlink_to(tmp_path / "b" / "new-folder")  # an output through a dangling link
    assert locations.resolve(str(dangling) + "/").local == (tmp_path / "b" / "new-folder").resolve()


def test_the_store_opens_only_resolved_locations(tmp_path):
    stores = Stores(tmp_path / "store")
    with pytest.raises(errors.PermissionDenied):
        stores.uploads.path_of("upload://propA/%2e%2e/propB/x")
    (tmp_path / "store" / "uploads" / "propA").mkdir(parents=True)
    (tmp_path / "store" / "uploads" / "propA" / "evil").symlink_to(tmp_path)
    with pytest.raises(errors.PermissionDenied, match="leaves the upload area"):
        stores.uploads.path_of("upload://propA/evil/x")


# -- through the gateway -------------------------------------------------------------------
def test_escaped_dot_dot_never_reaches_b(site):
    data, a = site.data, site.a
    secret = f"file://{data}/propA/%2e%2e/propB/secret.npy"
    for uri in (
        secret,
        secret.replace("%2e%2e", "%2E%2E"),
        secret.replace("%2e%2e", "%252e%252e"),
        f"file://{data}/propA/..%2fpropB/secret.npy",
        f"{data}/propA/../propB/secret.npy",
        f"file://{data}//propB/secret.npy",
        f"file://{data}/propA/%00/../propB/secret.npy",
    ):
        refused(lambda uri=uri: a.reduce("toy", [uri], {}))
        refused(lambda uri=uri: a.metadata(uri.replace("secret.npy", "secret.nxs")))
        refused(lambda uri=uri: a.download(uri, site.data / "propA" / "stolen"))
    refused(lambda: a.reduce("toy", [f"file://{data}/propA/%2e%2e/propB/"], {}))  # listing B's folder
    assert not (site.data / "propA" / "stolen").exists()


def test_outputs_cannot_be_written_into_b(site):
    data, a = site.data, site.a
    for out in (
        f"file://{data}/propA/%2e%2e/propB/x/",
        f"file://{data}/propA/%252e%252e/propB/x/",
        f"{data}/propAB/x/",
    ):
        refused(lambda out=out: a.reduce("toy", [str(data / "propA" / "v.npy")], {}, out))
    (data / "propA" / "to-b").symlink_to(data / "propB")
    refused(lambda: a.reduce("toy", [str(data / "propA" / "v.npy")], {}, str(data / "propA" / "to-b" / "x")))
    (data / "propA" / "dangling").symlink_to(data / "propB" / "planted")
    refused(lambda: a.reduce("toy", [str(data / "propA" / "v.npy")], {}, str(data / "propA" / "dangling")))
    assert sorted(p.name for p in (data / "propB").iterdir()) == ["secret.npy", "secret.nxs"]
    # the honest output still works, and lands where it was named
    done = a.reduce("toy", [f"file://{data}/propA/v.npy"], {}, f"file://{data}/propA/out%201/")
    assert done.summary["total"] == 10.0 and (data / "propA" / "out 1").is_dir()


def test_links_under_a_to_b_are_not_followed(site):
    data, a = site.data, site.a
    (data / "propA" / "to-secret.npy").symlink_to(data / "propB" / "secret.npy")
    (data / "propA" / "to-b").symlink_to(data / "propB", target_is_directory=True)
    batch = data / "propA" / "batch"
    batch.mkdir()
    np.save(batch / "own.npy", np.ones(2))
    (batch / "theirs.npy").symlink_to(data / "propB" / "secret.npy")
    (data / "propA" / "loop1").symlink_to(data / "propA" / "loop2")
    (data / "propA" / "loop2").symlink_to(data / "propA" / "loop1")
    refused(lambda: a.reduce("toy", [str(data / "propA" / "to-secret.npy")], {}))
    refused(lambda: a.reduce("toy", [f"file://{data}/propA/to-b/secret.npy"], {}))
    refused(lambda: a.reduce("toy", [str(data / "propA" / "to-b") + "/"], {}))
    refused(lambda: a.reduce("toy", [str(batch) + "/"], {}))  # one file of the folder leads to B
    refused(lambda: a.metadata(str(data / "propA" / "to-b" / "secret.nxs")))
    refused(lambda: a.download(str(data / "propA" / "to-secret.npy"), site.store / "stolen"))
    refused(lambda: a.reduce("toy", [str(data / "propA" / "loop1")], {}))
    # a link that stays inside A is fine
    (batch / "theirs.npy").unlink()
    (batch / "again.npy").symlink_to(data / "propA" / "v.npy")
    assert a.reduce("toy", [str(batch) + "/"], {}).summary["total"] == 12.0


def test_prefix_siblings_are_not_inside(site):
    data, a = site.data, site.a
    refused(lambda: a.reduce("toy", [str(data / "propAB" / "v.npy")], {}))
    refused(lambda: a.metadata(f"file://{data}/propAB/v.npy"))
    assert a.reduce("toy", [str(data / "propA" / "v.npy")], {}).summary["total"] == 10.0


def test_uploads_of_b_stay_b(site):
    a, b, data = site.a, site.b, site.data
    theirs = b.upload(data / "propB" / "secret.npy")
    assert theirs.uri.startswith("upload://propB/")
    ns_id = theirs.uri.split("/")[3]
    for uri in (
        "upload://propA/%2e%2e/propB/",
        f"upload://propA/%2e%2e/propB/{ns_id}/secret.npy",
        "upload://propA/%252e%252e/propB/",
        "upload://propB/",
        theirs.uri,
        theirs.uri.replace("upload://propB/", "upload://%70ropB/"),
    ):
        refused(lambda uri=uri: a.reduce("toy", [uri], {}))
        refused(lambda uri=uri: a.download(uri, data / "propA" / "stolen.npy"))
        refused(lambda uri=uri: a.metadata(uri))
    assert not (data / "propA" / "stolen.npy").exists()
    mine = a.upload(data / "propA" / "v.npy")
    assert a.reduce("toy", [mine.uri], {}).summary["total"] == 10.0
    assert a.download(mine.uri, data / "propA" / "back.npy").size == mine.size


@pytest.fixture(params=["sqlite", "postgresql"])
def site_on_store(request, tmp_path):
    """The site with its job table in SQLite or PostgreSQL (which outputs are whose)."""
    if request.param == "sqlite":
        store = SqliteJobStore(tmp_path / "jobs.sqlite")
    else:
        from panreduce_gateway.pgstore import PostgresJobStore

        store = PostgresJobStore(request.getfixturevalue("pg_database"))
    with two_proposals(tmp_path, store) as s:
        yield s


def test_download_of_b_results_is_refused(site_on_store):
    site = site_on_store
    a, b, data = site.a, site.b, site.data
    job = b.reduce("toy", [str(data / "propB" / "secret.npy")], {}, str(data / "propB" / "out"))
    assert job.summary["total"] == pytest.approx(3 * SECRET)
    target = job.outputs[0].uri
    for uri in (
        target,
        "file://" + target,
        target.replace("/propB/", "/propA/../propB/"),
        "file://" + target.replace("/propB/", "/propA/%2e%2e/propB/"),
    ):
        refused(lambda uri=uri: a.download(uri, data / "propA" / "stolen.nxs"))
    (data / "propA" / "to-out").symlink_to(Path(target).parent)
    refused(lambda: a.download(str(data / "propA" / "to-out" / Path(target).name), data / "propA" / "stolen.nxs"))
    assert not (data / "propA" / "stolen.nxs").exists()
    assert b.download(target, data / "propB" / "mine.nxs").size == job.outputs[0].size
    os.remove(data / "propB" / "mine.nxs")


def test_any_location_resolves_to_a_fixpoint_or_is_a_caller_error(tmp_path):
    """Property: whatever text a caller sends, resolution either refuses it as the
    caller's mistake (never another exception, so never INTERNAL) or yields a location
    whose passed-on form resolves to itself (no second decoding can change it), and an
    upload never lands outside its namespace's area."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    uploads = tmp_path / "uploads"
    (uploads / "propA").mkdir(parents=True)
    pieces = st.sampled_from(
        [
            "propA",
            "propB",
            "..",
            ".",
            "",
            "%2e",
            "%2E%2e",
            "%252e",
            "%2f",
            "%00",
            "%0a",
            "%ff",
            "%",
            "a b",
            "%20",
            "?",
            "#",
            "\\",
            "\x00",
            "x.nxs",
            "%3f",
            "~",
            "é",
            "%c3%a9",
        ]
    )
    schemes = st.sampled_from(["", "file://", "file:///", "upload://", "s3://", "FILE://", "/"])

    @settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(schemes, st.lists(pieces, max_size=6), st.booleans())
    def check(scheme, parts, slash):
        uri = scheme + "/".join(parts) + ("/" if slash else "")
        try:
            loc = locations.resolve(uri, roots={"upload": uploads}, cwd=tmp_path)
        except errors.CallerError:
            return
        again = locations.resolve(loc.uri, roots={"upload": uploads}, cwd=tmp_path)
        assert again == loc, uri
        if loc.scheme == "upload":
            area = (uploads / loc.namespace).resolve()
            assert loc.local == area or area in loc.local.parents
            assert loc.namespace not in ("", ".", "..")

    check()
