"""The browser login: OpenID Connect authorization-code flow with PKCE (RFC 7636, S256).

The issuer is the one the gateway trusts (``$PANREDUCE_JWT_ISSUER``); the access token the
issuer hands out is what the web component sends to the gateway, so the gateway decides
what the caller sees. The ID token is verified here (signature against the issuer's JWKS,
issuer, audience = the client id, expiry, nonce) before a session is made.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import jwt

MAX_DOCUMENT = 1 << 20  # discovery, JWKS and token responses are small


class OidcError(Exception):
    """The login could not be completed (shown to the user as a login failure)."""


def _fetch(url: str, data: dict[str, str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    if not url.startswith(("https://", "http://")):
        raise OidcError("the issuer's endpoints must be http(s) URLs")
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # http(s) checked above
            raw = resp.read(MAX_DOCUMENT + 1)
    except OSError as exc:
        raise OidcError(f"the identity provider did not answer: {exc}") from None
    if len(raw) > MAX_DOCUMENT:
        raise OidcError("the identity provider's answer is too large")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise OidcError("the identity provider's answer is not JSON") from None
    if not isinstance(doc, dict):
        raise OidcError("the identity provider's answer is not a JSON object")
    return doc


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class Pending:
    """A login in progress (kept in the pre-login session, never in the browser)."""

    state: str
    nonce: str
    verifier: str
    next_path: str = "/"


@dataclass
class Tokens:
    access_token: str
    subject: str
    expires_at: float
    claims: dict[str, Any] = field(default_factory=dict)


@dataclass
class OidcClient:
    issuer: str
    client_id: str
    redirect_uri: str
    client_secret: str = ""
    scopes: str = "openid profile"
    _config: dict[str, Any] | None = None
    _jwks: jwt.PyJWKClient | None = None

    def configuration(self) -> dict[str, Any]:
        if self._config is None:
            doc = _fetch(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
            if doc.get("issuer") != self.issuer:
                raise OidcError("the discovery document names another issuer")
            for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                if not isinstance(doc.get(key), str):
                    raise OidcError(f"the discovery document has no {key}")
            self._config = doc
            self._jwks = jwt.PyJWKClient(doc["jwks_uri"], cache_keys=True)
        return self._config

    def start(self, next_path: str = "/") -> tuple[Pending, str]:
        """A new pending login and the URL to send the browser to."""
        verifier, challenge = pkce_pair()
        pending = Pending(secrets.token_urlsafe(24), secrets.token_urlsafe(24), verifier, next_path)
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": self.scopes,
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = self.configuration()["authorization_endpoint"]
        return pending, endpoint + ("&" if "?" in endpoint else "?") + query

    def finish(self, pending: Pending, code: str) -> Tokens:
        """Exchange the code (with the PKCE verifier) and verify the ID token."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": pending.verifier,
        }
        if self.client_secret:
            form["client_secret"] = self.client_secret
        doc = _fetch(self.configuration()["token_endpoint"], form)
        access, id_token = doc.get("access_token"), doc.get("id_token")
        if not isinstance(access, str) or not access or not isinstance(id_token, str):
            raise OidcError(f"the token endpoint refused the code ({str(doc.get('error', 'no tokens'))[:100]})")
        assert self._jwks is not None
        try:
            key = self._jwks.get_signing_key_from_jwt(id_token).key
            claims = jwt.decode(
                id_token,
                key,
                algorithms=["RS256", "ES256", "PS256"],
                audience=self.client_id,
                issuer=self.issuer,
                options={"require": ["exp", "sub", "iat"]},
            )
        except (jwt.InvalidTokenError, jwt.PyJWKClientError) as exc:
            raise OidcError(f"the ID token is not valid: {exc}") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), pending.nonce):
            raise OidcError("the ID token's nonce does not match this login")
        expires = float(claims["exp"])
        try:  # the access token's own expiry, when it is a JWT (the gateway checks it anyway)
            expires = min(expires, float(jwt.decode(access, options={"verify_signature": False}).get("exp", expires)))
        except jwt.InvalidTokenError:
            pass
        return Tokens(access, str(claims["sub"]), expires, claims)
