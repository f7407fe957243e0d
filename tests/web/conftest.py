"""The live data page against a real site: a gateway with access control for two
proposals (static tokens and OIDC JWTs), the real scan service on loopback, real I16
files, a small OpenID Connect identity provider written here (it signs RS256 JWTs that
the gateway's JwtVerifier accepts), and the web component served by uvicorn."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from panreduce import registry
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.auth import Access, JwtVerifier, StaticTokens
from panreduce_gateway.gateway import GatewayConfig, GatewayService
from panreduce_web.app import WebConfig
from panreduce_web.server import RunningWeb, start_web

CLIENT_ID = "panreduce-web"
SCAN_FILE = "i16-scans/794932.nxs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a small OpenID Connect provider --------------------------------------------------------
@dataclass
class IdP:
    """Authorization endpoint (logs in ``user`` at once: no password page), token endpoint
    (checks client, redirect URI and the PKCE verifier), JWKS, discovery."""

    url: str = ""
    user: str = "alice"
    users: dict[str, list[str]] = field(default_factory=lambda: {"alice": ["propA"], "bob": ["propB"]})
    key: Any = None
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    seen_challenges: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def token(
        self, sub: str, *, aud: str = CLIENT_ID, lifetime: float = 600, nonce: str | None = None, **claims: Any
    ) -> str:
        now = int(time.time())
        body = {
            "iss": self.url,
            "sub": sub,
            "aud": aud,
            "iat": now,
            "exp": now + int(lifetime),
            "proposals": self.users.get(sub, []),
            **claims,
        }
        if nonce is not None:
            body["nonce"] = nonce
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1"})

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        public.update(kid="k1", use="sig", alg="RS256")
        return {"keys": [public]}


def _handler(idp: IdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def _json(self, doc: Any, status: int = 200) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            u = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(u.query))
            if u.path == "/.well-known/openid-configuration":
                self._json(
                    {
                        "issuer": idp.url,
                        "authorization_endpoint": idp.url + "/authorize",
                        "token_endpoint": idp.url + "/token",
                        "jwks_uri": idp.url + "/jwks",
                        "code_challenge_methods_supported": ["S256"],
                    }
                )
            elif u.path == "/jwks":
                self._json(idp.jwks())
            elif u.path == "/authorize":
                if (
                    q.get("client_id") != CLIENT_ID
                    or q.get("code_challenge_method") != "S256"
                    or q.get("response_type") != "code"
                    or not q.get("code_challenge")
                ):
                    self._json({"error": "invalid_request"}, 400)
                    return
                code = secrets.token_urlsafe(16)
                idp.codes[code] = {
                    "user": idp.user,
                    "challenge": q["code_challenge"],
                    "nonce": q.get("nonce"),
                    "redirect_uri": q["redirect_uri"],
                }
                idp.seen_challenges.append(q["code_challenge"])
                target = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q.get("state", "")})
                self.send_response(302)
                self.send_header("Location", target)
                self.end_headers()
            else:
                self._json({"error": "not found"}, 404)

        def do_POST(self) -> None:
            if self.path != "/token":
                self._json({"error": "not found"}, 404)
                return
            form = dict(urllib.parse.parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
            grant = idp.codes.pop(form.get("code", ""), None)  # a code is used once
            if grant is None or form.get("client_id") != CLIENT_ID or form.get("redirect_uri") != grant["redirect_uri"]:
                self._json({"error": "invalid_grant"}, 400)
                return
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                self._json({"error": "invalid_grant", "error_description": "PKCE"}, 400)
                return
            user = grant["user"]
            self._json(
                {
                    "access_token": idp.token(user),
                    "id_token": idp.token(user, nonce=grant["nonce"]),
                    "token_type": "Bearer",
                    "expires_in": 600,
                }
            )

    return Handler


@pytest.fixture(scope="session")
def idp() -> Iterator[IdP]:
    provider = IdP(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(provider))
    provider.url = f"http://127.0.0.1:{server.server_address[1]}"
    provider.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield provider
    server.shutdown()
    server.server_close()


# -- the site -------------------------------------------------------------------------------
@dataclass
class Site:
    gateway: str
    data: Path
    a: Client
    b: Client
    jobs: dict[str, str]  # proposal -> a finished scan job
    idp: IdP
    tmp: Path

    def submit(self, client: Client, proposal: str, **labels: str) -> str:
        job = client.submit("scan", [str(self.data / proposal / "794932.nxs")], {}, labels={"sample": "web", **labels})
        return job.job_id


@pytest.fixture(scope="session")
def site(tmp_path_factory, dataset, idp) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("web-site")
    data = tmp / "data"
    source = dataset(SCAN_FILE)
    for p in ("propA", "propB"):
        (data / p).mkdir(parents=True)
        shutil.copy(source, data / p / "794932.nxs")
    tokens = StaticTokens(
        [
            {"token": "token-a", "subject": "alice", "proposals": ["propA"]},
            {"token": "token-b", "subject": "bob", "proposals": ["propB"]},
        ]
    )
    jwks = tmp / "jwks.json"
    jwks.write_text(json.dumps(idp.jwks()))
    access = Access(
        [tokens, JwtVerifier(str(jwks), issuer=idp.url, audience=CLIENT_ID)], prefixes=[str(data) + "/{proposal}/"]
    )
    stores = Stores(tmp / "store")
    scan = start_technique(registry.load("scan"), stores=stores, max_running=2)
    service = GatewayService({"scan": scan.address}, stores=stores, config=GatewayConfig(access=access))
    gw = start_server(service, name="gateway", manager=service.manager)
    gw.set_serving(True)
    a = Client(gw.address, token="token-a", timeout=60)
    b = Client(gw.address, token="token-b", timeout=60)
    site = Site(gw.address, data, a, b, {}, idp, tmp)
    try:
        for proposal, client in (("propA", a), ("propB", b)):
            jid = site.submit(client, proposal, title=f"scan of {proposal}")
            done = client.wait(jid)
            assert done.result.outputs, done
            site.jobs[proposal] = jid
        yield site
    finally:
        a.close()
        b.close()
        gw.drain_and_stop(2)
        service.close()
        scan.drain_and_stop(2)


def _web(site: Site, **kw: Any) -> Iterator[RunningWeb]:
    port = free_port()
    config = WebConfig(
        gateway=site.gateway, public_url=f"http://127.0.0.1:{port}", poll_seconds=0.3, heartbeat_seconds=1.0, **kw
    )
    running = start_web(config, port=port)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def web(site) -> Iterator[RunningWeb]:
    """The page with the token login form."""
    yield from _web(site, auth="tokens")


@pytest.fixture(scope="session")
def web_oidc(site, idp) -> Iterator[RunningWeb]:
    """The page with the OIDC login (authorization code + PKCE) against the local IdP."""
    yield from _web(site, auth="oidc", oidc_issuer=idp.url, oidc_client_id=CLIENT_ID)
