"""Red team (issue 12): location spellings and upload names not in test_locations, through
a real gateway with a tokens file for propA and propB and ``--allowed-prefix
DATA/{proposal}/`` on loopback. Two got in before: a raw tab or newline inside a URI was
dropped by urlsplit (``v\\n.npy`` opened ``v.npy``: repaired, not refused), and an upload
whose name held ``%``, ``\\``, ``?``, ``#`` or a control character was accepted under a
URI that then named another file or could not be resolved at all."""

from __future__ import annotations

import pytest
from locations_support import SECRET, refused, two_proposals

from panreduce import errors, locations


@pytest.fixture
def site(tmp_path):
    with two_proposals(tmp_path) as s:
        yield s


def _spellings(d) -> list[str]:
    """Ways to name B's file (or A's in a form that must not be repaired)."""
    b = f"{d}/propB/secret.npy"
    return [
        f"file://{d}/propA/\u2024\u2024/propB/secret.npy",  # one-dot leaders, not dots
        f"file://{d}/propA/\uff0e\uff0e/propB/secret.npy",  # full-width full stops
        f"file:{b}",  # file: without slashes is a relative plain path
        f"file:/{b}",
        f"file://localhost{b}",
        f"file://LOCALHOST{b}",
        f"file://[::1]{b}",
        f"file://user@localhost{b}",
        f"file://localhost:80{b}",
        f"file://{d}/propA/%2f..%2fpropB/secret.npy",
        f"file://{d}/propA/%2F%2E%2E%2FpropB%2Fsecret.npy",
        f"file://{d}/propA/.\t./propB/secret.npy",  # urlsplit drops the tab: '..'
        f"file://{d}/propA/.\n./propB/secret.npy",
        f"file://{d}/propA/..%09/propB/secret.npy",
        f"file://{str(d).upper()}/PROPB/SECRET.NPY",
        f"{d}/propA/./../propB/secret.npy",
        f"{d}/propA/v.npy/../../propB/secret.npy",
        f"\ufeff{b}",
        f" {b}",
        "upload://propA/../propB/",
        "upload://propa/",
        "upload://propB%00/",
        "upload://./propB/",
        "upload:///propB/",
        "upload://propA/%2e%2e%2fpropB/",
        "s3://bucket/propA/../propB/k",
        "s3:///propB/",
        "//" + b.lstrip("/"),
        "~/x",
        "..",
        "/",
    ]


def test_no_spelling_reaches_b_and_none_is_internal(site):
    d, a = site.data, site.a
    for uri in _spellings(d):
        refused(lambda uri=uri: a.reduce("toy", [uri], {}))
        refused(lambda uri=uri: a.metadata(uri.replace("secret.npy", "secret.nxs")))
        refused(lambda uri=uri: a.download(uri, d / "propA" / "stolen"))
        out = uri.replace("secret.npy", "out/")
        if "\u2024" in uri or "\uff0e" in uri:  # lookalikes name a folder of A's, which is fine
            job = a.reduce("toy", [str(d / "propA" / "v.npy")], {}, out)
            assert all(o.uri.startswith(f"{d}/propA/") for o in job.outputs), out
        else:
            refused(lambda out=out: a.reduce("toy", [str(d / "propA" / "v.npy")], {}, out))
    assert sorted(p.name for p in (d / "propB").iterdir()) == ["secret.npy", "secret.nxs"]
    assert not (d / "propA" / "stolen").exists()


@pytest.mark.parametrize("raw", ["\t", "\n", "\r"])
def test_a_raw_tab_or_newline_in_a_uri_is_refused_not_dropped(site, tmp_path, raw):
    """urlsplit silently removes them; the location must be refused, not repaired."""
    d, a = site.data, site.a
    uri = f"file://{d}/propA/v{raw}.npy"
    with pytest.raises(errors.InvalidRequest, match="control character"):
        locations.resolve(uri)
    exc = refused(lambda: a.reduce("toy", [uri], {}))
    assert exc.code.name == "INVALID_ARGUMENT" and "control character" in str(exc)
    assert a.reduce("toy", [f"file://{d}/propA/v.npy"], {}).summary["total"] == 10.0


@pytest.mark.parametrize("name", ["a\\b.npy", "x%41.npy", "x%2e%2e.npy", "x?.npy", "x#.npy", "x\n.npy", "x\x7f.npy"])
def test_an_upload_name_its_uri_cannot_carry_is_refused(site, name):
    exc = refused(lambda: site.a.upload(site.data / "propA" / "v.npy", name=name))
    assert exc.code.name == "INVALID_ARGUMENT" and "header.name" in str(exc)


def test_every_accepted_upload_name_can_be_reduced_and_downloaded(site):
    d, a = site.data, site.a
    for name in ["x y.npy", "é.npy", "\u202ex.npy", "..npy", ".npy", " .npy", "x;.npy", "~", "a/b.npy", "../up.npy"]:
        up = a.upload(d / "propA" / "v.npy", name=name)
        assert up.uri.startswith("upload://propA/") and "/../" not in up.uri, name
        assert a.reduce("toy", [up.uri], {}).summary["total"] == 10.0, name
        assert a.download(up.uri, d / "propA" / "back.npy").size == up.size
        (d / "propA" / "back.npy").unlink()
        assert repr(SECRET) not in up.uri
