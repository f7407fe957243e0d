"""Signed scope statements: the gateway's word on what one call to a service may touch.

A holder of the shared service credential (token or mTLS) could otherwise name any
``x-panreduce-scope``. With a scope key, the gateway signs, for every call it makes to a
service, a short-lived statement that binds

- ``sub``, ``proposals``, ``admin``: who the call is made for;
- ``rpc``: the service method (Reduce, Submit, ...);
- ``aud``: the technique service it is for (the route's technique: a statement made for
  one technique's service is refused by another's);
- ``job``: the gateway's job id (the call's ``x-panreduce-job-id`` must be the same);
- ``req``: the SHA-256 of the request message (deterministic encoding), so a statement
  given for job X's request does not admit job Y's;
- ``scope``: the locations (panreduce.scope's encoding);
- ``iat``/``exp``: issued and expiry time (Unix seconds; ``DEFAULT_TTL_S``), and a
  random ``nonce`` a service accepts once.

The gateway holds the private key; a service holds only the public key, so the token
holder cannot make one. Keys: Ed25519 (``generate_pem``, ``panreduce scope-key``) or RSA
(what a Helm chart can generate: ``genCA``, the service given the certificate), as PEM
files; a service may be given the public key or a certificate holding it. The header's
value is ``v1.<base64url(payload JSON)>.<base64url(signature)>``. No grpc here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from panreduce import errors

VERSION = "v1"
DEFAULT_TTL_S = 120.0  # a statement is good this long after the gateway made it (s)
CLOCK_LEEWAY_S = 30.0  # clocks of the gateway's and the service's hosts may differ this much (s)
MAX_STATEMENT_CHARS = 32_768
SEEN_MAX = 100_000  # nonces a service remembers (until they expire)
SCOPE_KEY_ENV = "PANREDUCE_SCOPE_KEY_FILE"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def request_digest(request: object | None) -> str:
    """SHA-256 (hex) of a protobuf message's deterministic encoding ('' for None)."""
    if request is None:
        return ""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()  # type: ignore[attr-defined]


def generate_pem() -> tuple[bytes, bytes]:
    """A new Ed25519 pair: (private key PEM, public key PEM)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def _read(path: Path | str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise errors.InvalidRequest(f"scope key file {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise errors.InvalidRequest(f"scope key file {path} is empty")
    return data


@dataclass(frozen=True)
class Statement:
    """A verified statement's fields."""

    subject: str
    proposals: tuple[str, ...]
    admin: bool
    rpc: str
    job: str
    req: str
    scope: str
    expires: float
    nonce: str
    audience: str = ""

    def sees(self, proposal: str) -> bool:
        """A job of ``proposal`` is visible to this statement's caller (admin: every job)."""
        return self.admin or proposal in self.proposals


class ScopeSigner:
    """The gateway's side: signs statements with the private key."""

    def __init__(self, private_pem: bytes, *, ttl_s: float = DEFAULT_TTL_S) -> None:
        try:
            key = serialization.load_pem_private_key(private_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise errors.InvalidRequest(f"the scope key is not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            raise errors.InvalidRequest("the scope key must be Ed25519 or RSA")
        self._key = key
        self.ttl_s = ttl_s
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def from_file(cls, path: Path | str, **kw: float) -> ScopeSigner:
        return cls(_read(path), **kw)

    def sign(
        self,
        *,
        subject: str,
        proposals: list[str] | tuple[str, ...],
        admin: bool,
        rpc: str,
        scope: str,
        job: str = "",
        request: object | None = None,
        now: float | None = None,
        audience: str = "",
    ) -> str:
        """The header value of a statement made now (``now``: Unix time, tests) for the
        service of technique ``audience``."""
        issued = time.time() if now is None else now
        doc = {
            "sub": subject[:256],
            "proposals": [p[:256] for p in proposals][:64],
            "admin": bool(admin),
            "rpc": rpc,
            "aud": audience[:128],
            "job": job,
            "req": request_digest(request),
            "scope": scope,
            "iat": round(issued, 3),
            "exp": round(issued + self.ttl_s, 3),
            "nonce": secrets.token_urlsafe(12),
        }
        payload = _b64(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())
        signed = f"{VERSION}.{payload}".encode("ascii")
        if isinstance(self._key, rsa.RSAPrivateKey):
            sig = self._key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
        else:
            sig = self._key.sign(signed)
        return f"{VERSION}.{payload}.{_b64(sig)}"


class ScopeVerifier:
    """A service's side: checks statements with the public key, each nonce once."""

    def __init__(self, public_pem: bytes) -> None:
        if b"PRIVATE KEY" in public_pem:
            raise errors.InvalidRequest(
                "a service is given the scope's public key (or a certificate), never the gateway's private key"
            )
        try:
            key: PublicKeyTypes
            if b"CERTIFICATE" in public_pem:
                key = x509.load_pem_x509_certificate(public_pem).public_key()
            else:
                key = serialization.load_pem_public_key(public_pem)
        except ValueError as exc:
            raise errors.InvalidRequest(f"the scope key is not a PEM public key or certificate ({exc})") from None
        if not isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
            raise errors.InvalidRequest("the scope key must be Ed25519 or RSA")
        self._key = key
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path | str) -> ScopeVerifier:
        return cls(_read(path))

    def _signature_ok(self, signed: bytes, sig: bytes) -> bool:
        try:
            if isinstance(self._key, rsa.RSAPublicKey):
                self._key.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                self._key.verify(sig, signed)
        except InvalidSignature:
            return False
        return True

    def verify(
        self,
        value: str,
        *,
        rpc: str,
        job: str = "",
        request: object | None = None,
        now: float | None = None,
        audience: str | None = None,
    ) -> Statement:
        """The statement ``value`` names, if the gateway signed it, it has not expired, has not
        been used before, and is for this ``rpc``, ``job`` and ``request`` (and, unless
        ``audience`` is None, for the service of that technique). A missing, malformed
        or badly signed one: Unauthenticated; an expired, replayed or mismatched one:
        PermissionDenied (messages never echo the value)."""
        if not value:
            raise errors.Unauthenticated(
                "this service needs a scope statement signed by its gateway (x-panreduce-scope)"
            )
        if len(value) > MAX_STATEMENT_CHARS:
            raise errors.Unauthenticated(
                f"the scope statement has {len(value)} characters (at most {MAX_STATEMENT_CHARS})"
            )
        parts = value.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise errors.Unauthenticated(
                f"the scope is not a statement signed by this service's gateway ({VERSION}.<payload>.<signature>)"
            )
        try:
            sig = _unb64(parts[2])
            payload = _unb64(parts[1])
        except (ValueError, TypeError):
            raise errors.Unauthenticated("the scope statement is not base64url") from None
        if not self._signature_ok(f"{parts[0]}.{parts[1]}".encode("ascii", "replace"), sig):
            raise errors.Unauthenticated(
                "the scope statement's signature does not verify with this service's "
                "scope key (forged, altered, or signed by another gateway)"
            )
        try:
            doc = json.loads(payload)
            st = Statement(
                subject=str(doc["sub"]),
                proposals=tuple(str(p) for p in doc["proposals"]),
                admin=doc["admin"] is True,
                rpc=str(doc["rpc"]),
                job=str(doc["job"]),
                req=str(doc["req"]),
                scope=str(doc["scope"]),
                expires=float(doc["exp"]),
                nonce=str(doc["nonce"]),
                audience=str(doc.get("aud", "")),
            )
            issued = float(doc["iat"])
        except (ValueError, KeyError, TypeError):
            raise errors.Unauthenticated("the scope statement's payload is malformed") from None
        t = time.time() if now is None else now
        if st.expires + CLOCK_LEEWAY_S < t:
            raise errors.PermissionDenied(f"the scope statement expired {t - st.expires:.0f} s ago")
        if issued - CLOCK_LEEWAY_S > t:
            raise errors.PermissionDenied("the scope statement is issued in the future (clocks differ?)")
        if audience is not None and st.audience != audience:
            raise errors.PermissionDenied(
                f"the scope statement is for the {st.audience[:40]!r} service, not {audience[:40]!r}"
            )
        if st.rpc != rpc:
            raise errors.PermissionDenied(f"the scope statement is for {st.rpc[:40]!r}, not {rpc}")
        if st.job != job:
            raise errors.PermissionDenied("the scope statement is for another job than this call's")
        if st.req != request_digest(request):
            raise errors.PermissionDenied("the scope statement is for another request than this one")
        with self._lock:
            for nonce, exp in list(self._seen.items()):  # forget the expired (oldest first)
                if exp + CLOCK_LEEWAY_S >= t and len(self._seen) < SEEN_MAX:
                    break
                del self._seen[nonce]
            if st.nonce in self._seen:
                raise errors.PermissionDenied("the scope statement was used before (replayed)")
            self._seen[st.nonce] = st.expires
        return st


def _path(path: Path | str | None, env: dict[str, str] | None) -> Path | str | None:
    from panreduce.settings import settings_for

    return path or settings_for(env).scope_key_file or None


def signer_setting(path: Path | str | None, *, env: dict[str, str] | None = None) -> ScopeSigner | None:
    """The gateway's signer from ``path`` or $PANREDUCE_SCOPE_KEY_FILE (None: neither)."""
    found = _path(path, env)
    return ScopeSigner.from_file(found) if found else None


def verifier_setting(path: Path | str | None, *, env: dict[str, str] | None = None) -> ScopeVerifier | None:
    """A service's verifier from ``path`` or $PANREDUCE_SCOPE_KEY_FILE (None: neither)."""
    found = _path(path, env)
    return ScopeVerifier.from_file(found) if found else None
