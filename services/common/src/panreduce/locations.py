"""One resolution of every location a caller names, before any check and any open.

A location is a URI (``file:///abs/path``, ``upload://NAMESPACE/ID/NAME``,
``s3://bucket/key``) or a plain local path. :func:`resolve` turns it, exactly once, into
a :class:`Location`:

1. percent-decode exactly once (``file://``, ``upload://`` and object-store URIs; a plain
   path is taken literally). A ``%`` still present afterwards (double encoding such as
   ``%252e``), NUL or other control characters, backslashes, a query or fragment,
   ``..`` segments and empty segments (``//``) are refused — never repaired;
2. normalise (``.`` segments dropped, relative plain paths made absolute);
3. local files: resolve symbolic links (a link loop is refused); ``upload://``: map the
   name into the uploads area of its namespace, and refuse anything that leaves it.

Prefix checks (:meth:`Location.within`) compare resolved locations component by
component (``/data/propA`` does not admit ``/data/propAB``), and callers open only
``Location.local`` (or pass on ``Location.uri``, which resolves to itself: no component
decodes a second time).

:func:`hdf5_references` lists what an HDF5 file refers to outside itself (external links,
virtual-dataset sources, external raw storage) without following any of it, and
:func:`check_hdf5_references` refuses a file whose references resolve outside the
allowed roots. No grpc here: the kit, the gateway and the CLI all use it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from panreduce import errors

if TYPE_CHECKING:
    import h5py

log = logging.getLogger("panreduce.locations")

LOCAL_SCHEMES = ("", "file")


@dataclass(frozen=True)
class Location:
    """A resolved location.

    ``scheme``: ``"file"`` for local files (plain paths too), ``"upload"``, or an object
    store's scheme. ``key``: for ``upload`` ``NAMESPACE/ID/NAME``, for object stores
    ``bucket/key`` (decoded, normalised), for files the resolved absolute path.
    ``local``: the resolved local path (files and uploads), else None.
    ``is_prefix``: the caller named a folder or prefix (a trailing ``/``)."""

    scheme: str
    key: str
    local: Path | None
    is_prefix: bool

    @property
    def uri(self) -> str:
        """The canonical form to pass on: resolving it again gives this location."""
        tail = "/" if self.is_prefix and not self.key.endswith("/") else ""
        if self.scheme == "file":
            return self.key + tail
        return f"{self.scheme}://{self.key}{tail}"

    @property
    def namespace(self) -> str:
        """The first component of the key (an upload's proposal, an object's bucket)."""
        return self.key.split("/", 1)[0] if self.scheme != "file" else ""

    def within(self, prefix: Location) -> bool:
        """This location is ``prefix`` or lies under it (whole components only)."""
        if self.scheme != prefix.scheme:
            return False
        if self.local is not None and prefix.local is not None:
            return self.local == prefix.local or prefix.local in self.local.parents
        mine = [p for p in self.key.split("/") if p]
        theirs = [p for p in prefix.key.split("/") if p]
        return mine[: len(theirs)] == theirs


def shown(value: object, limit: int = 200) -> str:
    """Caller text as echoed in an error: at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _show(uri: str) -> str:
    return shown(repr(uri))


def _check_controls(text: str, uri: str, *, decoded: bool) -> None:
    bad = next((c for c in text if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise errors.InvalidRequest(
            f"location {_show(uri)} contains a control character "
            f"(U+{ord(bad):04X}{', after decoding' if decoded else ''})"
        )


def _check_text(text: str, uri: str, *, decoded: bool) -> None:
    _check_controls(text, uri, decoded=decoded)
    if "%" in text:
        raise errors.InvalidRequest(
            f"location {_show(uri)}: a '%' is left after decoding once (double-encoded?); "
            "percent-encoding is decoded exactly once"
            if decoded
            else f"location {_show(uri)}: a plain path may not contain '%' (use a file:// URI, encoded once)"
        )
    if "\\" in text:
        raise errors.PermissionDenied(f"location {_show(uri)}: backslashes are not allowed")


def _segments(path: str, uri: str) -> list[str]:
    """The path's segments with '.' dropped; '..' and empty inner segments refused."""
    parts = path.split("/")
    inner = parts[1:-1] if path.startswith("/") else parts[:-1]
    if any(p == ".." for p in parts):
        raise errors.PermissionDenied(f"location {_show(uri)}: '..' segments are not allowed (after decoding)")
    if any(p == "" for p in inner):
        raise errors.InvalidRequest(f"location {_show(uri)}: empty path segments ('//') are not allowed")
    return [p for p in parts if p not in ("", ".")]


def real_path(path: str, uri: str | None = None) -> Path:
    """``path`` with every symbolic link resolved. A location that does not exist yet
    (an output) resolves as far as it exists; a link loop is refused."""
    try:
        return Path(os.path.realpath(path, strict=True))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return Path(os.path.realpath(path))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise errors.InvalidRequest(f"location {_show(uri or path)}: a symbolic link loop") from None
        raise errors.InvalidRequest(
            f"location {_show(uri or path)} cannot be resolved ({exc.strerror or exc})"
        ) from None


# -- opening what was checked (no symbolic link swapped in between) -----------------------
_PINS: OrderedDict[str, tuple[int, int]] = OrderedDict()
_PINS_LOCK = threading.Lock()
MAX_PINS = 100_000


def _swapped(path: Path | str) -> errors.PermissionDenied:
    return errors.PermissionDenied(
        f"{shown(str(path))} changed while it was opened (a symbolic link appeared "
        "after it was resolved and checked); it is not followed"
    )


def open_nofollow(path: Path | str, flags: int = os.O_RDONLY) -> int:
    """A file descriptor of the resolved absolute ``path``, opened component by component
    from ``/`` without following any symbolic link (O_NOFOLLOW on every component): a
    link swapped into the path after it was resolved and checked is refused
    (PermissionDenied), never followed. FileNotFoundError when it is gone."""
    p = Path(path)
    if not p.is_absolute():
        raise errors.InvalidRequest(f"{shown(str(path))}: not an absolute path")
    parts = p.parts[1:]
    if not parts:
        raise errors.InvalidRequest("'/' is a folder, not a file")
    dirfd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            except NotADirectoryError:  # a link (O_NOFOLLOW) or a file where a folder was
                raise _swapped(path) from None
            os.close(dirfd)
            dirfd = nxt
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _swapped(path) from None
            raise
    finally:
        os.close(dirfd)


def open_folder_nofollow(path: Path | str, *, create: bool = False) -> int:
    """A descriptor (O_RDONLY | O_DIRECTORY) of the resolved absolute folder ``path``,
    walked from ``/`` without following any link; ``create``: missing folders are made
    on the way (each inside the folder just opened, so never through a link swapped in)."""
    p = Path(path)
    if not p.is_absolute():
        raise errors.InvalidRequest(f"{shown(str(path))}: not an absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in p.parts[1:]:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except (NotADirectoryError, OSError) as exc:
                if isinstance(exc, FileNotFoundError):
                    raise
                if isinstance(exc, NotADirectoryError) or exc.errno == errno.ELOOP:
                    raise _swapped(path) from None
                raise
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


def pin(path: Path | str) -> os.stat_result:
    """Record which file the resolved ``path`` is now (opened without following links, see
    :func:`open_nofollow`), so that every later open of it by name can be checked to be
    that very file (:func:`check_opened`). Returns its stat."""
    fd = open_nofollow(path)
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    with _PINS_LOCK:
        _PINS[str(path)] = (st.st_dev, st.st_ino)
        _PINS.move_to_end(str(path))
        while len(_PINS) > MAX_PINS:
            _PINS.popitem(last=False)
    return st


def check_opened(path: Path | str, fd: int) -> None:
    """Refuse (PermissionDenied) when ``fd``, opened by the name ``path``, is not the file
    :func:`pin` recorded for that name: a link was swapped in between (for a name never
    pinned there is nothing to compare)."""
    with _PINS_LOCK:
        expected = _PINS.get(str(path))
    if expected is None:
        return
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != expected:
        log.warning("refused %s: not the file that was checked (swapped)", path)
        raise _swapped(path)


def check_opened_hdf5(path: Path | str, f: h5py.File) -> None:
    """:func:`check_opened` for an open h5py file (its low-level file descriptor)."""
    try:
        handle = f.id.get_vfd_handle()
    except (AttributeError, ValueError, OSError, RuntimeError):
        return  # a driver without one (in-memory, file object): not opened by name
    if isinstance(handle, int):
        check_opened(path, handle)


def resolve(uri: str, *, roots: Mapping[str, Path] | None = None, cwd: Path | None = None) -> Location:
    """Resolve ``uri`` once (see the module docstring).

    ``roots`` maps a scheme to the local folder that holds its objects (``upload`` to the
    uploads area); such a location's ``local`` is inside that folder, resolved, and
    anything that leaves the folder (of its namespace) is refused. ``cwd``: the folder
    relative plain paths are relative to (default: the process's)."""
    if not isinstance(uri, str) or not uri:
        raise errors.InvalidRequest("empty location")
    if "://" not in uri:  # a plain local path, taken literally
        _check_text(uri, uri, decoded=False)
        segments = _segments(uri, uri)
        absolute = "/" + "/".join(segments) if uri.startswith("/") else str((cwd or Path.cwd()).joinpath(*segments))
        local: Path | None = real_path(absolute, uri)
        return Location("file", str(local), local, uri.endswith("/") or str(local) == "/")
    _check_controls(uri, uri, decoded=False)  # urlsplit would drop a raw tab or newline: never repaired
    try:
        parts = urlsplit(uri)
    except ValueError as exc:
        raise errors.InvalidRequest(f"location {_show(uri)} is not a valid URI ({exc})") from None
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise errors.InvalidRequest(f"location {_show(uri)}: a query or fragment ('?', '#') is not allowed")
    scheme = parts.scheme.lower()
    try:
        netloc = unquote(parts.netloc, errors="strict")
        path = unquote(parts.path, errors="strict")
    except UnicodeDecodeError:
        raise errors.InvalidRequest(f"location {_show(uri)}: percent-encoding that is not UTF-8") from None
    for text in (netloc, path):
        _check_text(text, uri, decoded=True)
        if "?" in text or "#" in text:
            raise errors.InvalidRequest(f"location {_show(uri)}: '?' and '#' are not allowed, encoded or not")
    is_prefix = path.endswith("/") or (not path and bool(netloc))
    if scheme == "file":
        if netloc not in ("", "localhost"):
            raise errors.InvalidRequest(f"location {_show(uri)}: a file:// URI names no host (file:///abs/path)")
        if not path.startswith("/"):
            raise errors.InvalidRequest(f"location {_show(uri)}: a file:// URI needs an absolute path")
        local = real_path("/" + "/".join(_segments(path, uri)), uri)
        return Location("file", str(local), local, is_prefix or str(local) == "/")
    if not netloc or "/" in netloc or netloc in (".", ".."):
        if netloc in ("..",):
            raise errors.PermissionDenied(f"location {_show(uri)}: '..' segments are not allowed (after decoding)")
        raise errors.InvalidRequest(f"location {_show(uri)}: {scheme}:// needs a {scheme} name after '//'")
    segments = _segments(path or "/", uri) if path else []
    is_prefix = is_prefix or not segments  # the whole namespace or bucket
    key = "/".join([netloc, *segments])
    root = (roots or {}).get(scheme)
    local = None
    if root is not None:
        area = real_path(str(Path(root) / netloc))
        local = real_path(str(area.joinpath(*segments)) if segments else str(area), uri)
        if local != area and area not in local.parents:
            raise errors.PermissionDenied(f"location {_show(uri)} leaves the {scheme} area of {netloc!r}")
    return Location(scheme, key, local, is_prefix)


def upload_area_name(proposal: str) -> str | None:
    """:func:`upload_namespace`, or None for a proposal that cannot hold uploads (a job's
    scope then has no uploads area)."""
    space = proposal or "shared"
    return space if all(c.isalnum() or c in "-_." for c in space) and space.strip(".") else None


def upload_namespace(proposal: str) -> str:
    """The upload area (``upload://NAMESPACE/...``) of ``proposal``: the proposal itself,
    verbatim, or FailedPrecondition. Never a cleaned-up form: uploads are matched to their
    proposal by this name, and cleaning made proposals 'AB/1' and 'AB1' share one area
    (each reading the other's uploads) and put proposal '..''s uploads outside the area."""
    space = upload_area_name(proposal)
    if space is not None:
        return space
    raise errors.FailedPrecondition(
        f"proposal {shown(repr(proposal), 80)} cannot hold uploads: an upload area is named by "
        "letters, digits, '-', '_' and '.' only (not all dots); ask the facility to map the proposal"
    )


def resolve_prefixes(templates: Iterable[str], proposal: str, **kw: Any) -> list[Location]:
    """The locations a proposal's prefix templates (``/data/{proposal}/``) name, resolved."""
    out = []
    if proposal and (proposal in (".", "..") or any(c in proposal for c in "/\\%") or not proposal.isprintable()):
        # the name fills one path component: '.' was the whole tree above it, 'AB/1' a
        # folder inside proposal AB's, 'AB%2f1' the same once an s3:// URI is decoded
        raise errors.PermissionDenied(
            f"proposal {shown(repr(proposal), 80)} cannot name a location: a proposal fills one path "
            "component of the allowed prefixes (no '/', '\\', '%', control characters; not '.' or '..')"
        )
    for t in templates:
        if not proposal:  # no proposal (access off): the part of the template above it
            t = t.split("{proposal}", 1)[0] or "/"
        loc = resolve(t.format(proposal=proposal), **kw)
        out.append(Location(loc.scheme, loc.key, loc.local, True))
    return out


def is_within_any(location: Location, prefixes: Iterable[Location]) -> bool:
    return any(location.within(p) for p in prefixes)


# -- HDF5 references ----------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """Something an HDF5 file refers to outside itself: ``kind`` is ``external link``,
    ``virtual source`` or ``external storage``; ``target`` the file name as written."""

    kind: str
    where: str  # the object in the file
    target: str


MAX_REFERENCE_OBJECTS = 1_000_000  # links visited when listing references


#: a file unchanged for this long (mtime and ctime) has its references listed once per
#: process: a job's catalogue read and its technique's reader open the same inputs, and
#: the walk opens every object (~11 ms of a 350-object I16 scan file)
REFERENCES_STABLE_S = 2.0
_REFERENCES_CACHE: OrderedDict[tuple[int, ...], tuple[int, tuple[Reference, ...]]] = OrderedDict()
_REFERENCES_CACHE_SIZE = 1024
_references_lock = threading.Lock()


def _opened_identity(f: Any) -> tuple[int, ...] | None:
    """(device, inode, size, mtime, ctime) of the file ``f`` has open read-only, when it has
    not changed for REFERENCES_STABLE_S (None: not cacheable; a file being written, another
    driver). Any write changes ctime, which no caller can set back."""
    try:
        if f.mode != "r":
            return None
        st = os.fstat(f.id.get_vfd_handle())
    except (AttributeError, OSError, RuntimeError, ValueError, TypeError):
        return None
    now_ns = time.time_ns()
    if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) < REFERENCES_STABLE_S * 1e9:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hdf5_references(f: Any, *, max_objects: int = MAX_REFERENCE_OBJECTS) -> list[Reference]:
    """Every external link, virtual-dataset source file and external storage file of the
    open h5py file ``f``, found without following any of them (each object once). The
    list of an unchanged file is remembered (see REFERENCES_STABLE_S); what the names
    resolve to is the caller's to check each time."""
    key = _opened_identity(f)
    if key is not None:
        with _references_lock:
            hit = _REFERENCES_CACHE.get(key)
            if hit is not None:
                _REFERENCES_CACHE.move_to_end(key)
        if hit is not None:
            if hit[0] > max_objects:
                raise errors.InputTooLarge(f.filename, hit[0], max_objects)
            return list(hit[1])
    count, refs = _list_references(f, max_objects)
    if key is not None:
        with _references_lock:
            _REFERENCES_CACHE[key] = (count, tuple(refs))
            while len(_REFERENCES_CACHE) > _REFERENCES_CACHE_SIZE:
                _REFERENCES_CACHE.popitem(last=False)
    return refs


def _list_references(f: Any, max_objects: int) -> tuple[int, list[Reference]]:
    import h5py
    from h5py import h5d, h5l, h5o

    refs: list[Reference] = []
    seen: set[tuple[int, int]] = set()
    count = 0

    def visit(name: bytes, info: Any) -> None:
        nonlocal count
        count += 1
        if count > max_objects:
            raise errors.InputTooLarge(f.filename, count, max_objects)
        text = name.decode("utf-8", "replace")
        if info.type == h5l.TYPE_EXTERNAL:
            target, _ = f.id.links.get_val(name)
            refs.append(Reference("external link", "/" + text, target.decode("utf-8", "replace")))
            return
        if info.type != h5l.TYPE_HARD:
            return
        try:
            obj = h5o.open(f.id, name)
        except (KeyError, RuntimeError, OSError):
            return
        oinfo = h5o.get_info(obj)
        token = (oinfo.fileno, oinfo.addr)
        if token in seen:
            return
        seen.add(token)
        if isinstance(obj, h5d.DatasetID):
            dcpl = obj.get_create_plist()
            if dcpl.get_layout() == h5d.VIRTUAL:
                for i in range(dcpl.get_virtual_count()):
                    src = dcpl.get_virtual_filename(i)
                    if src != ".":
                        refs.append(Reference("virtual source", "/" + text, src))
            for i in range(dcpl.get_external_count()):
                refs.append(
                    Reference("external storage", "/" + text, dcpl.get_external(i)[0].decode("utf-8", "replace"))
                )

    f.id.links.visit(visit, info=True)
    del h5py
    return count, refs


def _candidates(target: str, parent: Path) -> list[Path]:
    """Where the HDF5 library may look for ``target`` (a name written in a file in
    ``parent``): the name as written (relative names: to the working folder and to the
    file's folder) and, for an absolute name, its last component next to the file."""
    t = Path(target)
    out = [t] if t.is_absolute() else [Path.cwd() / t, parent / t]
    if t.is_absolute():
        out.append(parent / t.name)
    for var in ("HDF5_EXT_PREFIX", "HDF5_VDS_PREFIX", "HDF5_EXTFILE_PREFIX"):
        for prefix in filter(None, os.environ.get(var, "").split(":")):
            out.append(Path(prefix) / (t.name if t.is_absolute() else t))
    return out


def check_hdf5_references(
    f: Any, path: Path | str, roots: Iterable[Path], *, source: str | None = None, depth: int = 4
) -> None:
    """Refuse (PermissionDenied) an HDF5 file whose external links, virtual-dataset
    sources or external raw storage could resolve outside ``roots`` (resolved folders),
    checking linked HDF5 files the same way, ``depth`` files deep. A name the library
    would look up under several folders must be safe in every one that exists; a name
    with a printf-style pattern (``%b``) cannot be checked and is refused."""
    import h5py

    roots = [real_path(str(r)) for r in roots]
    name = source or Path(path).name
    pending = [(f, Path(path), 0)]
    checked: set[Path] = set()
    opened = []
    try:
        while pending:
            handle, file_path, level = pending.pop()
            parents = {Path(os.path.abspath(Path(file_path).parent)), real_path(str(Path(file_path).parent))}
            for ref in hdf5_references(handle):
                if "%" in ref.target and ref.kind == "virtual source":
                    raise errors.PermissionDenied(
                        f"{name}: {ref.kind} of {ref.where} names a file pattern "
                        f"{shown(ref.target, 120)!r}, which is not followed"
                    )
                workdir = {Path.cwd() / ref.target} if not Path(ref.target).is_absolute() else set()
                for cand in {c for parent in parents for c in _candidates(ref.target, parent)}:
                    real = real_path(str(cand))
                    if not real.exists():  # the library cannot open it there now
                        if cand not in workdir and not _may_appear(real, roots):
                            # a file made there after this check (another proposal's, in the gap
                            # before the reader follows the name) would be read: refused as if it were
                            log.warning(
                                "refused %s: %s of %s names a missing file outside the caller's locations",
                                name,
                                ref.kind,
                                ref.where,
                            )
                            raise errors.PermissionDenied(
                                f"{name}: the {ref.kind} of {ref.where} names a file that does not exist, in a "
                                "folder outside the locations this request may read; it is not followed"
                            )
                        continue
                    if not any(real == r or r in real.parents for r in roots):
                        log.warning(
                            "refused %s: %s of %s points outside the caller's locations", name, ref.kind, ref.where
                        )
                        raise errors.PermissionDenied(
                            f"{name}: the {ref.kind} of {ref.where} points outside the locations this "
                            "request may read; it is not followed"
                        )
                    if real.is_file() and real not in checked and ref.kind != "external storage":
                        checked.add(real)
                        if level + 1 > depth:
                            raise errors.PermissionDenied(f"{name}: external files nest more than {depth} deep")
                        try:
                            other = h5py.File(real, "r")
                        except OSError:
                            continue
                        opened.append(other)
                        pending.append((other, real, level + 1))
    finally:
        for o in opened:
            o.close()


def _may_appear(missing: Path, roots: list[Path]) -> bool:
    """Whether a file that does not exist at ``missing`` (resolved as far as it exists) is
    harmless to name: its nearest existing folder is one of ``roots``, inside one, or a folder
    above them (``/``, the data tree: a file there is no other proposal's). A missing file
    in another proposal's folder is not."""
    folder = next((p for p in missing.parents if p.exists()), Path("/"))
    return any(folder == r or r in folder.parents or folder in r.parents for r in roots)


def hdf5_roots(path: Path | str, extra: Iterable[Path] = ()) -> list[Path]:
    """The folders an HDF5 file's references may resolve into by default: the file's own
    folder (as named and resolved) plus ``extra``."""
    p = Path(path)
    return [real_path(str(p.parent)), real_path(str(p.resolve().parent)), *extra]


# -- other files an input names (every reader, whatever library it uses) ---------------
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
EDF_STARTS = (b"{", b"\r{", b"\n{")
_EDF_KEY = b"EDF_BinaryFileName"
_OME_NAME = re.compile(r"""\b(?:FileName|MetadataFile)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _refuse_outside(name: str, kind: str, target: str, candidates: Iterable[Path], roots: list[Path]) -> None:
    for cand in candidates:
        real = real_path(str(cand))
        if not any(real == r or r in real.parents for r in roots):
            log.warning("refused %s: its %s %r points outside the caller's locations", name, kind, shown(target, 120))
            raise errors.PermissionDenied(
                f"{name}: its {kind} {shown(target, 120)!r} points outside the locations this request may read; "
                "it is not followed"
            )


def _open_pinned(path: Path) -> Any:
    """``open(path, "rb")``, refused when it is not the file staging checked (a link
    swapped in since: :func:`check_opened`)."""
    fh = open(path, "rb")  # returned to the caller's with
    try:
        check_opened(path, fh.fileno())
    except BaseException:
        fh.close()
        raise
    return fh


#: bytes of a compressed EDF (.edf.gz, .edf.bz2: fabio decompresses by the suffix)
#: scanned for EDF_BinaryFileName; a larger one is refused (a decompression bomb)
MAX_COMPRESSED_EDF_BYTES = 4 << 30


def _edf_names(fh: Any, name: str) -> list[str]:
    """The EDF_BinaryFileName values anywhere in the EDF stream ``fh`` (fabio reads the
    binary data of a frame from that file, taken by its last component, in the EDF's
    folder)."""
    names: list[str] = []
    tail = b""
    total = 0
    while chunk := fh.read(1 << 20):
        total += len(chunk)
        if total > MAX_COMPRESSED_EDF_BYTES:
            raise errors.InputTooLarge(name, total, MAX_COMPRESSED_EDF_BYTES)
        block = tail + chunk
        start = 0
        while (i := block.find(_EDF_KEY, start)) >= 0:
            end = block.find(b";", i)
            if end < 0 and len(block) - i < 4096:
                break  # the value continues in the next chunk
            value = block[i + len(_EDF_KEY) : end if end >= 0 else i + 4096]
            names.append(value.split(b"=", 1)[-1].strip().decode("latin-1"))
            start = i + 1
        tail = block[max(start, len(block) - 4096) :]
    return names


def _edf_stream_names(path: Path, head: bytes, name: str) -> list[str]:
    """:func:`_edf_names` of an EDF file, plain or gzip/bzip2-compressed."""
    import bz2
    import gzip

    with _open_pinned(path) as raw:
        if head.startswith(b"\x1f\x8b"):
            fh: Any = gzip.GzipFile(fileobj=raw)
        elif head.startswith(b"BZh"):
            fh = bz2.BZ2File(raw)
        else:
            return _edf_names(raw, name)
        try:
            with fh:
                if not fh.read(8).lstrip(b"\r\n").startswith(b"{"):
                    return []
                return _edf_names(fh, name)
        except (OSError, EOFError, ValueError):
            return []  # damaged: its reader reports it


def _tiff_references(path: Path) -> tuple[list[str], bool]:
    """(file names an OME-TIFF's XML names: TiffData UUID FileName, BinaryOnly
    MetadataFile; whether tifffile reads sibling files by name: Micro-Manager stacks and
    NDTiff), read without opening any of them."""
    try:
        import tifffile
    except ImportError:  # no reader here could open it with tifffile either
        return [], False
    try:
        with _open_pinned(path) as fh, tifffile.TiffFile(fh, _multifile=False) as tif:
            first = tif.pages.first
            description = first.description if first is not None else ""
            siblings = bool(tif.is_mmstack or tif.is_ndtiff)
    except errors.PermissionDenied:
        raise
    except Exception:  # a damaged TIFF: its readers report it
        return [], False
    names = [a or b for a, b in _OME_NAME.findall(description)] if "OME" in description else []
    return names, siblings


def check_file_references(path: Path | str, roots: Iterable[Path], *, source: str | None = None) -> None:
    """Refuse (PermissionDenied) an input that names another file outside ``roots``
    (resolved folders), by what it holds rather than by which reader opens it: HDF5
    external links, virtual sources and external storage (:func:`check_hdf5_references`);
    an EDF frame's ``EDF_BinaryFileName`` (fabio); an OME-TIFF's other files and
    companion metadata, and the sibling files of Micro-Manager and NDTiff stacks
    (tifffile); a Merlin ``.mib``'s ``.hdr`` next to it. Each named file is resolved
    (links followed) as the library would find it; nothing outside is opened."""
    p = Path(path)
    name = source or p.name
    roots = [real_path(str(r)) for r in roots]
    try:
        with _open_pinned(p) as fh:
            head = fh.read(8)
    except OSError:
        return  # unreadable: the technique's reader names it
    folder = p.parent
    import h5py

    # not by the first bytes alone: HDF5 finds its signature after a user block (512,
    # 1024, ... bytes) whatever comes first, and h5py opens such a file, a TIFF or EDF
    # polyglot included; so every check that applies is made
    if head == b"\x89HDF\r\n\x1a\n" or h5py.is_hdf5(p):
        try:
            f = h5py.File(p, "r")
        except OSError:
            f = None  # damaged: its reader reports it
    else:
        f = None
    if f is not None:
        with f:
            check_opened_hdf5(p, f)  # the very file staging checked (no link swapped in)
            try:
                check_hdf5_references(f, p, roots, source=name)
            except (OSError, RuntimeError) as exc:
                raise errors.InvalidInput(name, f"is a damaged HDF5 file: its links cannot be listed ({exc})") from None
    if head.startswith((*EDF_STARTS, b"\x1f\x8b", b"BZh")):
        for target in _edf_stream_names(p, head, name):
            for base in {os.path.basename(target), Path(target.replace("\\", "/")).name} - {""}:
                cands = [folder / base, *(folder / (base + z) for z in (".gz", ".bz2"))]
                _refuse_outside(name, "EDF_BinaryFileName", target, cands, roots)
    elif head.startswith(TIFF_SIGNATURES):
        names, siblings = _tiff_references(p)
        for target in names:
            _refuse_outside(name, "OME-TIFF file name", target, [folder / target], roots)
        if siblings:
            with contextlib.suppress(OSError):
                others = [folder / n for n in os.listdir(folder)]
                _refuse_outside(name, "stack's sibling file", "(a file of its folder)", others, roots)
    elif head.startswith(b"MQ1,"):
        _refuse_outside(name, "header", p.with_suffix(".hdr").name, [p.with_suffix(".hdr")], roots)
