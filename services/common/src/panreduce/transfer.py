"""Inline data: chunked, checksummed upload and download streams.

Data travel in ~1 MiB messages, each with its byte offset and CRC-32; the whole
object's SHA-256 is verified at the end. There is no size ceiling: bytes go straight
to (or from) disk, never held whole in memory. An upload becomes visible under its
final name only once it is complete and verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panreduce import errors, limits, locations
from panreduce.storage import CHUNK, Stores
from panreduce.v1 import reduce_pb2 as pb

if TYPE_CHECKING:
    from panreduce.s3 import S3Store


def _upload_header(chunks: Iterable[pb.DataChunk]) -> tuple[Iterator[pb.DataChunk], Any]:
    """The stream's first message, its header (checked against the limits), and the rest."""
    it = iter(chunks)
    first = next(it, None)
    if first is None or not first.HasField("header"):
        raise errors.InvalidRequest("an upload must start with a header message")
    limits.check_upload_header(first.header)
    return it, first.header


def receive_upload(chunks: Iterable[pb.DataChunk], stores: Stores, namespace: str = "shared") -> pb.ObjectInfo:
    """Write an Upload stream to the uploads area (under ``namespace``, the proposal);
    returns its upload:// URI."""
    it, header = _upload_header(chunks)
    path, uri = stores.upload_target(header.name, namespace)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            trailer_sha = ""
            for chunk in it:
                if chunk.HasField("trailer"):
                    trailer_sha = chunk.trailer.sha256
                    continue
                if trailer_sha:
                    raise errors.InvalidRequest("nothing may follow the trailer")
                if not chunk.HasField("data"):
                    raise errors.InvalidRequest("only data messages may follow the header")
                if chunk.offset != size:
                    raise errors.TransferError(
                        f"chunk at offset {chunk.offset}, expected {size}: data lost or reordered"
                    )
                if zlib.crc32(chunk.data) != chunk.crc32:
                    raise errors.TransferError(f"CRC-32 mismatch in the chunk at offset {chunk.offset}")
                out.write(chunk.data)
                digest.update(chunk.data)
                size += len(chunk.data)
            out.flush()
            os.fsync(out.fileno())
        if header.size and size != header.size:
            raise errors.TransferError(f"received {size} bytes, the header announced {header.size}")
        sha = digest.hexdigest()
        expected = (header.sha256 or trailer_sha).lower()
        if not expected:
            raise errors.TransferError("the upload carried no SHA-256 (neither in its header nor a trailer)")
        if sha != expected:
            raise errors.TransferError(f"SHA-256 {sha} does not match the sender's {expected}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in (path.parent, path.parent.parent):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return pb.ObjectInfo(uri=uri, size=size, sha256=sha)


def send_download(stores: Stores, uri: str, offset: int = 0) -> Iterator[pb.DataChunk]:
    """A Download stream: header (size, SHA-256), then the data from ``offset``."""
    store = stores.for_uri(uri)
    size = store.size(uri)
    if offset > size:
        raise errors.InvalidRequest(f"offset {offset} is past the end of {uri} ({size} bytes)")
    yield pb.DataChunk(header=pb.ObjectHeader(name=uri, size=size))
    digest = hashlib.sha256()
    pos = offset
    for block in store.open_read(uri, offset):
        digest.update(block)
        yield pb.DataChunk(data=block, offset=pos, crc32=zlib.crc32(block))
        pos += len(block)
    # the SHA-256 covers the bytes sent (from ``offset``)
    yield pb.DataChunk(trailer=pb.ObjectTrailer(sha256=digest.hexdigest()))


def file_chunks(path: Path, name: str | None = None, chunk: int = CHUNK) -> Iterator[pb.DataChunk]:
    """An Upload stream for a local file (client side): header, data, and a trailer with
    the SHA-256 computed while sending (one read of the file)."""
    size = path.stat().st_size
    yield pb.DataChunk(header=pb.ObjectHeader(name=name or path.name, size=size))
    digest = hashlib.sha256()
    pos = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
            yield pb.DataChunk(data=block, offset=pos, crc32=zlib.crc32(block))
            pos += len(block)
    yield pb.DataChunk(trailer=pb.ObjectTrailer(sha256=digest.hexdigest()))


def write_download(chunks: Iterable[pb.DataChunk], dest: Path) -> pb.ObjectInfo:
    """Save a Download stream to ``dest`` (atomically), verifying CRCs and SHA-256."""
    it = iter(chunks)
    first = next(it, None)
    if first is None or not first.HasField("header"):
        raise errors.TransferError("download stream did not start with a header")
    header = first.header
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    digest = hashlib.sha256()
    size = 0
    expected = header.sha256
    try:
        with open(tmp, "wb") as out:
            for chunk in it:
                if chunk.HasField("trailer"):
                    expected = chunk.trailer.sha256
                    continue
                data = chunk.data  # each access copies the bytes out of the message: once
                if chunk.offset != size or zlib.crc32(data) != chunk.crc32:
                    raise errors.TransferError(f"corrupt or out-of-order chunk at offset {chunk.offset}")
                out.write(data)
                digest.update(data)
                size += len(data)
        if size != header.size or not expected or digest.hexdigest() != expected:
            raise errors.TransferError(f"download of {header.name} incomplete or corrupt")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return pb.ObjectInfo(uri=str(dest), size=size, sha256=expected)


# -- uploads on S3 (an S3-only deployment: no shared file system) ------------------------------
_UPLOAD_URI = re.compile(r"upload://([A-Za-z0-9._-]+)/([0-9a-f]{32})/([^/]+)")


def upload_key_uri(uploads_uri: str, upload_uri: str) -> str:
    """The s3:// object behind ``upload://SPACE/ID/NAME`` when uploads live under the S3 prefix
    ``uploads_uri``: ``<uploads_uri>/SPACE/ID/NAME``. Anything else than an upload URI as
    receive_upload_s3 makes them (one proposal, one 32-hex id, one plain name) is refused, so a
    crafted name cannot reach another proposal's keys."""
    m = _UPLOAD_URI.fullmatch(upload_uri)
    if m is None or m.group(1) in (".", "..") or m.group(3) in (".", ".."):
        raise errors.InvalidRequest(f"{upload_uri!r} is not an upload://PROPOSAL/ID/NAME location")
    return f"{uploads_uri.rstrip('/')}/{m.group(1)}/{m.group(2)}/{m.group(3)}"


@dataclass
class _Received:
    """What an upload stream delivered so far: bytes, and the trailer's SHA-256 once sent."""

    size: int = 0
    trailer: str = ""


def receive_upload_s3(
    chunks: Iterable[pb.DataChunk], s3: S3Store, uploads_uri: str, namespace: str = "shared"
) -> pb.ObjectInfo:
    """An Upload stream written to S3 under ``uploads_uri``/NAMESPACE/ (the proposal), never to
    the gateway's disk: streamed as a multipart upload of the chunks as they come, to a
    temporary key (``<uploads_uri>/.partial/ID``); only once the size and SHA-256 check out is
    it copied to its final key (a server-side copy: whole or not at all) and the temporary one
    deleted. A failed stream leaves no object behind. Returns the upload:// URI, as on disk."""
    import obstore

    from panreduce.s3 import SHA256_KEY, parse_uri

    it, header = _upload_header(chunks)
    safe = Path(header.name).name or "data"
    if safe in (".", ".."):
        safe = "data"
    space = locations.upload_namespace(namespace)
    upload_id = uuid.uuid4().hex
    uri = f"upload://{space}/{upload_id}/{safe}"
    final_bucket, final_key = parse_uri(upload_key_uri(uploads_uri, uri))
    bucket, prefix = parse_uri(uploads_uri.rstrip("/") + "/")
    temp_key = f"{prefix}.partial/{upload_id}"
    store = s3.store_for(f"s3://{bucket}/{temp_key}")[0]
    digest = hashlib.sha256()
    state = _Received()

    def data() -> Iterator[bytes]:
        for chunk in it:
            if chunk.HasField("trailer"):
                state.trailer = chunk.trailer.sha256
                continue
            if state.trailer:
                raise errors.InvalidRequest("nothing may follow the trailer")
            if not chunk.HasField("data"):
                raise errors.InvalidRequest("only data messages may follow the header")
            if chunk.offset != state.size:
                raise errors.TransferError(
                    f"chunk at offset {chunk.offset}, expected {state.size}: data lost or reordered"
                )
            if zlib.crc32(chunk.data) != chunk.crc32:
                raise errors.TransferError(f"CRC-32 mismatch in the chunk at offset {chunk.offset}")
            digest.update(chunk.data)
            state.size += len(chunk.data)
            yield chunk.data

    # the sender's SHA-256, when it gave one up front, is recorded as the object's metadata
    # (checked again by every service that stages it); a trailer-only upload has none
    announced = header.sha256.lower()
    attributes = {SHA256_KEY: announced} if announced else None
    try:
        obstore.put(
            store,
            temp_key,
            data(),
            attributes=attributes,
            use_multipart=True,
            chunk_size=s3.config.part_size,
            max_concurrency=s3.config.concurrency,
        )
        size = state.size
        if header.size and size != header.size:
            raise errors.TransferError(f"received {size} bytes, the header announced {header.size}")
        sha = digest.hexdigest()
        expected = (announced or state.trailer).lower()
        if not expected:
            raise errors.TransferError("the upload carried no SHA-256 (neither in its header nor a trailer)")
        if sha != expected:
            raise errors.TransferError(f"SHA-256 {sha} does not match the sender's {expected}")
        final_store = s3.store_for(f"s3://{final_bucket}/{final_key}")[0]
        obstore.copy(final_store, temp_key, final_key)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            obstore.delete(store, temp_key)
        cause = exc
        while cause.__cause__ is not None and not isinstance(cause, errors.PanReduceError):
            cause = cause.__cause__
        if isinstance(cause, errors.PanReduceError) and cause is not exc:
            raise cause from None  # our own check, raised inside the stream obstore was reading
        raise
    with contextlib.suppress(Exception):
        obstore.delete(store, temp_key)
    return pb.ObjectInfo(uri=uri, size=size, sha256=sha)
