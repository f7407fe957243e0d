"""S3Store against a real S3 server (Ceph RADOS Gateway): listing, staging with ranged
parallel reads and checksum verification, atomic never-overwriting publishes, retries
of transient failures (and none of 4xx answers), errors and configuration."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import obstore
import pytest
from s3_faults import Fault

from panreduce import errors
from panreduce.s3 import SHA256_KEY, S3Config, S3Store, parse_uri
from panreduce.storage import ObjectRef, Stores, stage_inputs

pytestmark = pytest.mark.s3

MiB = 1 << 20


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def keys_under(s3: S3Store, prefix: str) -> list[str]:
    store, key = s3.store_for(prefix)
    return sorted(m["path"][len(key) :] for batch in obstore.list(store, prefix=key.rstrip("/")) for m in batch)


def via(proxy, s3: S3Store, **changes) -> S3Store:
    return s3.with_config(endpoint=proxy.endpoint, **changes)


# -- round trip -----------------------------------------------------------------------------
def test_publish_list_stage_round_trip_with_checksums(s3, s3_prefix, s3_env, tmp_path):
    rng = np.random.default_rng(7)
    files = {"a.dat": rng.bytes(3 * MiB + 17), "sub/b.dat": b"bb", "sub/deeper/c.dat": rng.bytes(1000)}
    srcs = [(write(tmp_path / "src" / n, d), n) for n, d in files.items()]
    uris = s3.publish(srcs, s3_prefix + "run1")
    assert uris == [f"{s3_prefix}run1/{n}" for n in files]

    # every object carries its SHA-256 in its user metadata (x-amz-meta-sha256)
    for uri, data in zip(uris, files.values(), strict=True):
        store, key = s3.store_for(uri)
        assert obstore.get(store, key).attributes[SHA256_KEY] == sha(data)

    refs = s3.list(s3_prefix + "run1/")
    assert [(r.name, r.size) for r in refs] == sorted((n, len(d)) for n, d in files.items())
    one = s3.list(s3_prefix + "run1/sub/b.dat")
    assert one == [ObjectRef(s3_prefix + "run1/sub/b.dat", "b.dat", 2)]

    for ref in refs:
        local = s3.stage(ref, tmp_path / "scratch")
        assert local == tmp_path / "scratch" / ref.name
        assert local.read_bytes() == files[ref.name]
        assert s3.known_sha256(local) == sha(files[ref.name])
        assert s3.known_sha256(local) is None  # handed over once

    # the kit's staging through Stores.from_env: a prefix keeps its layout, checksums recorded
    stores = Stores.from_env(tmp_path / "store", environ=s3_env)
    assert isinstance(stores.for_uri(s3_prefix), S3Store)
    inputs = stage_inputs(stores, [s3_prefix + "run1/", s3_prefix + "run1/a.dat"], tmp_path / "job")
    prefix_input, single = inputs.items
    assert prefix_input.is_prefix and not single.is_prefix
    assert (prefix_input.root / "sub" / "deeper" / "c.dat").read_bytes() == files["sub/deeper/c.dat"]
    assert {f.name: f.sha256 for f in prefix_input.files} == {n: sha(d) for n, d in files.items()}
    assert single.files[0].sha256 == sha(files["a.dat"]) and single.root.read_bytes() == files["a.dat"]

    # open_read from an offset, and size
    assert b"".join(s3.open_read(uris[0], 5)) == files["a.dat"][5:]
    assert list(s3.open_read(uris[0], len(files["a.dat"]))) == []
    assert s3.size(uris[1]) == 2

    # retention deletes single objects; deleting one already gone is fine
    s3.delete(uris[1])
    s3.delete(uris[1])
    assert [r.name for r in s3.list(s3_prefix + "run1/")] == ["a.dat", "sub/deeper/c.dat"]


def test_ranged_parallel_read_of_a_64_mib_object(s3, s3_prefix, fault_proxy, tmp_path):
    data = np.random.default_rng(64).bytes(64 * MiB)
    src = write(tmp_path / "big.bin", data)
    # above put_max: a multipart upload (5 MiB parts)
    (uri,) = s3.with_config(put_max=8 * MiB, part_size=5 * MiB).publish([(src, "big.bin")], s3_prefix)
    store, key = s3.store_for(uri)
    assert obstore.head(store, key)["e_tag"].rstrip('"').endswith("-13")  # 13 parts: multipart
    src.unlink()

    ranged = via(fault_proxy, s3, part_size=5 * MiB, concurrency=4)
    (ref,) = ranged.list(uri)
    local = ranged.stage(ref, tmp_path / "scratch")
    got = local.read_bytes()
    assert len(got) == len(data) and got == data
    assert ranged.known_sha256(local) == sha(data)

    gets = [s for s in fault_proxy.seen if s.method == "GET" and s.range]
    # a 1 MiB first range, then [1 MiB, 64 MiB) in 5 MiB ranges: 14 ranged GETs in all
    assert len(gets) == 1 + -(-63 // 5)
    assert gets[0].range == f"bytes=0-{MiB - 1}"
    starts = sorted(int(s.range.split("=")[1].split("-")[0]) for s in gets)
    assert starts == [0, *range(MiB, 64 * MiB, 5 * MiB)]
    assert fault_proxy.max_in_flight > 1  # in parallel


# -- publishing: never overwrite, all or nothing -------------------------------------------------
def test_publish_refuses_to_overwrite_and_writes_nothing(s3, s3_prefix, tmp_path):
    old = write(tmp_path / "old" / "result.nxs", b"original")
    s3.publish([(old, "result.nxs")], s3_prefix)
    new_a = write(tmp_path / "new" / "a.csv", b"new a")
    new_r = write(tmp_path / "new" / "result.nxs", b"replacement")
    with pytest.raises(errors.FailedPrecondition) as err:
        s3.publish([(new_a, "a.csv"), (new_r, "result.nxs")], s3_prefix)
    assert f"{s3_prefix}result.nxs" in str(err.value)
    assert keys_under(s3, s3_prefix) == ["result.nxs"]  # a.csv was never written
    assert b"".join(s3.open_read(s3_prefix + "result.nxs")) == b"original"


def test_a_key_created_during_the_publish_is_refused_by_the_server(s3, s3_prefix, tmp_path, monkeypatch):
    """The HEAD check passes (the key appears just after it); the conditional PUT
    (If-None-Match: *) is refused by the server, and what this publish wrote is removed."""
    theirs = write(tmp_path / "theirs.txt", b"someone else's")
    s3.publish([(theirs, "c.txt")], s3_prefix)
    monkeypatch.setattr(S3Store, "_exists", lambda self, store, key, uri: False)
    ours = [(write(tmp_path / n, n.encode()), n) for n in ("a.txt", "b.txt", "c.txt")]
    with pytest.raises(errors.FailedPrecondition, match="appeared while publishing"):
        s3.publish(ours, s3_prefix)
    assert keys_under(s3, s3_prefix) == ["c.txt"]
    assert b"".join(s3.open_read(s3_prefix + "c.txt")) == b"someone else's"


def test_publish_is_all_or_nothing_when_an_upload_fails(s3, s3_prefix, fault_proxy, tmp_path):
    files = [(write(tmp_path / n, n.encode() * 100), n) for n in ("one.nxs", "two.csv", "provenance.json")]
    # the server keeps failing the second upload (5xx: retried, then given up)
    fault_proxy.add(Fault(lambda m, p, h: m == "PUT" and p.endswith("/two.csv"), status=503, times=100))
    flaky = via(fault_proxy, s3, max_retries=2, init_backoff=0.01, max_backoff=0.05)
    with pytest.raises(errors.Unavailable, match="after retries"):
        flaky.publish(files, s3_prefix + "out/")
    assert [s.path.rsplit("/", 1)[1] for s in fault_proxy.seen if s.method == "PUT"] == ["one.nxs"] + [
        "two.csv"
    ] * 3  # 1 try + 2 retries, and provenance.json never started
    assert [(s.method, s.path) for s in fault_proxy.seen][-1] == ("POST", "/panreduce?delete")  # roll-back
    with pytest.raises(errors.InputNotFound):
        s3.list(s3_prefix + "out/")  # nothing visible
    # a refusal (4xx) is not retried, and also leaves nothing
    fault_proxy.clear()
    fault_proxy.add(Fault(lambda m, p, h: m == "PUT" and p.endswith("/provenance.json"), status=403))
    with pytest.raises(errors.InternalError, match="credentials"):
        flaky.publish(files, s3_prefix + "out/")
    assert [s.path.rsplit("/", 1)[1] for s in fault_proxy.seen if s.method == "PUT"] == [
        "one.nxs",
        "two.csv",
        "provenance.json",
    ]
    with pytest.raises(errors.InputNotFound):
        s3.list(s3_prefix + "out/")


# -- verification ---------------------------------------------------------------------------------
def test_a_corrupted_object_is_invalid_input(s3, s3_prefix, tmp_path):
    data = np.random.default_rng(3).bytes(2 * MiB)
    store, key = s3.store_for(s3_prefix + "frames.h5")
    # an object whose recorded checksum does not match its bytes (bit rot, a bad copy)
    obstore.put(store, key, data, attributes={SHA256_KEY: sha(data[:-1] + b"\0")})
    (ref,) = s3.list(s3_prefix + "frames.h5")
    with pytest.raises(errors.InvalidInput) as err:
        s3.stage(ref, tmp_path / "scratch")
    assert err.value.source == s3_prefix + "frames.h5" and "SHA-256" in str(err.value)
    assert not (tmp_path / "scratch" / "frames.h5").exists()
    # the same through the kit's staging, also with parallel ranges
    stores = Stores(tmp_path / "store")
    stores.register("s3", s3.with_config(part_size=5 * MiB))
    obstore.put(store, key, data * 4, attributes={SHA256_KEY: sha(data)})
    with pytest.raises(errors.InvalidInput, match="corrupt object"):
        stage_inputs(stores, [s3_prefix + "frames.h5"], tmp_path / "job")
    # an object without a recorded checksum is staged (and hashed) as it is
    obstore.put(store, key, data)
    (ref,) = s3.list(s3_prefix + "frames.h5")
    assert s3.stage(ref, tmp_path / "scratch").read_bytes() == data


def test_an_object_replaced_while_staged_is_never_mixed(s3, s3_prefix, fault_proxy, tmp_path):
    store, key = s3.store_for(s3_prefix + "x.bin")
    obstore.put(store, key, b"1" * 1000)
    (ref,) = s3.list(s3_prefix + "x.bin")
    obstore.put(store, key, b"2" * 2000)  # replaced between listing and staging
    with pytest.raises(errors.FailedPrecondition, match="changed while"):
        s3.stage(ref, tmp_path / "scratch")

    # replaced (same size) after the first range: the other ranges are pinned to its ETag
    old, new = b"a" * (12 * MiB), b"b" * (12 * MiB)
    obstore.put(store, key, old)
    replaced = []

    def replace_once(method, path, headers):
        if method == "GET" and headers.get("range", "").startswith("bytes=1048576-") and not replaced:
            replaced.append(obstore.put(store, key, new))
        return False

    fault_proxy.add(Fault(replace_once, times=10**6))
    ranged = via(fault_proxy, s3, part_size=5 * MiB)
    (ref,) = ranged.list(s3_prefix + "x.bin")
    with pytest.raises(errors.FailedPrecondition, match="changed while"):
        ranged.stage(ref, tmp_path / "scratch")
    assert replaced and 412 in {s.status for s in fault_proxy.seen}
    assert not (tmp_path / "scratch" / "x.bin").exists()


# -- retries ------------------------------------------------------------------------------------
def test_transient_failures_are_retried_with_backoff(s3, s3_prefix, fault_proxy, tmp_path):
    data = np.random.default_rng(5).bytes(12 * MiB)
    (uri,) = s3.publish([(write(tmp_path / "d.bin", data), "d.bin")], s3_prefix)
    flaky = via(fault_proxy, s3, part_size=5 * MiB, concurrency=2, init_backoff=0.05)
    (ref,) = flaky.list(uri)
    fault_proxy.clear()
    is_range = lambda m, p, h: m == "GET" and "bytes=1048576-" in h.get("range", "")  # noqa: E731
    fault_proxy.add(Fault(is_range, status=503, times=2))  # 5xx twice on the second range
    fault_proxy.add(
        Fault(lambda m, p, h: m == "GET" and "bytes=6291456-" in h.get("range", ""), truncate=1000)
    )  # the third range's body breaks off
    t0 = time.monotonic()
    local = flaky.stage(ref, tmp_path / "scratch")
    assert local.read_bytes() == data
    second = [s for s in fault_proxy.seen if "bytes=1048576-" in s.range]
    assert [s.status for s in second] == [503, 503, 206]
    (third,) = [s for s in fault_proxy.seen if "bytes=6291456-" in s.range]
    assert third.fault == "cut after 1000 bytes"
    # the broken body is resumed where it broke off
    assert [s.status for s in fault_proxy.seen if s.range == f"bytes={6291456 + 1000}-11534335"] == [206]
    assert time.monotonic() - t0 >= 0.05  # backed off

    # 404 and 403 are answers, not transient failures: asked once, never retried
    fault_proxy.clear()
    with pytest.raises(errors.InputNotFound):
        flaky.list(s3_prefix + "missing.bin")
    assert [s.method for s in fault_proxy.seen] == ["HEAD", "GET"]  # the object, then the prefix hint
    fault_proxy.clear()
    fault_proxy.add(Fault(lambda m, p, h: m == "GET", status=403, times=10))
    with pytest.raises(errors.InternalError, match="credentials"):
        flaky.stage(ref, tmp_path / "scratch2")
    assert len(fault_proxy.seen) == 1


# -- errors -------------------------------------------------------------------------------------
def test_missing_objects_and_bad_uris(s3, s3_prefix, tmp_path):
    write(tmp_path / "f", b"x")
    s3.publish([(tmp_path / "f", "dir/f")], s3_prefix)
    with pytest.raises(errors.InputNotFound, match="no such object"):
        s3.list(s3_prefix + "nothing.nxs")
    with pytest.raises(errors.InputNotFound, match=r"name it as .*dir/ to stage"):
        s3.list(s3_prefix + "dir")
    with pytest.raises(errors.InputNotFound, match="no objects under this prefix"):
        s3.list(s3_prefix + "empty/")
    with pytest.raises(errors.InputNotFound, match="no such bucket"):
        s3.list("s3://no-such-bucket-here/x/")
    with pytest.raises(errors.ObjectNotFound):
        s3.size(s3_prefix + "nothing.nxs")
    with pytest.raises(errors.ObjectNotFound):
        list(s3.open_read(s3_prefix + "nothing.nxs"))
    for bad in (
        "s3://",
        "s3:///key",
        "s3://b/a/../../etc/passwd",
        "s3://b/a//b",
        "s3://b/a/%2e%2e/x",
        "s3://b/a/%252e%252e/x",
        "s3://b/a%00",
        "s3://b/a?x=1",
        "s3://b/a%3Fx",
    ):
        with pytest.raises(errors.CallerError):
            s3.list(bad)
    assert parse_uri("s3://b/p/q/") == ("b", "p/q/")
    with pytest.raises(errors.InvalidRequest, match="does not exist"):
        s3.publish([(tmp_path / "f", "f")], "s3://no-such-bucket-here/out/")


def test_s3_keys_are_parsed_by_the_one_resolution_and_decoded_once():
    """parse_uri goes through panreduce.locations: '.' dropped, '%xx' decoded exactly once,
    and what it yields, written back as a URI, parses to itself (no second decoding)."""
    from panreduce.s3 import uri_of

    assert parse_uri("s3://b/./x") == ("b", "x")
    assert parse_uri("s3://b/a%20b/c%C3%A9.nxs") == ("b", "a b/cé.nxs")
    assert parse_uri("s3://b/") == ("b", "") and parse_uri("s3://b") == ("b", "")
    for uri in ("s3://b/a%20b/c.nxs", "s3://b/run/", "s3://b/x/./y"):
        bucket, key = parse_uri(uri)
        again = uri_of(bucket, key)
        assert again is not None and parse_uri(again) == (bucket, key)
    for key in ("a%2e%2e/b", "a?b", "a#b", "a\\b", "a\x00b", "a//b", "a/../b", "./a"):
        assert uri_of("b", key) is None, key


def test_refused_credentials_are_a_server_fault(s3, s3_prefix):
    wrong = s3.with_config(secret_access_key="not-the-secret")
    with pytest.raises(errors.InternalError, match="credentials") as err:
        wrong.list(s3_prefix + "x.nxs")
    assert not errors.is_caller_error(err.value)


def test_an_unreachable_endpoint_is_unavailable(s3):
    down = s3.with_config(endpoint="http://127.0.0.1:9", max_retries=1, init_backoff=0.01, connect_timeout=1)
    with pytest.raises(errors.Unavailable, match="unreachable"):
        down.list("s3://panreduce/x.nxs")


# -- configuration ------------------------------------------------------------------------------
def test_configuration_from_environment_and_file(tmp_path, s3_env):
    assert S3Config.from_env({}) is None
    assert "s3" not in Stores.from_env(tmp_path / "a", environ={})._by_scheme
    config = S3Config.from_env(s3_env)
    assert config.endpoint == s3_env["PANREDUCE_S3_ENDPOINT"] and config.allow_http
    assert config.secret_access_key not in repr(config)

    toml = tmp_path / "s3.toml"
    toml.write_text(
        '[s3]\nendpoint = "https://s3.example.org"\naccess_key_id = "k"\n'
        'secret_access_key = "s"\nbuckets = ["raw", "results"]\nconcurrency = 4\n'
    )
    c = S3Config.from_env({"PANREDUCE_S3_CONFIG": str(toml), "PANREDUCE_S3_CONCURRENCY": "16"})
    assert (c.endpoint, c.buckets, c.concurrency, c.region) == (
        "https://s3.example.org",
        ("raw", "results"),
        16,
        "us-east-1",
    )
    js = tmp_path / "s3.json"
    js.write_text(json.dumps({"endpoint": "http://127.0.0.1:1", "allow_http": True, "anonymous": True}))
    assert S3Config.from_env({"PANREDUCE_S3_CONFIG": str(js)}).anonymous

    for env, message in [
        ({"PANREDUCE_S3_ENDPOINT": "http://127.0.0.1:1"}, "ACCESS_KEY_ID"),
        ({**s3_env, "PANREDUCE_S3_ALLOW_HTTP": "false"}, "ALLOW_HTTP"),
        ({**s3_env, "PANREDUCE_S3_PART_SIZE": "1024"}, "5 MiB"),
        ({"PANREDUCE_S3_CONFIG": str(tmp_path / "missing.toml")}, "cannot read"),
    ]:
        with pytest.raises(errors.InternalError, match=message):
            S3Config.from_env(env)
    toml.write_text('endpoint = "x"\ncolour = "blue"\n')
    with pytest.raises(errors.InternalError, match="unknown setting"):
        S3Config.from_env({"PANREDUCE_S3_CONFIG": str(toml)})


def test_only_configured_buckets_are_served(s3, s3_prefix, tmp_path):
    fenced = s3.with_config(buckets=("panreduce",))
    (uri,) = fenced.publish([(write(tmp_path / "f", b"1"), "f")], s3_prefix)
    assert [r.uri for r in fenced.list(s3_prefix)] == [uri]
    with pytest.raises(errors.PermissionDenied, match="panreduce-other"):
        fenced.list("s3://panreduce-other/x/")
    with pytest.raises(errors.PermissionDenied):
        fenced.publish([(write(tmp_path / "f", b"1"), "f")], "s3://panreduce-other/out/")
