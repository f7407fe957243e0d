"""Object storage: ``s3://bucket/key`` inputs and outputs through obstore.

The server's configuration (endpoint, credentials, region, allowed buckets) comes from
the environment or a config file — never from a request. A request only names
``s3://bucket/key`` (one object) or ``s3://bucket/prefix/`` (every object under it).

- **Staging** downloads an object into the job's scratch: one GET for small objects,
  ranged GETs in parallel for large ones (all pinned to the first response's ETag, so a
  concurrent overwrite cannot mix versions), written in place with ``pwrite`` and hashed
  in order while the next ranges arrive. The size is checked, and so is the SHA-256 when
  the object carries one in its user metadata (``x-amz-meta-sha256``, which our publish
  writes): a mismatch is ``InvalidInput``.
- **Retries**: obstore retries 5xx answers, dropped connections and timeouts with
  exponential backoff and jitter (bounded by ``max_retries`` and ``retry_timeout``), and
  resumes a body that breaks off mid-way; short reads get a few more bounded tries. 4xx
  answers are never retried.
- **Publishing** never overwrites. Every target key is checked first (HEAD) and nothing
  is written if one exists. Files up to ``put_max`` bytes go up in one conditional PUT
  (``If-None-Match: *``): the object appears whole or not at all, and a key created
  meanwhile by someone else is refused by the server. Larger files go up as multipart
  uploads, which S3 makes visible only on completion (their no-overwrite check is the
  HEAD just before the upload starts). If any upload fails, the objects this publish
  already wrote are deleted, so a set of outputs appears all together or not at all
  (``provenance.json`` is written last by the kit).
- **Errors**: a missing object is ``InputNotFound``/``ObjectNotFound``; refused
  credentials or a bad configuration are ``InternalError`` (the server's fault, never the
  caller's); an endpoint that stays unreachable or failing after the retries is
  ``Unavailable``.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import threading
import time
import tomllib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
from obstore import exceptions as obx
from obstore.store import S3Store as _ObS3Store

from panreduce import errors, locations
from panreduce.storage import CHUNK, ObjectRef, Store, sha256_file

if TYPE_CHECKING:
    from obstore import GetOptions

    from panreduce.settings import Settings

T = TypeVar("T")

log = logging.getLogger(__name__)

MiB = 1 << 20
FIRST_RANGE = 1 * MiB  # the first request of a ranged download
ENV_PREFIX = "PANREDUCE_S3_"
SHA256_KEY = "sha256"  # user metadata (x-amz-meta-sha256) written on publish, checked on stage
_STATUS = re.compile(r"status code: (\d{3})")
_RETRIED = re.compile(r"after [1-9]\d* retries")
# obstore raises the builtin FileNotFoundError for a missing object (404)
_NOT_FOUND = (obx.NotFoundError, FileNotFoundError)
_REMOTE = (obx.BaseError, FileNotFoundError)
_TRUE = {"1", "true", "yes", "on"}


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE


@dataclass(frozen=True)
class S3Config:
    """How this server reaches its object store. From ``S3Config.from_env``; never
    from a request. Sizes in bytes, times in seconds."""

    endpoint: str = ""  # e.g. http://127.0.0.1:7480; empty: AWS's endpoint for the region
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    session_token: str = field(default="", repr=False)
    region: str = "us-east-1"
    allow_http: bool = False
    anonymous: bool = False  # unsigned requests (public buckets)
    virtual_hosted_style: bool = False  # path-style (endpoint/bucket/key) by default
    buckets: tuple[str, ...] = ()  # when set, the only buckets this server may touch
    part_size: int = 16 * MiB  # range size for parallel reads; part size for multipart uploads
    concurrency: int = 8  # ranges (or parts) in flight per object
    put_max: int = 64 * MiB  # up to this size: one conditional PUT; above: multipart
    max_retries: int = 5
    retry_timeout: float = 60.0
    init_backoff: float = 0.1
    max_backoff: float = 5.0
    connect_timeout: float = 5.0
    request_timeout: float = 300.0

    FIELDS = (
        "endpoint",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "region",
        "allow_http",
        "anonymous",
        "virtual_hosted_style",
        "buckets",
        "part_size",
        "concurrency",
        "put_max",
        "max_retries",
        "retry_timeout",
        "init_backoff",
        "max_backoff",
        "connect_timeout",
        "request_timeout",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config | None:
        """The configuration from ``$PANREDUCE_S3_CONFIG`` (a TOML or JSON file with the
        field names as keys) overlaid by ``$PANREDUCE_S3_<FIELD>`` variables; ``None`` when
        neither an endpoint, credentials nor a config file is given (S3 not configured)."""
        from panreduce.settings import settings_for

        return cls.from_settings(settings_for(environ))

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Config | None:
        """``from_env`` for settings already read (panreduce.settings: ``s3_*``)."""
        values: dict[str, Any] = {}
        path = str(settings.s3_config or "").strip()
        if path:
            values.update(_read_config_file(Path(path)))
        values.update(settings.s3_values())
        if not path and not any(k in values for k in ("endpoint", "access_key_id", "anonymous")):
            return None
        return cls.from_mapping(values, source=path or "the environment")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "configuration") -> S3Config:
        unknown = sorted(set(values) - set(cls.FIELDS))
        if unknown:
            raise errors.InternalError(
                f"S3 configuration in {source}: unknown setting(s) {', '.join(unknown)}"
                f" (known: {', '.join(cls.FIELDS)})"
            )
        kw: dict[str, Any] = {}
        try:
            for name, value in values.items():
                default = getattr(cls, name)
                if name == "buckets":
                    items = value.replace(",", " ").split() if isinstance(value, str) else value
                    kw[name] = tuple(str(b) for b in items)
                elif isinstance(default, bool):
                    kw[name] = _bool(value)
                elif isinstance(default, int):
                    kw[name] = int(value)
                elif isinstance(default, float):
                    kw[name] = float(value)
                else:
                    kw[name] = str(value)
        except (TypeError, ValueError) as exc:
            raise errors.InternalError(f"S3 configuration in {source}: {exc}") from None
        config = cls(**kw)
        config.check(source)
        return config

    def check(self, source: str = "configuration") -> None:
        problems = []
        if not self.anonymous and not (self.access_key_id and self.secret_access_key):
            problems.append(
                "PANREDUCE_S3_ACCESS_KEY_ID and PANREDUCE_S3_SECRET_ACCESS_KEY are required"
                " (or PANREDUCE_S3_ANONYMOUS=true for public buckets)"
            )
        if self.endpoint.startswith("http://") and not self.allow_http:
            problems.append(
                f"the endpoint {self.endpoint} is plain HTTP: set PANREDUCE_S3_ALLOW_HTTP=true"
                " to allow it (loopback/test servers)"
            )
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            problems.append(f"the endpoint {self.endpoint!r} must start with http:// or https://")
        if self.part_size < 5 * MiB:
            problems.append("part_size must be at least 5 MiB (the S3 minimum part size)")
        if self.concurrency < 1 or self.max_retries < 0:
            problems.append("concurrency must be >= 1 and max_retries >= 0")
        if problems:
            raise errors.InternalError(f"S3 configuration in {source}: " + "; ".join(problems))


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise errors.InternalError(f"cannot read the S3 configuration file {path}: {exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise errors.InternalError(
            f"the S3 configuration file {path} is not valid "
            f"{'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {exc}"
        ) from None
    if isinstance(data.get("s3"), dict):  # a [s3] table is accepted too
        data = data["s3"]
    return dict(data)


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key), through the one resolution of every location
    (panreduce.locations.resolve: percent-encoding decoded exactly once, ``.`` dropped;
    ``..``, empty segments, a ``%`` left after decoding, control characters, ``?`` and
    ``#`` refused as the caller's mistake). A prefix keeps its trailing ``/``."""
    if not uri.startswith("s3://"):
        raise errors.InvalidRequest(f"{locations.shown(uri)}: not an s3:// URI")
    if uri[len("s3://") :].startswith("/"):
        raise errors.InvalidRequest(f"{locations.shown(uri)}: an s3:// URI must name a bucket (s3://bucket/key)")
    loc = locations.resolve(uri)
    bucket, _, key = loc.key.partition("/")
    return bucket, key + ("/" if loc.is_prefix and key else "")


def uri_of(bucket: str, key: str) -> str | None:
    """The ``s3://`` URI of an object key as listed, in the form :func:`parse_uri` reads
    back to the same key; None for a key no location may hold (a ``%``, a control
    character, ``?``, ``#``, a backslash, or an empty, ``.`` or ``..`` segment)."""
    if any(c in key for c in "%?#\\") or any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        return None
    if any(p in ("", ".", "..") for p in key.removesuffix("/").split("/")):
        return None
    return f"s3://{bucket}/{key}"


def _status(exc: BaseException) -> int:
    """The HTTP status in an obstore error message (0 when there is none)."""
    m = _STATUS.search(str(exc))
    return int(m.group(1)) if m else 0


def _short(exc: BaseException) -> str:
    text = str(exc).split("\n\nDebug source:")[0].strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


class S3Store(Store):
    """``s3://`` URIs on one S3-compatible endpoint (see the module docstring)."""

    scheme = "s3"

    def __init__(self, config: S3Config) -> None:
        config.check()
        self.config = config
        self._stores: dict[str, _ObS3Store] = {}
        self._lock = threading.Lock()
        self._digests: dict[str, str] = {}  # staged path -> SHA-256 computed while staging

    # -- plumbing ---------------------------------------------------------------------------
    def _store(self, bucket: str, uri: str) -> _ObS3Store:
        if self.config.buckets and bucket not in self.config.buckets:
            raise errors.PermissionDenied(f"{uri}: bucket {bucket!r} is not one this server serves")
        with self._lock:
            store = self._stores.get(bucket)
            if store is None:
                c = self.config
                kwargs: dict[str, Any] = {
                    "region": c.region,
                    "virtual_hosted_style_request": c.virtual_hosted_style,
                    "conditional_put": "etag",
                }
                if c.endpoint:
                    kwargs["endpoint"] = c.endpoint
                if c.anonymous:
                    kwargs["skip_signature"] = True
                else:
                    kwargs["access_key_id"] = c.access_key_id
                    kwargs["secret_access_key"] = c.secret_access_key
                    if c.session_token:
                        kwargs["session_token"] = c.session_token
                try:
                    store = _ObS3Store(
                        bucket,
                        client_options={
                            "allow_http": c.allow_http,
                            "connect_timeout": timedelta(seconds=c.connect_timeout),
                            "timeout": timedelta(seconds=c.request_timeout),
                            "pool_max_idle_per_host": str(max(16, 2 * c.concurrency)),
                        },
                        retry_config={
                            "max_retries": c.max_retries,
                            "retry_timeout": timedelta(seconds=c.retry_timeout),
                            "backoff": {
                                "init_backoff": timedelta(seconds=c.init_backoff),
                                "max_backoff": timedelta(seconds=c.max_backoff),
                                "base": 2.0,
                            },
                        },
                        **kwargs,
                    )
                except _REMOTE as exc:
                    raise errors.InternalError(
                        f"S3 client for bucket {bucket!r} cannot be made: {_short(exc)}"
                    ) from None
                self._stores[bucket] = store
            return store

    def _error(
        self, exc: BaseException, uri: str, *, missing: type[errors.PanReduceError] = errors.InputNotFound
    ) -> errors.PanReduceError:
        """The PaNReduce error for an obstore failure on ``uri``."""
        if isinstance(exc, errors.PanReduceError):
            return exc
        detail = _short(exc)
        status = _status(exc)
        if isinstance(exc, _NOT_FOUND) or status == 404:
            what = "no such bucket" if "NoSuchBucket" in str(exc) else "no such object"
            return errors.InputNotFound(uri, what) if missing is errors.InputNotFound else errors.ObjectNotFound(uri)
        if isinstance(exc, obx.AlreadyExistsError | obx.PreconditionError):
            return errors.FailedPrecondition(f"{uri} already exists; results are never overwritten ({detail})")
        if isinstance(exc, obx.PermissionDeniedError | obx.UnauthenticatedError) or status in (401, 403):
            return errors.InternalError(
                f"the object store refused this server's credentials for {uri} ({detail}); the server's S3"
                " configuration (PANREDUCE_S3_*) or the bucket policy must be fixed"
            )
        if isinstance(exc, obx.InvalidPathError):
            return errors.InvalidRequest(f"{uri}: not a valid object key ({detail})")
        if 400 <= status < 500:  # a 4xx we do not map: the server's request was wrong
            return errors.InternalError(f"the object store refused a request for {uri}: {detail}")
        where = self.config.endpoint or f"S3 ({self.config.region})"
        return errors.Unavailable(f"object store {where} unreachable or failing for {uri} after retries: {detail}")

    def _retry(self, what: str, fn: Callable[[], T], attempts: int = 3) -> T:
        """``fn()`` with a few extra tries for failures obstore reports without having
        retried them (short reads, odd transport errors); never for 4xx answers, and not
        again for what obstore already retried (5xx, connection errors, broken bodies)."""
        delay = self.config.init_backoff
        for attempt in range(attempts):
            try:
                return fn()
            except obx.GenericError as exc:
                # not a 4xx, nor what obstore already retried (5xx, connection errors)
                if 400 <= _status(exc) < 500 or _RETRIED.search(str(exc)) or attempt == attempts - 1:
                    raise
                time.sleep(min(delay, self.config.max_backoff))
                delay *= 2
        raise AssertionError(what)  # unreachable

    # -- Store interface ----------------------------------------------------------------------
    def list(self, uri: str) -> list[ObjectRef]:
        bucket, key = parse_uri(uri)
        store = self._store(bucket, uri)
        if key and not key.endswith("/"):
            try:
                meta = obstore.head(store, key)
            except _NOT_FOUND:
                hint = "no such object"
                if self._any_under(store, key + "/", uri):
                    hint += f"; it is a prefix: name it as {uri}/ to stage every object under it"
                raise errors.InputNotFound(uri, hint) from None
            except _REMOTE as exc:
                raise self._error(exc, uri) from None
            return [ObjectRef(uri, posixpath.basename(key), int(meta["size"]))]
        refs = []
        try:
            for batch in obstore.list(store, prefix=key.rstrip("/") or None, chunk_size=1000):
                for meta in batch:
                    path = meta["path"]
                    name = path[len(key) :] if path.startswith(key) else path
                    if not name or name.endswith("/") or any(p.startswith(".") for p in name.split("/")):
                        continue  # folder markers and hidden objects, as for local folders
                    ref_uri = uri_of(bucket, path)
                    if ref_uri is None:
                        log.warning("listing %s: skipped %r (a key locations may not hold)", uri, path[:200])
                        continue
                    refs.append(ObjectRef(ref_uri, name, int(meta["size"])))
        except _REMOTE as exc:
            raise self._error(exc, uri) from None
        if not refs:
            raise errors.InputNotFound(uri, "no objects under this prefix")
        return sorted(refs, key=lambda r: r.name)

    def _any_under(self, store: _ObS3Store, prefix: str, uri: str) -> bool:
        try:
            for batch in obstore.list(store, prefix=prefix.rstrip("/"), chunk_size=1):
                if batch:
                    return True
        except _REMOTE:
            return False
        return False

    def size(self, uri: str) -> int:
        bucket, key = parse_uri(uri)
        if not key or key.endswith("/"):
            raise errors.ObjectNotFound(uri)
        try:
            return int(obstore.head(self._store(bucket, uri), key)["size"])
        except _REMOTE as exc:
            raise self._error(exc, uri, missing=errors.ObjectNotFound) from None

    def open_read(self, uri: str, offset: int = 0) -> Iterator[bytes]:
        size = self.size(uri)
        if offset >= size:
            return
        bucket, key = parse_uri(uri)
        try:
            result = obstore.get(self._store(bucket, uri), key, options={"range": {"offset": offset}})
            for block in result.stream(min_chunk_size=CHUNK):
                yield bytes(block)
        except _REMOTE as exc:
            raise self._error(exc, uri, missing=errors.ObjectNotFound) from None

    def stage(self, ref: ObjectRef, scratch: Path) -> Path:
        bucket, key = parse_uri(ref.uri)
        store = self._store(bucket, ref.uri)
        name = ref.name if ref.name and ref.name not in (".", "..") else posixpath.basename(key)
        target = Path(os.path.normpath(scratch / name))
        if scratch.resolve() not in target.resolve().parents:
            raise errors.InvalidRequest(f"{ref.uri}: object name {ref.name!r} leaves the staging area")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            digest, expected, size = self._download(store, key, ref, target)
        except BaseException as exc:
            target.unlink(missing_ok=True)
            if isinstance(exc, obx.PreconditionError):  # If-Match: replaced between two ranges
                raise errors.FailedPrecondition(f"{ref.uri} changed while it was being staged; retry") from None
            if isinstance(exc, _REMOTE):
                raise self._error(exc, ref.uri) from None
            raise
        if size != ref.size:
            target.unlink(missing_ok=True)
            raise errors.FailedPrecondition(
                f"{ref.uri} changed while it was being staged ({ref.size} bytes listed, {size} now); retry"
            )
        if expected and expected.lower() != digest:
            target.unlink(missing_ok=True)
            raise errors.InvalidInput(
                ref.uri, f"corrupt object: its bytes hash to SHA-256 {digest}, but its metadata records {expected}"
            )
        with self._lock:
            if len(self._digests) > 10_000:
                self._digests.clear()
            self._digests[str(target)] = digest
        return target

    def known_sha256(self, path: Path) -> str | None:
        """The SHA-256 computed while staging ``path`` (so it need not be read again)."""
        with self._lock:
            return self._digests.pop(str(path), None)

    def _download(self, store: _ObS3Store, key: str, ref: ObjectRef, target: Path) -> tuple[str, str, int]:
        """Fetch ``key`` into ``target``; returns (sha256 of the bytes, metadata sha256, size)."""
        part = self.config.part_size
        # small objects in one GET; large ones: a first short range (its answer gives the
        # ETag and metadata), then the rest in parallel ranges pinned to that ETag
        first_end = part if ref.size <= part else min(part, FIRST_RANGE)

        def first_get() -> tuple[Any, Any, Any]:
            got = obstore.get(store, key, options={"range": (0, first_end)} if ref.size > 0 else {})
            return got.meta, got.attributes, got.bytes()

        meta, attributes, head = self._retry(key, first_get)
        size = int(meta["size"])
        expected = str(attributes.get(SHA256_KEY, "") or "")
        etag = meta.get("e_tag")
        digest = hashlib.sha256()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            digest.update(head)
            os.pwrite(fd, head, 0)
            if len(head) < size:
                os.ftruncate(fd, size)
                self._fetch_ranges(store, key, etag, len(head), size, fd, digest)
        finally:
            os.close(fd)
        return digest.hexdigest(), expected, size

    def _fetch_ranges(
        self, store: _ObS3Store, key: str, etag: str | None, start: int, size: int, fd: int, digest: Any
    ) -> None:
        """Ranges [start, size) in parallel, written with pwrite, hashed in order."""
        part = self.config.part_size
        ranges = [(a, min(a + part, size)) for a in range(start, size, part)]
        options: GetOptions = {"if_match": etag} if etag else {}

        def fetch(a: int, b: int) -> Any:
            def once() -> Any:
                ranged: GetOptions = {**options, "range": (a, b)}
                data = obstore.get(store, key, options=ranged).bytes()
                if len(data) != b - a:
                    raise obx.GenericError(f"short read of bytes {a}-{b}: got {len(data)}")
                return data

            data = self._retry(key, once)
            os.pwrite(fd, data, a)
            return data

        window = self.config.concurrency + 2
        pending: deque[Future[Any]] = deque()
        todo = iter(ranges)
        with ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="s3-get") as pool:
            try:
                for a, b in todo:
                    pending.append(pool.submit(fetch, a, b))
                    if len(pending) >= window:
                        digest.update(pending.popleft().result())
                while pending:
                    digest.update(pending.popleft().result())
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
        # an overwrite between ranges is caught by If-Match (PreconditionError)

    def publish(self, files: builtins.list[tuple[Path, str]], dest: str) -> builtins.list[str]:
        bucket, prefix = parse_uri(dest if dest.endswith("/") else dest + "/")
        store = self._store(bucket, dest)
        targets: list[tuple[Path, str, str]] = []
        for src, name in files:
            parts = Path(name).as_posix().split("/")
            if any(p in ("", ".", "..") for p in parts):
                raise errors.InternalError(f"output name {name!r} is not a valid relative name")
            key = prefix + "/".join(parts)
            targets.append((src, key, f"s3://{bucket}/{key}"))
        if len({k for _, k, _ in targets}) != len(targets):
            raise errors.InternalError("two outputs have the same name")
        clashes = [u for _, k, u in targets if self._exists(store, k, u)]
        if clashes:
            raise errors.FailedPrecondition(
                f"output would overwrite existing results: {', '.join(clashes[:5])}"
                f"{' ...' if len(clashes) > 5 else ''}; choose a new output location"
            )
        written: list[str] = []
        try:
            for src, key, uri in targets:
                self._put(store, src, key, uri)
                written.append(key)
        except BaseException as exc:
            self._roll_back(store, bucket, written)
            if isinstance(exc, _NOT_FOUND) or (isinstance(exc, _REMOTE) and _status(exc) == 404):
                raise errors.InvalidRequest(f"output location {dest}: bucket {bucket!r} does not exist") from None
            if isinstance(exc, _REMOTE):
                raise self._error(exc, f"s3://{bucket}/{prefix}", missing=errors.ObjectNotFound) from None
            raise
        return [u for _, _, u in targets]

    def _roll_back(self, store: _ObS3Store, bucket: str, keys: builtins.list[str]) -> None:
        """Delete what a failed publish wrote (only its own objects)."""
        for key in keys:
            try:
                self._retry(key, functools.partial(obstore.delete, store, key))
            except _REMOTE as exc:
                log.warning("publish roll-back: could not delete s3://%s/%s: %s", bucket, key, _short(exc))

    def _exists(self, store: _ObS3Store, key: str, uri: str) -> bool:
        try:
            obstore.head(store, key)
            return True
        except _NOT_FOUND:
            return False
        except _REMOTE as exc:
            raise self._error(exc, uri, missing=errors.ObjectNotFound) from None

    def _put(self, store: _ObS3Store, src: Path, key: str, uri: str) -> None:
        try:
            size = src.stat().st_size
            attributes = {SHA256_KEY: sha256_file(src)}
        except OSError as exc:
            raise errors.InternalError(f"publishing {uri}: cannot read the output file {src} ({exc})") from None
        try:
            if size <= self.config.put_max:
                # one conditional PUT: whole or nothing, and never over an existing key
                obstore.put(store, key, src, attributes=attributes, mode="create", use_multipart=False)
            else:
                if self._exists(store, key, uri):  # multipart cannot be conditional here
                    raise errors.FailedPrecondition(f"{uri} appeared while publishing; not overwritten")
                obstore.put(
                    store,
                    key,
                    src,
                    attributes=attributes,
                    use_multipart=True,
                    chunk_size=self.config.part_size,
                    max_concurrency=self.config.concurrency,
                )
        except (obx.AlreadyExistsError, obx.PreconditionError):
            raise errors.FailedPrecondition(f"{uri} appeared while publishing; not overwritten") from None

    def modified(self, uri: str) -> builtins.list[tuple[str, int, datetime]]:
        """Every object under a prefix URI with its size and last-modified time (UTC), hidden
        ones (temporary ``.partial`` keys) included: for retention. An empty prefix is ``[]``."""
        bucket, key = parse_uri(uri if uri.endswith("/") else uri + "/")
        store = self._store(bucket, uri)
        out = []
        try:
            for batch in obstore.list(store, prefix=key.rstrip("/") or None, chunk_size=1000):
                for meta in batch:
                    ref_uri = uri_of(bucket, meta["path"])
                    if ref_uri is not None and not meta["path"].endswith("/"):
                        when = meta["last_modified"]
                        out.append((ref_uri, int(meta["size"]), when if when.tzinfo else when.replace(tzinfo=UTC)))
        except _REMOTE as exc:
            raise self._error(exc, uri) from None
        return sorted(out)

    def delete(self, uri: str) -> None:
        """Delete one object (retention); an object already gone is fine."""
        bucket, key = parse_uri(uri)
        if not key or key.endswith("/"):
            raise errors.InvalidRequest(f"{uri}: delete takes one object, not a prefix")
        try:
            self._retry(key, lambda: obstore.delete(self._store(bucket, uri), key))
        except _NOT_FOUND:
            pass
        except _REMOTE as exc:
            raise self._error(exc, uri, missing=errors.ObjectNotFound) from None

    # -- helpers for tests, tools and benchmarks ------------------------------------------------
    def store_for(self, uri: str) -> tuple[_ObS3Store, str]:
        """(obstore store, key) for ``uri`` — the plain client, e.g. for benchmarks."""
        bucket, key = parse_uri(uri)
        return self._store(bucket, uri), key

    def delete_prefix(self, uri: str) -> int:
        """Delete every object under a prefix URI (test and benchmark clean-up)."""
        bucket, key = parse_uri(uri if uri.endswith("/") else uri + "/")
        store = self._store(bucket, uri)
        paths = [m["path"] for batch in obstore.list(store, prefix=key.rstrip("/") or None) for m in batch]
        for i in range(0, len(paths), 1000):
            obstore.delete(store, paths[i : i + 1000])
        return len(paths)

    def with_config(self, **changes: Any) -> S3Store:
        return S3Store(replace(self.config, **changes))
