"""Uploads on S3 (panreduce.transfer.receive_upload_s3), against the real Ceph RGW: streamed as a
multipart upload to a temporary key, copied to the proposal's key only when whole and verified;
a broken stream leaves nothing; upload:// names cannot be bent into another proposal's keys."""

from __future__ import annotations

import hashlib
import os
import zlib

import obstore
import pytest

from panreduce import errors
from panreduce.storage import ObjectRef
from panreduce.transfer import file_chunks, receive_upload_s3, upload_key_uri
from panreduce.v1 import reduce_pb2 as pb

MiB = 1 << 20


def _keys(s3, prefix: str) -> list[str]:
    store, key = s3.store_for(prefix)
    return sorted(m["path"] for batch in obstore.list(store, prefix=key.rstrip("/")) for m in batch)


@pytest.fixture
def small_parts(s3):
    return s3.with_config(part_size=5 * MiB)  # S3's smallest part: a 12 MiB upload is 3 parts


def test_upload_streams_to_the_proposals_key_in_parts(small_parts, s3_prefix, tmp_path):
    data = os.urandom(12 * MiB + 12345)
    src = tmp_path / "scan_0001.nxs"
    src.write_bytes(data)
    uploads = s3_prefix + "uploads"
    info = receive_upload_s3(file_chunks(src, chunk=1 * MiB), small_parts, uploads, namespace="mx1234-1")
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.uri.startswith("upload://mx1234-1/") and info.uri.endswith("/scan_0001.nxs")
    key_uri = upload_key_uri(uploads, info.uri)
    # exactly one object, under the proposal's prefix; the temporary key is gone
    assert _keys(small_parts, uploads + "/") == [small_parts.store_for(key_uri)[1]]
    # a service stages it from S3 (the lock's SHA-256 metadata is not there for a trailer-only
    # upload; the staged bytes are still the sender's)
    (ref,) = small_parts.list(key_uri)
    staged = small_parts.stage(ObjectRef(uri=ref.uri, name=ref.name, size=ref.size), tmp_path / "scratch")
    assert staged.read_bytes() == data


def test_header_sha_becomes_the_objects_metadata_checked_on_staging(s3, s3_prefix, tmp_path):
    data = b"I(Q) " * 1000
    sha = hashlib.sha256(data).hexdigest()
    chunks = [
        pb.DataChunk(header=pb.ObjectHeader(name="frame.h5", size=len(data), sha256=sha)),
        pb.DataChunk(data=data, offset=0, crc32=zlib.crc32(data)),
    ]
    info = receive_upload_s3(chunks, s3, s3_prefix + "up", namespace="p1")
    store, key = s3.store_for(upload_key_uri(s3_prefix + "up", info.uri))
    assert obstore.head(store, key)["size"] == len(data)
    got = obstore.get(store, key)
    assert got.attributes.get("sha256") == sha and bytes(got.bytes()) == data


def _stream(data: bytes, *, corrupt_at: int | None = None, sha: str | None = None, part: int = MiB):
    yield pb.DataChunk(header=pb.ObjectHeader(name="x.bin", size=len(data)))
    for off in range(0, len(data), part):
        block = data[off : off + part]
        crc = zlib.crc32(block) ^ (1 if off == corrupt_at else 0)
        yield pb.DataChunk(data=block, offset=off, crc32=crc)
    yield pb.DataChunk(trailer=pb.ObjectTrailer(sha256=sha or hashlib.sha256(data).hexdigest()))


@pytest.mark.parametrize(
    ("corrupt_at", "sha", "match"),
    [(7 * MiB, None, "CRC-32 mismatch"), (None, "0" * 64, "does not match the sender's")],
    ids=["crc-in-a-later-part", "wrong-sha"],
)
def test_a_broken_upload_leaves_no_object(small_parts, s3_prefix, corrupt_at, sha, match):
    data = os.urandom(11 * MiB)
    uploads = s3_prefix + "uploads"
    with pytest.raises(errors.TransferError, match=match):
        receive_upload_s3(_stream(data, corrupt_at=corrupt_at, sha=sha), small_parts, uploads, namespace="p1")
    assert _keys(small_parts, uploads + "/") == []


def test_upload_names_cannot_reach_another_proposals_keys(s3, s3_prefix):
    uploads = s3_prefix + "uploads"
    good = "upload://mx1/" + "a" * 32 + "/data.h5"
    assert upload_key_uri(uploads, good) == f"{uploads}/mx1/{'a' * 32}/data.h5"
    for bad in (
        "upload://mx1/../mx2/" + "a" * 32 + "/data.h5",
        "upload://../" + "a" * 32 + "/data.h5",
        "upload://mx1/" + "a" * 32 + "/../../mx2/x",
        "upload://mx1/" + "a" * 32 + "/..",
        "upload://mx1/not-an-id/data.h5",
        "s3://bucket/uploads/mx2/" + "a" * 32 + "/data.h5",
    ):
        with pytest.raises(errors.InvalidRequest):
            upload_key_uri(uploads, bad)
    # a proposal name with separators holds no uploads (cleaned up, '../mx2' was mx2's area:
    # tests/security/test_redteam_namespaces.py); an upload name keeps its last component
    data = b"abc"

    def chunks():
        header = pb.ObjectHeader(name="../../mx2/evil", size=3, sha256=hashlib.sha256(data).hexdigest())
        return [pb.DataChunk(header=header), pb.DataChunk(data=data, offset=0, crc32=zlib.crc32(data))]

    with pytest.raises(errors.FailedPrecondition, match="cannot hold uploads"):
        receive_upload_s3(chunks(), s3, uploads, namespace="../mx2")
    assert not _keys(s3, uploads + "/")
    info = receive_upload_s3(chunks(), s3, uploads, namespace="mx1")
    space, _, name = info.uri.removeprefix("upload://").split("/")
    assert space == "mx1" and name == "evil"
    assert _keys(s3, uploads + "/")[0].startswith(s3.store_for(uploads + "/mx1/")[1])


# -- through the gateway (PANREDUCE_UPLOADS_URI): the upload is on S3, not on the gateway's disk
@pytest.fixture
def s3_gateway(s3_env, monkeypatch, tmp_path, s3_prefix):
    from panreduce_gateway.embedded import Platform

    for k, v in s3_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PANREDUCE_UPLOADS_URI", s3_prefix + "uploads")
    yield lambda **kw: Platform(["scan"], store_root=tmp_path / "store", **kw)


def _files_under(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_upload_through_the_gateway_lands_on_s3_and_is_reduced_from_there(s3_gateway, s3, s3_prefix, dataset, tmp_path):
    from panreduce.client import Client
    from panreduce_gateway.auth import Access, StaticTokens
    from panreduce_gateway.gateway import GatewayConfig

    src = dataset("i16-scans/794932.nxs")
    tokens = StaticTokens(
        [{"token": "a", "subject": "alice", "proposals": ["pA"]}, {"token": "b", "subject": "bob", "proposals": ["pB"]}]
    )
    config = GatewayConfig(access=Access([tokens], prefixes=[s3_prefix + "{proposal}/"]))
    with s3_gateway(config=config) as platform:
        with Client(platform.address, token="a", timeout=180) as a:
            info = a.upload(src, proposal="pA")
            assert info.uri.startswith("upload://pA/")
            key = upload_key_uri(s3_prefix + "uploads", info.uri)
            assert [r.size for r in s3.list(key)] == [src.stat().st_size]
            assert _files_under(platform.stores.uploads.root) == [], "the upload must not touch the gateway's disk"
            done = a.reduce("scan", [info.uri], {"model": "gaussian"}, f"{s3_prefix}pA/out/")
            assert 29.9 < done.summary["center"] < 30.1
            back = a.download(info.uri, tmp_path / "back.nxs")  # Download of an upload kept on S3
            assert back.size == src.stat().st_size and (tmp_path / "back.nxs").read_bytes() == src.read_bytes()
        with Client(platform.address, token="b", timeout=60) as b:
            # bob may neither reduce alice's upload by its name nor by its key, nor write into her area
            for uri in (info.uri, key):
                with pytest.raises(errors.PermissionDenied):
                    b.reduce("scan", [uri], {}, f"{s3_prefix}pB/out/")
            with pytest.raises(errors.PermissionDenied):
                b.reduce("scan", [f"{s3_prefix}pB/x.nxs"], {}, s3_prefix + "uploads/pA/planted/")
            for uri in (info.uri, key, info.uri.replace("upload://pA/", "upload://pB/../pA/")):
                with pytest.raises((errors.PermissionDenied, errors.InvalidRequest)):
                    b.download(uri, tmp_path / "stolen.nxs")
            assert not (tmp_path / "stolen.nxs").exists()
            mine = b.upload(src, proposal="pB")
            assert mine.uri.startswith("upload://pB/")
    assert upload_key_uri(s3_prefix + "uploads", mine.uri).startswith(s3_prefix + "uploads/pB/")


def test_retention_lists_and_deletes_old_uploads_on_s3_but_not_one_in_use(s3, s3_prefix, tmp_path, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from panreduce.jobs import new_job_id, now_ts
    from panreduce.sqlstore import SqliteJobStore
    from panreduce.storage import Stores
    from panreduce_gateway import retention

    uploads = s3_prefix + "uploads"
    infos = [
        receive_upload_s3(_stream(os.urandom(1000 + i)), s3, uploads, namespace=p)
        for i, p in enumerate(("pA", "pA", "pB"))
    ]
    used = upload_key_uri(uploads, infos[1].uri)
    jobs = SqliteJobStore(tmp_path / "jobs.sqlite")
    jobs.add(
        pb.Job(
            job_id=new_job_id(),
            technique="scan",
            state=pb.QUEUED,
            created=now_ts(),
            request=pb.ReduceRequest(technique="scan", inputs=[infos[1].uri]),
        )
    )
    stores = Stores(tmp_path / "store")
    stores.register("s3", s3)
    assert retention.expired_uploads(jobs, stores, days=90, s3_uploads=uploads) == []  # all fresh
    later = datetime.now(UTC) + timedelta(days=91)
    items = retention.expired_uploads(jobs, stores, days=90, now=later, s3_uploads=uploads)
    assert sorted(i.uri for i in items) == sorted([infos[0].uri, infos[2].uri])  # not the one in use
    assert {i.proposal for i in items} == {"pA", "pB"} and all(i.size >= 1000 for i in items)
    assert sorted(retention.apply_uploads(stores, items)) == sorted(i.uri for i in items)
    assert _keys(s3, uploads + "/") == [s3.store_for(used)[1]]
    jobs.close()
