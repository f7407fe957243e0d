"""The caller's locations, passed by the gateway to a technique service and checked there
too (defence in depth: a service does not rely on the gateway's check alone).

The gateway resolves the locations a job may touch (the proposal's prefixes, its uploads
area, the job's default output and shard scratch; panreduce.locations) and sends them
with every Reduce and Submit as the ``x-panreduce-scope`` metadata: a JSON list of
resolved locations, or ``*`` for a caller restricted to nothing (access control off
without prefixes, or a facility admin acting for no proposal). The service resolves
every input (each file of a folder too), the output, and every Download and
GetMetadata location again, and refuses, PERMISSION_DENIED, what lies outside.

The scope is trusted only on a call that passed the service credential (the service
token, or mTLS): a service that has one requires the scope on those RPCs, so a holder
of the credential who leaves it out is refused, and one who names another proposal's
path under the scope it was given is refused as well. No grpc here.
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from panreduce import errors, locations

if TYPE_CHECKING:
    from panreduce.storage import Stores
    from panreduce.v1 import reduce_pb2 as pb

SCOPE_HEADER = "x-panreduce-scope"
ANYWHERE = "*"
MAX_SCOPE_CHARS = 16_384
MAX_SCOPE_ENTRIES = 64
SCOPED_METHODS = ("Reduce", "Submit", "Download", "GetMetadata")


def _under(loc: locations.Location, p: locations.Location) -> bool:
    if loc.local is not None and p.local is not None:
        return loc.local == p.local or p.local in loc.local.parents
    return loc.within(p)


def _resolved(uris: Iterable[str]) -> tuple[locations.Location, ...]:
    out = []
    for uri in uris:
        loc = locations.resolve(uri)
        out.append(locations.Location(loc.scheme, loc.key, loc.local, True))
    return tuple(out)


def _uris(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(u, str) and u for u in value):
        raise errors.InvalidRequest(f"{SCOPE_HEADER}: {what} must be a JSON list of locations")
    if len(value) > MAX_SCOPE_ENTRIES:
        raise errors.InvalidRequest(f"{SCOPE_HEADER}: {len(value)} locations (at most {MAX_SCOPE_ENTRIES})")
    return value


@dataclass(frozen=True)
class Scope:
    """Resolved locations a call may touch: under one of ``prefixes`` (None: anywhere),
    and not under one of ``denied`` unless under one of ``excepted`` (the gateway's own
    store is denied to a proposal's job, its uploads area and the job's output excepted)."""

    prefixes: tuple[locations.Location, ...] | None
    denied: tuple[locations.Location, ...] = ()
    excepted: tuple[locations.Location, ...] = ()

    @classmethod
    def anywhere(cls) -> Scope:
        return cls(None)

    @classmethod
    def of(cls, uris: Iterable[str], *, denied: Iterable[str] = (), excepted: Iterable[str] = ()) -> Scope:
        """The scope of these locations, each resolved once (as a prefix)."""
        return cls(_resolved(uris), _resolved(denied), _resolved(excepted))

    @classmethod
    def anywhere_but(cls, denied: Iterable[str], excepted: Iterable[str] = ()) -> Scope:
        return cls(None, _resolved(denied), _resolved(excepted))

    @property
    def restricts(self) -> bool:
        return self.prefixes is not None or bool(self.denied)

    def encode(self) -> str:
        """The metadata value (ASCII): ``*``, a JSON list of resolved locations, or with a
        denied part ``{"allow": "*" | [...], "deny": [...], "except": [...]}``."""
        if not self.restricts:
            return ANYWHERE
        allow = ANYWHERE if self.prefixes is None else [p.uri for p in self.prefixes]
        if not self.denied:
            return json.dumps(allow, ensure_ascii=True, separators=(",", ":"))
        return json.dumps(
            {"allow": allow, "deny": [p.uri for p in self.denied], "except": [p.uri for p in self.excepted]},
            ensure_ascii=True,
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> Scope:
        """The scope a metadata value names; a malformed one is refused (never INTERNAL)."""
        if text == ANYWHERE:
            return cls.anywhere()
        if len(text) > MAX_SCOPE_CHARS:
            raise errors.InvalidRequest(f"{SCOPE_HEADER}: {len(text)} characters (at most {MAX_SCOPE_CHARS})")
        try:
            doc = json.loads(text)
        except ValueError:
            raise errors.InvalidRequest(f"{SCOPE_HEADER} is neither '*' nor a JSON list of locations") from None
        if isinstance(doc, dict):
            if set(doc) - {"allow", "deny", "except"} or "allow" not in doc:
                raise errors.InvalidRequest(f"{SCOPE_HEADER}: an object has 'allow', 'deny' and 'except' only")
            allow = doc["allow"]
            prefixes = None if allow == ANYWHERE else _resolved(_uris(allow, "allow"))
            return cls(
                prefixes,
                _resolved(_uris(doc.get("deny", []), "deny")),
                _resolved(_uris(doc.get("except", []), "except")),
            )
        return cls(_resolved(_uris(doc, "the scope")))

    def admits(self, loc: locations.Location) -> bool:
        """``loc`` (resolved) is in the scope, compared component by component: local
        paths by their resolved path (an upload's area is a local folder), other
        locations by scheme and key."""
        if any(_under(loc, e) for e in self.excepted):
            return True
        if any(_under(loc, d) for d in self.denied):
            return False
        return self.prefixes is None or any(_under(loc, p) for p in self.prefixes)

    def _refuse(self, uri: str, what: str, detail: str = "") -> errors.PermissionDenied:
        return errors.PermissionDenied(
            f"{what} {locations.shown(uri)}{detail} is outside the locations the gateway gave this call"
        )

    def check(
        self, stores: Stores, uri: str, what: str = "location", *, each_file: bool = False
    ) -> locations.Location | None:
        """Refuse ``uri`` (resolved by its store, exactly as it is opened) outside the
        scope; ``each_file``: a local folder's files one by one (a link inside it must
        not lead out). Returns the resolved location checked (None: anywhere, unchecked)."""
        if not self.restricts:
            return None
        from panreduce.storage import LocalStore

        store = stores.for_uri(uri)
        if isinstance(store, LocalStore):
            loc = store.location(uri.rstrip("/") or "/") if what == "output" else store.location(uri)
        else:
            loc = locations.resolve(uri)
        if not self.admits(loc):
            raise self._refuse(uri, what)
        if each_file and isinstance(store, LocalStore) and loc.local is not None and loc.local.is_dir():
            for ref in store.list(uri):
                inner = store.location(ref.uri)
                if not self.admits(inner):
                    raise self._refuse(uri, what, f": {locations.shown(ref.name)} (a link?)")
        return loc

    def check_request(self, stores: Stores, request: pb.ReduceRequest) -> None:
        """Every input (and each file of an input folder) and the output of a ReduceRequest."""
        if not self.restricts:
            return
        for uri in request.inputs:
            self.check(stores, uri, "input", each_file=True)
        if request.output:
            self.check(stores, request.output, "output")


def scope_of(metadata: Iterable[tuple[str, str | bytes]] | None, *, required: bool = False) -> Scope:
    """The scope a call's metadata carries; without one: anywhere, or PermissionDenied
    when ``required`` (a service with a credential serves only scoped data calls)."""
    for key, value in metadata or ():
        if key == SCOPE_HEADER:
            return Scope.decode(value.decode("ascii", "replace") if isinstance(value, bytes) else value)
    if required:
        raise errors.PermissionDenied(f"this service needs the caller's locations ({SCOPE_HEADER}) from its gateway")
    return Scope.anywhere()


def job_scope(
    prefixes: Iterable[locations.Location] | None, *, uploads: Path | None, proposal: str, extra: Iterable[str] = ()
) -> Scope:
    """What the gateway sends for a job: the proposal's prefixes (None: anywhere), its
    uploads area, and ``extra`` locations (the job's default output and shard scratch)."""
    if prefixes is None:
        return Scope.anywhere()
    uris = [p.uri for p in prefixes]
    space = locations.upload_area_name(proposal)
    if uploads is not None and space is not None:  # the folder Stores.upload_target puts them in
        uris.append(str(Path(uploads) / space) + "/")
    uris.extend(extra)
    return Scope.of(uris)


# -- the scope of the job running in this thread (checked again when its inputs are staged)
_CURRENT: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("panreduce_scope", default=None)


@contextmanager
def active(scope: Scope | None) -> Iterator[None]:
    """Make ``scope`` the one :func:`check_staged` applies while a job runs here."""
    token = _CURRENT.set(scope)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def check_staged(path: Path, uri: str, what: str = "input") -> None:
    """Refuse a local ``path`` a job resolved just now (an input before it is pinned and
    read, the output folder before it is written) that lies outside the running job's
    scope: a link swapped in after the submission's check."""
    scope = _CURRENT.get()
    if scope is None or not scope.restricts:
        return
    if not scope.admits(locations.Location("file", str(path), Path(path), False)):
        raise errors.PermissionDenied(
            f"{what} {locations.shown(uri)} now resolves outside the locations the gateway "
            "gave this job (changed since it was checked); it is not "
            f"{'written' if what == 'output' else 'read'}"
        )
