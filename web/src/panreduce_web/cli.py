"""``panreduce web`` and the page ``panreduce serve`` starts beside its gateway. Imports
nothing heavy until a command runs (the command line's start-up stays fast)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_WEB_PORT = 8080


def add_web_command(sub: Any) -> None:
    sp = sub.add_parser(
        "web",
        help="run the live data page: the gateway's jobs and results in a browser, "
        "behind the gateway's own access control",
    )
    sp.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        default=None,
        help="the gateway (default: $PANREDUCE_GATEWAY, else 127.0.0.1:50050)",
    )
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a pod)")
    sp.add_argument("--port", type=int, default=DEFAULT_WEB_PORT, help=f"port (default {DEFAULT_WEB_PORT})")
    sp.add_argument(
        "--auth",
        choices=("tokens", "oidc", "none"),
        default=None,
        help="login: a form for the gateway's tokens, OIDC (authorization code + PKCE against "
        "$PANREDUCE_JWT_ISSUER), or none for a gateway without access control "
        "(default: oidc when an issuer and a client id are set, else tokens)",
    )
    sp.add_argument(
        "--public-url",
        default="",
        help="the page's URL as browsers reach it (https: Secure cookies; "
        "the OIDC redirect URI is PUBLIC_URL/auth/callback; default http://HOST:PORT)",
    )
    sp.add_argument("--oidc-client-id", default="", help="the OIDC client (default: $PANREDUCE_JWT_AUDIENCE)")
    sp.add_argument(
        "--oidc-client-secret-file",
        type=Path,
        default=None,
        help="a confidential client's secret (public clients need none: PKCE)",
    )
    sp.add_argument("--tls-cert", type=Path, default=None, help="serve https: certificate chain (PEM)")
    sp.add_argument("--tls-key", type=Path, default=None, help="serve https: private key (PEM)")
    sp.set_defaults(func=cmd_web)


def cmd_web(args: argparse.Namespace) -> int:
    from panreduce.settings import get_settings
    from panreduce_web.server import config_from_settings, serve_web

    gateway = args.gateway or get_settings().gateway or "127.0.0.1:50050"
    config = config_from_settings(
        gateway,
        auth=args.auth,
        public_url=args.public_url,
        host=args.host,
        port=args.port,
        oidc_client_id=args.oidc_client_id,
        oidc_client_secret_file=args.oidc_client_secret_file,
    )
    tls = (args.tls_cert, args.tls_key) if args.tls_cert and args.tls_key else None
    print(
        f"panreduce: live data page on {config.public_url} (gateway {gateway}, login: {config.auth})",
        file=sys.stderr,
        flush=True,
    )
    serve_web(config, host=args.host, port=args.port, tls=tls)
    return 0


def start_beside(gateway: str, *, host: str, port: int, access_enabled: bool, gateway_ca: bytes | None = None) -> Any:
    """The page beside ``panreduce serve``'s gateway (a thread); None when the port is 0 or
    the page cannot start (the platform serves on without it, saying why)."""
    if port == 0:
        return None
    try:
        from panreduce_web.server import config_from_settings, start_web

        config = config_from_settings(gateway, host=host, port=port, access_enabled=access_enabled)
        if gateway_ca:
            config.gateway_ca = gateway_ca
        return start_web(config, host=host, port=port)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:
        print(
            f"panreduce: warning: the live data page did not start on {host}:{port} ({exc}); "
            "choose another --web-port, or --web-port 0",
            file=sys.stderr,
            flush=True,
        )
        return None
