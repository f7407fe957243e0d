"""Who is calling, and what they may touch: bearer tokens and proposal scopes.

Callers send ``authorization: Bearer TOKEN``. A token is either a static token from a
file (embedded mode, service accounts) or an OIDC JWT verified against a configured
JWKS (signature, expiry, issuer, audience). Either way it yields an :class:`Identity`:
a subject and the proposals it belongs to. Every job and object belongs to one proposal;
a caller sees only its own proposals' jobs and data, and may name only URIs under the
prefixes configured for its proposals (no ``..``, no other buckets).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pydantic

from panreduce import audit, errors, locations

if TYPE_CHECKING:
    from panreduce.settings import Settings


@dataclass(frozen=True)
class Identity:
    subject: str
    proposals: frozenset[str] | None  # None: every proposal (auth off, or a facility admin)
    admin: bool = False

    def may_see(self, proposal: str) -> bool:
        return self.proposals is None or proposal in self.proposals


ANONYMOUS = Identity("anonymous", None)


class Authenticator:
    def identify(self, token: str) -> Identity | None:
        """The identity of a token, or None when this authenticator does not know it."""
        raise NotImplementedError


class TokenEntry(pydantic.BaseModel):
    """One entry of a tokens file. Strict: ``admin`` must be a JSON boolean, ``proposals``
    a list of strings; unknown keys are refused."""

    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    token: str = pydantic.Field(min_length=1, description="the secret, or sha256:<64 hex digits>")
    subject: str = pydantic.Field(min_length=1, max_length=256)
    proposals: list[pydantic.constr(strict=True, min_length=1, max_length=128)] = []  # type: ignore[valid-type]
    admin: bool = False

    @pydantic.field_validator("token")
    @classmethod
    def _token(cls, value: str) -> str:
        if not value.strip() or value != value.strip():
            raise ValueError("a token may not be blank or have surrounding spaces")
        if value.startswith("sha256:"):
            hexpart = value[7:]
            if len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart.lower()):
                raise ValueError("sha256: must be followed by 64 hex digits")
        return value

    @pydantic.field_validator("proposals")
    @classmethod
    def _proposal_names(cls, value: list[str]) -> list[str]:
        # a proposal fills one path component of the allowed prefixes (locations.resolve_prefixes):
        # 'AB/1' would lie inside proposal AB's folder, '.' or '..' above every proposal's
        for name in value:
            if name in (".", "..") or any(c in name for c in "/\\%") or not name.isprintable() or name != name.strip():
                raise ValueError(
                    f"proposal {name[:80]!r}: a proposal name fills one path component (no '/', '\\', '%', "
                    "control characters or surrounding spaces; not '.' or '..')"
                )
        return value

    @pydantic.model_validator(mode="after")
    def _scope(self) -> TokenEntry:
        if not self.admin and not self.proposals:
            raise ValueError("give the token's proposals, or admin: true")
        return self

    @property
    def digest(self) -> str:
        if self.token.startswith("sha256:"):
            return self.token[7:].lower()
        return hashlib.sha256(self.token.encode()).hexdigest()


class TokensFile(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", strict=True, frozen=True)

    tokens: list[TokenEntry]


class TokensFileError(errors.InvalidRequest):
    """A tokens file that does not validate; the gateway does not start."""

    reason = "BAD_TOKENS_FILE"


class StaticTokens(Authenticator):
    """Tokens from a JSON file: ``{"tokens": [{"token": "...", "subject": "alice",
    "proposals": ["cm33911-1"], "admin": false}]}``. A token may be given as
    ``"sha256:<hex>"`` so that the file holds no secrets. The file is validated strictly
    (:class:`TokensFile`); tokens must be unique."""

    def __init__(self, entries: Iterable[Mapping[str, Any]], *, source: str = "tokens") -> None:
        doc = {"tokens": list(entries)}
        try:
            model = TokensFile.model_validate(doc)
        except pydantic.ValidationError as exc:
            raise TokensFileError(f"{source}: {_first_problem(doc, exc)}") from None
        seen: dict[str, int] = {}
        self._entries: list[tuple[str, Identity]] = []
        for i, e in enumerate(model.tokens):
            if e.digest in seen:
                raise TokensFileError(
                    f"{source}: tokens[{i}] (subject {e.subject!r}) repeats the token of "
                    f"tokens[{seen[e.digest]}]; every token must be unique"
                )
            seen[e.digest] = i
            self._entries.append((e.digest, Identity(e.subject, None if e.admin else frozenset(e.proposals), e.admin)))

    @classmethod
    def from_file(cls, path: Path | str) -> StaticTokens:
        """Read and validate a tokens file; any problem is one line naming the file and
        the entry (never the token)."""
        try:
            doc = json.loads(Path(path).read_text())
        except OSError as exc:
            raise TokensFileError(f"tokens file {path}: cannot be read ({exc.strerror or exc})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TokensFileError(f"tokens file {path}: not valid JSON ({exc})") from None
        if isinstance(doc, list):
            doc = {"tokens": doc}
        if not isinstance(doc, dict) or set(doc) != {"tokens"} or not isinstance(doc["tokens"], list):
            raise TokensFileError(f'tokens file {path}: must be {{"tokens": [ ... ]}} with nothing else')
        return cls(doc["tokens"], source=f"tokens file {path}")

    def identify(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, identity in self._entries:
            if hmac.compare_digest(known, digest):
                return identity
        return None


def _first_problem(doc: Mapping[str, Any], exc: pydantic.ValidationError) -> str:
    """'tokens[1] (subject 'bob'): admin: Input should be a valid boolean' (+ how many more)."""
    problems = exc.errors(include_url=False)
    err = problems[0]
    loc = list(err.get("loc", ()))
    where = "tokens"
    if len(loc) >= 2 and loc[0] == "tokens" and isinstance(loc[1], int):
        i = loc[1]
        entry = doc["tokens"][i]
        subject = entry.get("subject") if isinstance(entry, Mapping) else None
        where = f"tokens[{i}]" + (f" (subject {errors.clip(subject, 60)!r})" if isinstance(subject, str) else "")
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return f"{where}: {field + ': ' if field else ''}{err.get('msg', 'invalid')}{more}"


class JwtVerifier(Authenticator):
    """OIDC access tokens (JWT) verified against a JWKS document (file or URL)."""

    def __init__(
        self,
        jwks: str,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        proposals_claim: str = "proposals",
        subject_claim: str = "sub",
        admin_claim: str = "panreduce_admin",
        algorithms: Sequence[str] = ("RS256", "ES256", "PS256"),
    ) -> None:
        import jwt

        self._jwt = jwt
        self.issuer, self.audience = issuer, audience
        self.proposals_claim, self.subject_claim, self.admin_claim = proposals_claim, subject_claim, admin_claim
        self.algorithms = list(algorithms)
        if jwks.startswith(("http://", "https://")):
            self._client: jwt.PyJWKClient | None = jwt.PyJWKClient(jwks, cache_keys=True)
            self._keys: Any = None  # a jwt.PyJWKSet when the JWKS is a file
        else:
            self._client = None
            self._keys = jwt.PyJWKSet.from_json(Path(jwks).read_text())

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = self._jwt.get_unverified_header(token).get("kid")
        for k in self._keys.keys:
            if kid is None or k.key_id == kid:
                return k.key
        raise self._jwt.InvalidTokenError(f"no key {kid!r} in the JWKS")

    def identify(self, token: str) -> Identity | None:
        if token.count(".") != 2:
            return None
        try:
            claims = self._jwt.decode(
                token,
                self._key(token),
                algorithms=self.algorithms,
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", self.subject_claim], "verify_aud": self.audience is not None},
            )
        except (self._jwt.InvalidTokenError, self._jwt.PyJWKClientError) as exc:
            raise errors.Unauthenticated(f"token rejected: {exc}") from None
        raw = claims.get(self.proposals_claim, [])
        proposals = [raw] if isinstance(raw, str) else list(raw)
        admin = bool(claims.get(self.admin_claim, False))
        return Identity(str(claims[self.subject_claim]), None if admin else frozenset(map(str, proposals)), admin)


@dataclass
class Access:
    """The gateway's access policy.

    ``authenticators`` empty: authentication is off (embedded default) and every caller
    is anonymous with every proposal. ``prefixes``: URI templates a proposal may read and
    write, e.g. ``s3://beamline/{proposal}/`` or ``/data/{proposal}/``; empty: any URI.
    """

    authenticators: list[Authenticator] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.authenticators)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Access:
        """PANREDUCE_TOKENS_FILE, PANREDUCE_JWKS (file or URL), PANREDUCE_JWT_ISSUER,
        PANREDUCE_JWT_AUDIENCE, PANREDUCE_JWT_PROPOSALS_CLAIM, PANREDUCE_ALLOWED_PREFIXES
        (comma-separated templates with {proposal})."""
        from panreduce.settings import settings_for

        return cls.from_settings(settings_for(env))

    @classmethod
    def from_settings(cls, s: Settings) -> Access:
        """``from_env`` for settings already read (panreduce.settings)."""
        auths: list[Authenticator] = []
        if s.tokens_file:
            auths.append(StaticTokens.from_file(s.tokens_file))
        if s.jwks:
            auths.append(
                JwtVerifier(
                    s.jwks,
                    issuer=s.jwt_issuer or None,
                    audience=s.jwt_audience or None,
                    proposals_claim=s.jwt_proposals_claim,
                )
            )
        return cls(auths, list(s.allowed_prefixes))

    # -- identity -----------------------------------------------------------------------
    def identify(self, context: grpc.ServicerContext) -> Identity:
        """The caller's identity (Unauthenticated without a valid token); the decision
        goes to the audit log (``panreduce.audit``) either way."""
        try:
            identity = self._identify(context)
        except errors.PanReduceError as exc:
            audit.decision(subject="", allowed=False, reason=f"authentication: {exc}")
            raise
        audit.decision(
            subject=identity.subject,
            allowed=True,
            proposal="*" if identity.proposals is None else ",".join(sorted(identity.proposals)),
            reason="authenticated" if self.enabled else "authentication off",
        )
        return identity

    def _identify(self, context: grpc.ServicerContext) -> Identity:
        if not self.enabled:
            return ANONYMOUS
        header = dict(context.invocation_metadata()).get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated("this gateway needs a bearer token (authorization: Bearer TOKEN)")
        for auth in self.authenticators:
            identity = auth.identify(token.strip())
            if identity is not None:
                return identity
        raise errors.Unauthenticated("unknown or invalid token")

    def proposal_for(self, identity: Identity, requested: str) -> str:
        """The proposal a new job or upload belongs to."""
        if requested:
            if not identity.may_see(requested):
                raise errors.PermissionDenied(f"{identity.subject} is not a member of proposal {requested!r}")
            return requested
        if identity.proposals is not None and len(identity.proposals) == 1:
            return next(iter(identity.proposals))
        if self.enabled and identity.proposals is not None:
            raise errors.InvalidRequest(
                "name the proposal (label proposal=...): "
                f"{identity.subject} belongs to {', '.join(sorted(identity.proposals)) or 'none'}"
            )
        return requested

    # -- URIs ---------------------------------------------------------------------------
    def allowed(self, proposal: str) -> list[locations.Location]:
        """The resolved locations a proposal may read and write (its prefix templates)."""
        return locations.resolve_prefixes(self.prefixes, proposal)

    def check_uri(
        self, identity: Identity, proposal: str, uri: str, *, uploads: Path | None = None
    ) -> locations.Location:
        """Resolve ``uri`` once (panreduce.locations: decoded once, normalised, links
        resolved, uploads mapped into ``uploads``) and refuse it outside the proposal's
        prefixes, compared component by component. Returns the resolved location: the
        only one to open or pass on."""
        loc = locations.resolve(uri, roots={"upload": uploads} if uploads is not None else None)
        if loc.scheme == "upload":
            if self.enabled and not identity.may_see(loc.namespace):
                raise errors.PermissionDenied(f"{locations.shown(uri)} belongs to another proposal")
            return loc
        if not self.prefixes or (identity.admin and not proposal):
            return loc
        allowed = self.allowed(proposal)
        if not locations.is_within_any(loc, allowed):
            raise errors.PermissionDenied(
                f"{locations.shown(uri)} is outside the locations of proposal {proposal!r} "
                f"({', '.join(a.uri for a in allowed)})"
            )
        return loc

    def check_readable(self, identity: Identity, uri: str, *, uploads: Path | None = None) -> locations.Location:
        """A location the caller may read (resolved): under the prefixes of one of its
        proposals, or an upload of one of them."""
        loc = locations.resolve(uri, roots={"upload": uploads} if uploads is not None else None)
        if not self.enabled or identity.proposals is None:
            return loc
        denied: errors.PermissionDenied | None = None
        for proposal in sorted(identity.proposals) or [""]:
            try:
                return self.check_uri(identity, proposal, uri, uploads=uploads)
            except errors.PermissionDenied as exc:
                denied = exc
        raise denied or errors.PermissionDenied(f"{locations.shown(uri)} is outside your proposals' locations")

    def readable_roots(self, identity: Identity) -> list[Path] | None:
        """The local folders the caller may read (for HDF5 links); None: anywhere."""
        if not self.enabled or identity.proposals is None or not self.prefixes:
            return None
        return [a.local for p in sorted(identity.proposals) for a in self.allowed(p) if a.local is not None]


def normalise_uri(uri: str) -> str:
    """The canonical form of a location (panreduce.locations.resolve): decoded once,
    normalised, links resolved; refuses '..', double encoding, NUL and the like."""
    return locations.resolve(uri).uri
