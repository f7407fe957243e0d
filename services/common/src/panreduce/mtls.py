"""Mutual TLS between the gateway and its technique services (the chart's option).

A service started with a service TLS folder serves TLS and accepts only clients that
present a certificate signed by the folder's CA; the gateway, given the same kind of
folder, presents its certificate on every call to a service and checks theirs. The
folder has the layout of a Kubernetes TLS Secret as cert-manager writes it:

- ``tls.crt``: this side's certificate chain (PEM);
- ``tls.key``: its private key (PEM);
- ``ca.crt``: the CA that signs the other side's certificates (PEM).

Settings: ``--service-tls-dir DIR`` on ``panreduce service``/``panreduce-service`` and
``panreduce gateway`` (default ``$PANREDUCE_SERVICE_TLS_DIR``), and on the gateway
``$PANREDUCE_SERVICE_TLS_SERVER_NAME``: the name checked in every service's certificate
instead of the route's host name (one certificate for every service). mTLS comes on
top of the service token: a service requires both when given both.

Kubernetes gRPC probes cannot present a client certificate, so a service with mTLS also
answers health checks, and nothing else, in plain text on ``--health-port``
(``$PANREDUCE_HEALTH_PORT``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from panreduce import errors

SERVICE_TLS_ENV = "PANREDUCE_SERVICE_TLS_DIR"
SERVER_NAME_ENV = "PANREDUCE_SERVICE_TLS_SERVER_NAME"
HEALTH_PORT_ENV = "PANREDUCE_HEALTH_PORT"
FILES = ("tls.crt", "tls.key", "ca.crt")


@dataclass(frozen=True)
class ServiceTLS:
    """This side's certificate chain and key, and the CA of the other side (PEM bytes)."""

    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)
    ca: bytes = field(repr=False)
    server_name: str = ""  # the gateway: the name checked in services' certificates (empty: the route's host)
    source: str = ""

    @classmethod
    def from_dir(cls, folder: Path | str, *, server_name: str = "") -> ServiceTLS:
        """Read ``tls.crt``, ``tls.key`` and ``ca.crt`` from ``folder``; a missing,
        empty or non-PEM file is one InvalidRequest naming it."""
        folder = Path(folder)
        parts: dict[str, bytes] = {}
        for name in FILES:
            path = folder / name
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise errors.InvalidRequest(
                    f"service TLS: cannot read {path} ({exc.strerror or exc}); the folder must hold {', '.join(FILES)}"
                ) from None
            if b"-----BEGIN " not in data:
                raise errors.InvalidRequest(f"service TLS: {path} is not PEM")
            parts[name] = data
        return cls(parts["tls.crt"], parts["tls.key"], parts["ca.crt"], server_name=server_name, source=str(folder))

    def server_credentials(self) -> grpc.ServerCredentials:
        """TLS that refuses every client without a certificate signed by ``ca``."""
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca, require_client_auth=True)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS presenting this side's certificate and checking the server's against ``ca``."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def channel_options(self) -> list[tuple[str, str]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def service_tls_setting(folder: Path | str | None, *, env: Mapping[str, str] | None = None) -> ServiceTLS | None:
    """The service TLS folder from ``folder``, else ``$PANREDUCE_SERVICE_TLS_DIR``
    (panreduce.settings); None: off."""
    from panreduce.settings import settings_for

    settings = settings_for(env)
    folder = folder or settings.service_tls_dir or None
    if not folder:
        return None
    return ServiceTLS.from_dir(folder, server_name=(settings.service_tls_server_name or "").strip())


def health_port_setting(value: int | None, *, env: Mapping[str, str] | None = None) -> int:
    """The plain-text health port (0: none): ``value``, else ``$PANREDUCE_HEALTH_PORT``."""
    if value is not None:
        if not 0 <= value <= 65535:
            raise errors.InvalidRequest(f"--health-port must be a port number (0-65535), not {value}")
        return value
    from panreduce.settings import settings_for

    return settings_for(env).health_port


def secure_channel(target: str, tls: ServiceTLS | None, options: list[tuple[str, Any]]) -> grpc.Channel:
    """A channel to a service: mTLS with ``tls``, else plain text."""
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.channel_credentials(), options=[*options, *tls.channel_options()])
