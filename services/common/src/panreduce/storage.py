"""Where inputs come from and results go: object stores behind one interface.

URIs: ``file:///abs/path`` or a plain local path (embedded mode), ``upload://ID/name``
(inline data sent with Upload), ``s3://bucket/key`` (object storage; configured by the
gateway). A URI ending in ``/`` — or naming a local folder — means every file under it.

Staging reads each input into the job's scratch (in place for local files) and
records its size and SHA-256; publishing moves a finished job's outputs to their
destination so that no half-written file is ever visible under its final name.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from panreduce import errors, locations
from panreduce.kit.technique import Inputs, StagedFile, StagedInput
from panreduce.scope import check_staged

CHUNK = 1 << 20
log = logging.getLogger("panreduce.storage")


@dataclass(frozen=True)
class ObjectRef:
    uri: str
    name: str  # relative to the input URI (file name for a single object)
    size: int


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


class Store(ABC):
    """One kind of storage (a scheme)."""

    @abstractmethod
    def list(self, uri: str) -> list[ObjectRef]:
        """The objects a URI names: itself, or everything under a prefix (sorted).
        Raises InputNotFound when there is nothing."""

    @abstractmethod
    def stage(self, ref: ObjectRef, scratch: Path) -> Path:
        """A local path holding the object's bytes (may be the object itself)."""

    @abstractmethod
    def publish(self, files: builtins.list[tuple[Path, str]], dest: str) -> builtins.list[str]:
        """Put (local file, relative name) pairs under ``dest`` atomically; return URIs.
        Never overwrites: an existing target fails the whole publish before anything
        is visible."""

    @abstractmethod
    def open_read(self, uri: str, offset: int = 0) -> Iterator[bytes]:
        """The object's bytes from ``offset``, in chunks."""

    @abstractmethod
    def size(self, uri: str) -> int: ...

    def is_prefix(self, uri: str) -> bool:
        return uri.endswith("/")

    def known_sha256(self, path: Path) -> str | None:
        """The SHA-256 of a file this store just staged, when it computed it on the way
        (saves reading the file again); None: unknown."""
        return None


class LocalStore(Store):
    """Local files (embedded mode). ``root`` maps URIs of ``scheme`` to a folder;
    without a root, URIs are absolute local paths."""

    def __init__(self, root: Path | None = None, scheme: str = "file") -> None:
        self.root = root.resolve() if root is not None else None
        self.scheme = scheme

    def location(self, uri: str) -> locations.Location:
        """``uri`` resolved once (panreduce.locations): decoded, normalised, symbolic
        links resolved; under a root, refused when it leaves the area of its namespace."""
        if self.root is None:
            loc = locations.resolve(uri)
            if loc.scheme != "file" or loc.local is None:
                raise errors.InvalidRequest(f"{locations.shown(uri)}: not a local file location")
            return loc
        if not uri.startswith(f"{self.scheme}://"):
            raise errors.InvalidRequest(f"{locations.shown(uri)}: not a {self.scheme}:// location")
        loc = locations.resolve(uri, roots={self.scheme: self.root})
        assert loc.local is not None
        return loc

    def path_of(self, uri: str) -> Path:
        """The resolved local path of ``uri`` (the only path that is opened)."""
        return self.location(uri).local  # type: ignore[return-value]

    def uri_of(self, path: Path) -> str:
        if self.root is None:
            return str(path)
        return f"{self.scheme}://{path.relative_to(self.root).as_posix()}"

    def is_prefix(self, uri: str) -> bool:
        return uri.endswith("/") or self.path_of(uri).is_dir()

    def list(self, uri: str) -> list[ObjectRef]:
        p = self.path_of(uri)
        if p.is_file():
            return [ObjectRef(self.uri_of(p), p.name, p.stat().st_size)]
        if p.is_dir():
            refs = []
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if any(part.startswith(".") for part in rel.parts) or not f.is_file():
                    continue
                if "%" in rel.as_posix() or any(ord(c) < 0x20 for c in rel.as_posix()):
                    log.warning("listing %s: skipped %r (a name locations may not hold)", uri, rel.as_posix())
                    continue
                refs.append(ObjectRef(self.uri_of(f), rel.as_posix(), f.stat().st_size))
            if not refs:
                raise errors.InputNotFound(uri, "the folder holds no files")
            return refs
        if uri.endswith("/") or not p.exists():
            raise errors.InputNotFound(uri, "no such file or folder")
        raise errors.InvalidInput(uri, "not a regular file or folder")

    def stage(self, ref: ObjectRef, scratch: Path) -> Path:
        p = self.path_of(ref.uri)
        if not p.is_file():
            raise errors.InputNotFound(ref.uri, "it disappeared while staging")
        return p

    def size(self, uri: str) -> int:
        p = self.path_of(uri)
        if not p.is_file():
            raise errors.ObjectNotFound(uri)
        return p.stat().st_size

    def open_read(self, uri: str, offset: int = 0) -> Iterator[bytes]:
        p = self.path_of(uri)
        if not p.is_file():
            raise errors.ObjectNotFound(uri)
        if self.root is None and "://" not in uri and Path(uri).is_absolute():
            p = Path(os.path.normpath(uri))  # as checked (callers resolve first): a link in it now is a swap
        try:  # opened without following a link on any component
            fd = locations.open_nofollow(p)
        except FileNotFoundError:
            raise errors.ObjectNotFound(uri) from None
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            while block := f.read(CHUNK):
                yield block

    def publish(self, files: builtins.list[tuple[Path, str]], dest: str) -> builtins.list[str]:
        dest_dir = self.path_of(dest.rstrip("/") or "/")
        check_staged(dest_dir, dest, what="output")  # resolved now: still where the job may write
        targets = [(src, dest_dir / name) for src, name in files]
        for _, target in targets:  # a link already in the folder must not carry a result elsewhere
            real = locations.real_path(str(target))
            if dest_dir not in real.parents:
                raise errors.PermissionDenied(f"output {locations.shown(str(target))} resolves outside {dest_dir}")
        clashes = [str(t) for _, t in targets if t.exists()]
        if clashes:
            raise errors.FailedPrecondition(
                f"output would overwrite existing results: {', '.join(clashes[:5])}"
                f"{' ...' if len(clashes) > 5 else ''}; choose a new output location"
            )
        token = uuid.uuid4().hex[:8]
        # Everything below, the output folder made too, goes through file descriptors of
        # folders opened without following links (from /, every component): a link swapped
        # into the output path after the check cannot carry a result (or a folder) into
        # another proposal's folder.
        try:
            root_fd = locations.open_folder_nofollow(dest_dir, create=True)
        except FileNotFoundError:
            raise errors.FailedPrecondition(f"output folder {locations.shown(str(dest_dir))} vanished") from None
        folders: dict[tuple[str, ...], int] = {(): root_fd}
        staged: list[tuple[int, str, str, Path]] = []
        done: list[tuple[int, str]] = []

        def folder_fd(parts: tuple[str, ...]) -> int:
            if parts not in folders:
                parent = folder_fd(parts[:-1])
                try:
                    os.mkdir(parts[-1], 0o777, dir_fd=parent)
                except FileExistsError:
                    pass
                try:
                    folders[parts] = os.open(
                        parts[-1], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent
                    )
                except (NotADirectoryError, OSError) as exc:
                    raise errors.PermissionDenied(
                        f"output {locations.shown('/'.join(parts))} in {dest_dir} is not a "
                        f"folder of its own ({exc.strerror or exc})"
                    ) from None
            return folders[parts]

        try:
            for src, target in targets:
                rel = target.relative_to(dest_dir).parts
                dfd = folder_fd(tuple(rel[:-1]))
                tmp = f".{rel[-1]}.{token}.partial"
                out = os.open(
                    tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dfd
                )
                staged.append((dfd, tmp, rel[-1], target))
                with open(src, "rb") as fin, os.fdopen(out, "wb") as fout:
                    shutil.copyfileobj(fin, fout, CHUNK)
                    fout.flush()
                    os.fsync(fout.fileno())
            for dfd, tmp, leaf, target in staged:
                try:
                    os.stat(leaf, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    pass
                else:
                    raise errors.FailedPrecondition(f"{target} appeared while publishing; not overwritten")
                os.replace(tmp, leaf, src_dir_fd=dfd, dst_dir_fd=dfd)
                done.append((dfd, leaf))
        except BaseException:
            for dfd, tmp, _, _ in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
            for dfd, leaf in done:
                with contextlib.suppress(OSError):
                    os.unlink(leaf, dir_fd=dfd)
            raise
        finally:
            for fd in folders.values():
                os.close(fd)
        return [self.uri_of(t) for _, t in targets]


class Stores:
    """The stores a server knows, by URI scheme."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.local = LocalStore()
        self.uploads = LocalStore(self.root / "uploads", scheme="upload")
        self.uploads_root: Path = (self.root / "uploads").resolve()  # the uploads store's root, never None
        self._by_scheme: dict[str, Store] = {"file": self.local, "": self.local, "upload": self.uploads}

    @classmethod
    def from_env(cls, root: Path | None = None, environ: Mapping[str, str] | None = None) -> Stores:
        """The stores a server's configuration names: the local folder (``root``, else
        ``$PANREDUCE_STORE``, else ``./panreduce-store``) and, when ``$PANREDUCE_S3_*`` or
        ``$PANREDUCE_S3_CONFIG`` configure one, ``s3://`` (see panreduce.s3)."""
        from panreduce.settings import settings_for

        settings = settings_for(environ)
        stores = cls(Path(root) if root is not None else settings.store)
        from panreduce.s3 import S3Config, S3Store

        config = S3Config.from_settings(settings)
        if config is not None:
            stores.register("s3", S3Store(config))
        return stores

    def register(self, scheme: str, store: Store) -> None:
        self._by_scheme[scheme] = store

    def for_uri(self, uri: str) -> Store:
        if not uri:
            raise errors.InvalidRequest("empty URI")
        scheme = urlparse(uri).scheme if "://" in uri else ""
        store = self._by_scheme.get(scheme)
        if store is None:
            raise errors.InvalidRequest(
                f"{uri}: no store is configured for {scheme}:// URIs on this server"
                f" (known: {', '.join(s + '://' for s in sorted(self._by_scheme) if s)} and local paths)"
            )
        return store

    @property
    def results_base(self) -> str:
        """Where jobs without an output go: ``$PANREDUCE_RESULTS_URI`` (e.g. an s3://
        prefix in a deployment), else ``<root>/results``."""
        from panreduce.settings import get_settings

        return get_settings().results_uri.rstrip("/") or str(self.root / "results")

    def default_output(self, job_id: str) -> str:
        return f"{self.results_base}/{job_id}"

    def scratch_uri(self, name: str) -> str:
        """A location every service can write and read for intermediate results (shards):
        ``$PANREDUCE_SCRATCH_URI``, else ``<root>/shards``."""
        from panreduce.settings import get_settings

        base = get_settings().scratch_uri.rstrip("/") or str(self.root / "shards")
        return f"{base}/{name}"

    def remove_tree(self, uri: str) -> None:
        """Delete everything under ``uri`` (intermediate results)."""
        store = self.for_uri(uri)
        if isinstance(store, LocalStore):
            shutil.rmtree(store.path_of(uri), ignore_errors=True)
        elif hasattr(store, "delete_prefix"):
            store.delete_prefix(uri.rstrip("/") + "/")

    def upload_target(self, name: str, namespace: str = "shared") -> tuple[Path, str]:
        """A fresh (local path, upload://NAMESPACE/ID/NAME URI) pair for an upload named
        ``name``; the namespace is the proposal the upload belongs to."""
        safe = Path(name).name or "data"
        if safe in (".", ".."):
            safe = "data"
        space = locations.upload_namespace(namespace)
        upload_id = uuid.uuid4().hex
        path = self.uploads_root / space / upload_id / safe
        return path, f"upload://{space}/{upload_id}/{safe}"


def stage_inputs(
    stores: Stores,
    uris: list[str],
    scratch: Path,
    *,
    max_bytes: int | None = None,
    on_file: Callable[[ObjectRef], object] | None = None,
    accept: Callable[[Path], bool] | None = None,
    on_skip: Callable[[str, str], object] | None = None,
) -> Inputs:
    """Stage every input URI into ``scratch`` and checksum it. ``accept(path)`` (a
    technique's ``accepts``) judges each file found in a folder input: the others are
    skipped, each named to ``on_skip(uri, why)``."""
    items: list[StagedInput] = []
    scratch.mkdir(parents=True, exist_ok=True)
    for uri in uris:
        store = stores.for_uri(uri)
        refs = store.list(uri)
        judge = accept if accept is not None and store.is_prefix(uri) else None
        skipped: list[str] = []
        staged: list[StagedFile] = []
        pending: list[tuple[ObjectRef, Path, str | Future[str]]] = []
        pool: ThreadPoolExecutor | None = None  # local files are checksummed side by side (hashlib drops the GIL)
        try:
            for ref in refs:
                if judge is not None and ref.size == 0:
                    skipped.append(ref.name)
                    if on_skip is not None:
                        on_skip(ref.uri, "empty (0 bytes)")
                    continue
                if ref.size == 0:
                    raise errors.InvalidInput(ref.uri, "the file is empty (0 bytes)")
                if max_bytes is not None and ref.size > max_bytes:
                    raise errors.InputTooLarge(ref.uri, ref.size, max_bytes)
                local = store.stage(ref, scratch / "inputs" / str(len(items)))
                if judge is not None and not judge(local):
                    skipped.append(ref.name)
                    if on_skip is not None:
                        on_skip(ref.uri, "not a file this technique reads")
                    if not isinstance(store, LocalStore):
                        local.unlink(missing_ok=True)  # a staged copy, not the file itself
                    continue
                digest: str | Future[str] | None = store.known_sha256(local)
                if isinstance(store, LocalStore):  # read in place: what every later open must find
                    check_staged(local, ref.uri)
                    if pool is None and len(refs) > 1 and HASH_THREADS > 1:
                        pool = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="sha256")
                    digest = (
                        pool.submit(_pinned_sha256, local, ref.uri)
                        if pool is not None
                        else _pinned_sha256(local, ref.uri)
                    )
                pending.append((ref, local, digest or sha256_file(local)))
            for ref, local, digest in pending:
                sha = digest.result() if isinstance(digest, Future) else digest
                staged.append(StagedFile(path=local, uri=ref.uri, name=ref.name, size=ref.size, sha256=sha))
                if on_file is not None:
                    on_file(ref)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        if not staged:
            shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            raise errors.InvalidInput(
                uri, f"none of its {len(skipped)} file(s) is one this technique reads (skipped {shown})"
            )
        prefix = store.is_prefix(uri)
        if prefix and isinstance(store, LocalStore):
            root = store.path_of(uri)  # files of the folder may be links to elsewhere
        elif prefix:
            first = staged[0]
            root = first.path
            for _ in Path(first.name).parts:
                root = root.parent
        else:
            root = staged[0].path
        items.append(StagedInput(uri=uri, root=root, is_prefix=prefix, files=tuple(staged)))
    return Inputs(tuple(items))


#: threads checksumming a folder's local files side by side (hashlib releases the GIL)
HASH_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
MAX_KNOWN_DIGESTS = 100_000
_DIGESTS: OrderedDict[tuple[str, int, int, int, int, int], str] = OrderedDict()
_DIGESTS_LOCK = threading.Lock()


def _stat_key(path: Path, st: os.stat_result) -> tuple[str, int, int, int, int, int]:
    """What identifies one version of a local file: its path, device and inode, size and
    modification and change times (ns). Any write changes the change time, which no
    unprivileged caller can set back."""
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _pinned_sha256(path: Path, uri: str) -> str:
    """Pin the resolved ``path`` (panreduce.locations.pin: readers then refuse any other
    file under that name) and checksum the very file pinned. A file this process has
    checksummed before, unchanged since (``_stat_key``: same path, inode, size, mtime and
    ctime), is not read again: its digest is remembered."""
    try:
        st = locations.pin(path)
        fd = locations.open_nofollow(path)
    except FileNotFoundError:
        raise errors.InputNotFound(uri, "it disappeared while staging") from None
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as f:
        before = os.fstat(f.fileno())
        if before.st_ino != st.st_ino:
            raise errors.PermissionDenied(f"{locations.shown(uri)} changed while it was staged")
        key = _stat_key(path, before)
        with _DIGESTS_LOCK:
            known = _DIGESTS.get(key)
        if known is not None:
            return known
        while block := f.read(CHUNK):
            h.update(block)
        digest = h.hexdigest()
        if _stat_key(path, os.fstat(f.fileno())) == key:  # not written to while it was read
            with _DIGESTS_LOCK:
                _DIGESTS[key] = digest
                while len(_DIGESTS) > MAX_KNOWN_DIGESTS:
                    _DIGESTS.popitem(last=False)
    return digest


def check_inputs_exist(stores: Stores, uris: list[str]) -> None:
    """Fail fast (NOT_FOUND / INVALID_ARGUMENT) before a job is queued."""
    for uri in uris:
        stores.for_uri(uri).list(uri)


def stage_paths(paths: list[Path | str]) -> Inputs:
    """Local files and folders staged as the kit stages them (read in place, checksummed;
    a folder brings every file under it): for running a technique in-process, in tests,
    notebooks and benchmarks."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="panreduce-stage-") as tmp:
        return stage_inputs(Stores(Path(tmp)), [str(Path(p).resolve()) for p in paths], Path(tmp) / "scratch")
