"""A request whose bytes do not parse (a string field that is not UTF-8) is the caller's
mistake: INVALID_ARGUMENT from the gateway and from a service, on unary, server-streaming
and client-streaming methods, and the server stays healthy."""

from __future__ import annotations

import grpc
import pytest
from limits_support import platform, upload_chunks

BAD_STRING = b"\x0a\x03\xff\xfe\x41"  # field 1 (a string), 3 bytes, not UTF-8


def _raw(channel: grpc.Channel, method: str, *, stream_in: bool = False, stream_out: bool = False):
    path = f"/panreduce.v1.Reducer/{method}"
    if stream_in:
        return channel.stream_unary(path, request_serializer=None, response_deserializer=None)
    if stream_out:
        return channel.unary_stream(path, request_serializer=None, response_deserializer=None)
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def _code(call, request) -> grpc.StatusCode:
    try:
        result = call(request, timeout=10)
        if not isinstance(result, bytes):
            for _ in result:
                pass
    except grpc.RpcError as exc:
        assert "deserializ" not in (exc.details() or "").lower()
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("where", ["gateway", "service"])
def test_undecodable_requests_are_invalid_argument(tmp_path, where):
    with platform(tmp_path) as p:
        address = p.gateway if where == "gateway" else p.service
        with grpc.insecure_channel(address) as channel:
            for method in ("GetJob", "Cancel", "GetMetadata", "Describe"):
                assert _code(_raw(channel, method), BAD_STRING) == grpc.StatusCode.INVALID_ARGUMENT, method
            for method in ("Watch", "Download", "Reduce"):
                call = _raw(channel, method, stream_out=True)
                assert _code(call, BAD_STRING) == grpc.StatusCode.INVALID_ARGUMENT, method
            # Upload: a good header, then an element that does not parse
            good = upload_chunks("fine.bin")[0].SerializeToString()
            bad_header = b"\x0a\x05" + BAD_STRING  # DataChunk.header with a non-UTF-8 name
            upload = _raw(channel, "Upload", stream_in=True)
            assert _code(upload, iter([bad_header])) == grpc.StatusCode.INVALID_ARGUMENT
            assert _code(upload, iter([good, b"\xff\xff\xff"])) == grpc.StatusCode.INVALID_ARGUMENT
        assert p.healthy(address)
        # an honest call still works after them
        code = _code(_raw(grpc.insecure_channel(address), "GetJob"), b"\x0a\x03abc")
        assert code == grpc.StatusCode.NOT_FOUND
