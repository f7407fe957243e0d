"""Property-style fuzzing of request fields: mutated requests (random and huge strings,
unicode, NUL, huge numbers, NaN, wrong parameter types, over-long lists) to every RPC of
a real gateway and a real scan service on loopback. A caller's mistake is never
INTERNAL or UNKNOWN, and the servers stay healthy. Bounded: a few hundred requests."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits_support import platform, status_of, upload_chunks
from stores_support import STORES, job_store

from panreduce.v1 import reduce_pb2 as pb

SERVER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)

_alphabet = st.characters(codec="utf-8", exclude_categories=("Cs",))
nasty = st.sampled_from(
    [
        "",
        "\x00",
        "..",
        "../../etc/passwd",
        "%2e%2e/",
        "file://[::1",
        "s3://",
        "upload://",
        "upload://x/../../y",
        "/",
        "~",
        "*",
        "\\",
        "\u202e",
        "\ufeff",
        "😀" * 50,
        "a" * 5000,
        "0x10",
        "-1",
        "NaN",
        "file:///dev/zero",
        "file:///proc/self/environ",
    ]
)
text = st.one_of(nasty, st.text(_alphabet, max_size=40), st.text(_alphabet, min_size=300, max_size=600))
json_value = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**60), 2**60), text
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)
params = st.dictionaries(
    st.one_of(
        st.sampled_from(["model", "signal", "axis", "min_points", "edge_margin_fwhm", "plots", "series_axis"]), text
    ),
    json_value,
    max_size=4,
)
uint32 = st.one_of(st.sampled_from([0, 1, 2, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
uint64 = st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))


@pytest.fixture(scope="module", params=STORES)
def plat(request, tmp_path_factory):
    """The platform with the gateway's job table in SQLite or PostgreSQL."""
    root = tmp_path_factory.mktemp("fuzz")
    with job_store(request.param, root, request) as store, platform(root, job_store=store) as p:
        yield p


def _check(code: grpc.StatusCode, details: str, what: str) -> None:
    assert code not in SERVER_FAULTS, f"{what}: {code.name} {details[:300]}"


@st.composite
def reduce_requests(draw, scan: str):
    inputs = draw(
        st.one_of(
            st.lists(st.one_of(text, st.just(scan), st.just("file://" + scan)), max_size=4), st.just([scan] * 10_001)
        )
    )
    req = pb.ReduceRequest(
        technique=draw(st.one_of(st.just("scan"), text)),
        inputs=inputs,
        output=draw(st.one_of(st.just(""), text, st.just(scan), st.just(scan + "/x"))),
        idempotency_key=draw(st.one_of(st.just(""), text)),
        split=draw(uint32),
        merge=draw(st.booleans()),
        validate_only=draw(st.booleans()),
    )
    try:
        req.parameters.update(draw(params))
    except (ValueError, TypeError):
        pass
    req.labels.update(draw(st.dictionaries(text, text, max_size=3)))
    if draw(st.booleans()):
        req.shard.index, req.shard.count = draw(uint32), draw(uint32)
    return req


@pytest.mark.parametrize("where", ["gateway", "service"])
def test_fuzzed_reduce_and_submit(plat, where):
    stub = plat.stub(getattr(plat, where))

    @SETTINGS
    @given(req=reduce_requests(str(plat.scan)), follow=st.booleans())
    def one(req, follow):
        if follow and not req.validate_only:
            code, details, _ = status_of(stub.Reduce, req, timeout=30)
        else:
            code, details, _ = status_of(stub.Submit, req, timeout=30)
        _check(code, details, f"{'Reduce' if follow else 'Submit'} {str(req)[:300]}")

    one()
    assert plat.healthy(getattr(plat, where))


@pytest.mark.parametrize("where", ["gateway", "service"])
def test_fuzzed_job_calls_listing_and_transfers(plat, where):
    stub = plat.stub(getattr(plat, where))

    @SETTINGS
    @given(
        job_id=text,
        seq=uint64,
        token=text,
        size=uint32,
        state=st.integers(0, 2**31 - 1),
        name=text,
        uri=st.one_of(text, st.just(str(plat.scan))),
        offset=uint64,
        labels=st.dictionaries(text, text, max_size=3),
    )
    def one(job_id, seq, token, size, state, name, uri, offset, labels):
        calls = [
            ("GetJob", stub.GetJob, pb.GetJobRequest(job_id=job_id)),
            ("Cancel", stub.Cancel, pb.CancelRequest(job_id=job_id)),
            ("Watch", stub.Watch, pb.WatchRequest(job_id=job_id, after_seq=seq)),
            (
                "ListJobs",
                stub.ListJobs,
                pb.ListJobsRequest(
                    page_token=token,
                    page_size=size,
                    state=state,
                    labels=labels,
                    owner=name,
                    sample=name,
                    technique=name,
                ),
            ),
            ("Download", stub.Download, pb.DownloadRequest(uri=uri, offset=offset)),
            ("GetMetadata", stub.GetMetadata, pb.MetadataRequest(uri=uri)),
            ("Describe", stub.Describe, pb.DescribeRequest(technique=name)),
            ("Upload", stub.Upload, iter(upload_chunks(name))),
        ]
        for what, call, request in calls:
            code, details, _ = status_of(call, request, timeout=10)
            _check(code, details, f"{what} {str(request)[:300]}")

    one()
    assert plat.healthy(getattr(plat, where))


# -- two proposals: fuzzed locations never reach the other proposal ----------------------
MARKER = "SECRET-B-7f3a"


@pytest.fixture(scope="module", params=STORES)
def pair(request, tmp_path_factory):
    """alice (pA) and bob (pB) behind a gateway with ``--allowed-prefix DATA/{proposal}/``;
    B's scan carries :data:`MARKER`; A's folder has links into B's."""
    import h5py
    from limits_support import write_scan

    root = tmp_path_factory.mktemp("fuzz-pair")
    data = root / "proposals"
    for p in ("pA", "pB"):
        (data / p).mkdir(parents=True)
        write_scan(data / p / "scan.nxs")
    with h5py.File(data / "pB" / "scan.nxs", "a") as f:
        del f["entry1/scan_command"]
        f["entry1/scan_command"] = f"scan eta -1 1 0.0667 pil 1 {MARKER}"
    (data / "pA" / "to-b.nxs").symlink_to(data / "pB" / "scan.nxs")
    (data / "pA" / "bdir").symlink_to(data / "pB", target_is_directory=True)
    tokens = [
        {"token": "token-alice", "subject": "alice", "proposals": ["pA"]},
        {"token": "token-bob", "subject": "bob", "proposals": ["pB"]},
    ]
    with (
        job_store(request.param, root, request) as store,
        platform(root, tokens=tokens, prefixes=[str(data) + "/{proposal}/"], job_store=store) as p,
    ):
        yield p, data


def _locations(data):
    heads = st.sampled_from(
        [
            f"{data}/pA/",
            f"file://{data}/pA/",
            f"{data}/",
            f"file://{data}/",
            "upload://pB/",
            "upload://pA/",
            f"{data}/pB/",
            "",
            "/",
        ]
    )
    tails = st.sampled_from(
        [
            "scan.nxs",
            "../pB/scan.nxs",
            "%2e%2e/pB/scan.nxs",
            "%2E%2E/pB/",
            "%252e%252e/pB/",
            "to-b.nxs",
            "bdir/",
            "bdir/scan.nxs",
            "",
            ".",
            "./scan.nxs",
            "x%00",
            "pB/scan.nxs",
            "pA/../pB/scan.nxs",
            "%70B/scan.nxs",
            "scan.nxs/",
        ]
    )
    return st.one_of(st.builds(lambda h, t: h + t, heads, tails), text)


def test_fuzzed_locations_never_read_or_write_another_proposal(pair):
    """Property: whatever locations alice names (inputs, output, Download, GetMetadata),
    no call is INTERNAL, no answer or downloaded byte holds bob's data, every status
    detail is within the clip limit, and nothing is written into bob's folder."""
    from panreduce import rpc

    plat, data = pair
    stub = plat.stub()
    md = [("authorization", "Bearer token-alice")]
    before = sorted(p.name for p in (data / "pB").rglob("*"))
    locs = _locations(data)

    def check(code, details, what, answer=""):
        _check(code, details, what)
        assert len(details.encode()) <= rpc.MAX_ERROR_MESSAGE_BYTES, (what, len(details.encode()))
        assert MARKER not in details and MARKER not in answer, what

    @SETTINGS
    @given(
        inputs=st.lists(locs, min_size=1, max_size=3),
        output=st.one_of(st.just(""), locs),
        uri=locs,
        follow=st.booleans(),
    )
    def one(inputs, output, uri, follow):
        req = pb.ReduceRequest(technique="scan", inputs=inputs, output=output)
        what = f"{'Reduce' if follow else 'Submit'} {inputs} -> {output!r}"
        try:
            if follow:
                events = list(stub.Reduce(req, metadata=md, timeout=60))
                answer = str(events[-1]) if events else ""
            else:
                answer = str(stub.Submit(req, metadata=md, timeout=30))
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details, answer = exc.code(), exc.details() or "", ""
        check(code, details, what, answer)
        if code == grpc.StatusCode.OK:
            assert f"{data}/pB" not in answer, what
        try:
            answer = str(stub.GetMetadata(pb.MetadataRequest(uri=uri), metadata=md, timeout=30))
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details, answer = exc.code(), exc.details() or "", ""
        check(code, details, f"GetMetadata {uri!r}", answer)
        try:
            got = b"".join(c.data for c in stub.Download(pb.DownloadRequest(uri=uri), metadata=md, timeout=30))
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as exc:
            code, details, got = exc.code(), exc.details() or "", b""
        check(code, details, f"Download {uri!r}")
        assert MARKER.encode() not in got

    one()
    assert sorted(p.name for p in (data / "pB").rglob("*")) == before  # nothing written into B's folder
    assert plat.healthy()
