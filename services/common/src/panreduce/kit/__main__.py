"""``panreduce-service TECHNIQUE``: run one installed technique as a gRPC service.

This is what a technique's container image runs. Settings from flags or environment:
PANREDUCE_HOST (127.0.0.1: loopback only), PANREDUCE_PORT (50051), PANREDUCE_STORE,
PANREDUCE_MAX_RUNNING (1), PANREDUCE_METRICS_PORT (0: off), PANREDUCE_DRAIN_SECONDS (30),
PANREDUCE_LOG_FORMAT, PANREDUCE_SERVICE_TOKEN_FILE (the secret the gateway sends) or
PANREDUCE_SERVICE_TLS_DIR (mutual TLS), PANREDUCE_SCOPE_KEY_FILE (the gateway's public scope
key). Without a credential and a scope key the service refuses to start unless given
--insecure (or PANREDUCE_INSECURE=true), which it then logs as a warning.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from panreduce import errors, registry
from panreduce.settings import get_settings

if TYPE_CHECKING:
    from panreduce.mtls import ServiceTLS
    from panreduce.scopekey import ScopeVerifier

INSECURE_HINT = "or --insecure (or $PANREDUCE_INSECURE=true) for development only"


def service_credentials(
    token_file: Path | None, tls_dir: Path | None, scope_key_file: Path | None, *, insecure: bool
) -> tuple[str | None, ServiceTLS | None, ScopeVerifier | None]:
    """(service token, mTLS, scope verifier) of a service started from the command line. It
    needs a credential (a token, or mTLS) and the gateway's public scope key; without either,
    InvalidRequest (one line naming the flag), unless ``insecure`` (``--insecure`` or
    ``$PANREDUCE_INSECURE``)."""
    from panreduce.mtls import service_tls_setting
    from panreduce.scopekey import SCOPE_KEY_ENV, verifier_setting
    from panreduce.serving import service_token_setting

    insecure = insecure or get_settings().insecure
    tls = service_tls_setting(tls_dir)
    token = service_token_setting(token_file, insecure=insecure or tls is not None)
    verifier = verifier_setting(scope_key_file)
    if verifier is None and not insecure:
        raise errors.InvalidRequest(
            f"no scope key: give --scope-key-file FILE (or ${SCOPE_KEY_ENV}) with the gateway's public scope key "
            f"or certificate, so that only scopes the gateway signed are accepted, {INSECURE_HINT}"
        )
    return token, tls, verifier  # serve() logs what an insecure one lacks, as a warning


def main(argv: list[str] | None = None) -> int:
    try:
        s = get_settings()  # a bad PANREDUCE_* value stops the service here, naming it
    except errors.PanReduceError as exc:
        print(f"panreduce-service: {exc}", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="panreduce-service", description=__doc__.splitlines()[0])
    p.add_argument(
        "technique",
        nargs="?",
        default=s.technique,
        help=f"installed technique (one of: {', '.join(registry.names()) or 'none'})",
    )
    p.add_argument(
        "--host", default=s.host or "127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a pod)"
    )
    p.add_argument("--port", type=int, default=s.port or 50051)
    p.add_argument("--store", type=Path, default=s.store)
    p.add_argument("--max-running", type=int, default=s.max_running)
    p.add_argument("--metrics-port", type=int, default=s.metrics_port)
    p.add_argument("--drain-seconds", type=float, default=s.drain_seconds)
    p.add_argument(
        "--service-token-file",
        type=Path,
        default=None,
        help="file with the secret every call must carry (default $PANREDUCE_SERVICE_TOKEN_FILE)",
    )
    p.add_argument(
        "--service-tls-dir",
        type=Path,
        default=None,
        help="mutual TLS: folder with tls.crt, tls.key, ca.crt (default $PANREDUCE_SERVICE_TLS_DIR)",
    )
    p.add_argument(
        "--scope-key-file",
        type=Path,
        default=None,
        help="the gateway's public scope key or certificate (PEM): only scopes it signed are accepted "
        "(default $PANREDUCE_SCOPE_KEY_FILE)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also answer health checks in plain text on this port (probes beside mTLS; "
        "default $PANREDUCE_HEALTH_PORT, 0: off)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="serve without a service credential (any caller that reaches the port), or without a scope "
        "key (a caller names any scope): development only (also $PANREDUCE_INSECURE=true)",
    )
    args = p.parse_args(argv)
    if not args.technique:
        p.error("name the technique (or set PANREDUCE_TECHNIQUE)")
    from panreduce.mtls import health_port_setting

    try:
        cls = registry.load(args.technique)
        health_port = health_port_setting(args.health_port)
        token, tls, verifier = service_credentials(
            args.service_token_file, args.service_tls_dir, args.scope_key_file, insecure=args.insecure
        )
    except (errors.UnknownTechnique, errors.InvalidRequest) as exc:
        print(f"panreduce-service: {exc}", file=sys.stderr)
        return 2
    from panreduce.kit.server import serve

    serve(
        cls,
        port=args.port,
        host=args.host,
        store_root=args.store,
        max_running=args.max_running,
        metrics_port=args.metrics_port,
        drain_seconds=args.drain_seconds,
        service_token=token,
        service_tls=tls,
        health_port=health_port,
        scope_verifier=verifier,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
