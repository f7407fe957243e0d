"""Helpers for the service-credential, idempotency and audit tests (no conftest here:
others add files to this folder too). Every server is real gRPC on loopback."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.auth import Access, StaticTokens
from panreduce_gateway.gateway import GatewayConfig, GatewayService

SERVICE_TOKEN = "s3rvice-token-for-tests-0123456789abcdef"
TOKENS = {"alice-token": ("alice", ["pA"]), "bob-token": ("bob", ["pB"])}


def proposal_data(root: Path) -> dict[str, Path]:
    """One .npy input per proposal under ``root/data/<proposal>/`` (values 1..4 and 10..40)."""
    files = {}
    for proposal, values in (("pA", [1.0, 2.0, 3.0, 4.0]), ("pB", [10.0, 20.0, 30.0, 40.0])):
        folder = root / "data" / proposal
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "x.npy", np.array(values))
        files[proposal] = folder / "x.npy"
    return files


def access_for(root: Path) -> Access:
    """Two callers, alice (proposal pA) and bob (pB), each limited to its data folder."""
    entries = [{"token": t, "subject": s, "proposals": p} for t, (s, p) in TOKENS.items()]
    return Access([StaticTokens(entries)], [str(root / "data") + "/{proposal}/"])


@contextmanager
def toy_platform(
    root: Path,
    *,
    service_token: str | None = SERVICE_TOKEN,
    gateway_token: str | None = None,
    access: Access | None = None,
    store=None,
    scope_signer=None,
    scope_verifier=None,
):
    """A toy service (requiring ``service_token``; verifying signed scopes with
    ``scope_verifier`` when given) and a gateway in front of it (sending ``gateway_token``,
    default the same; signing with ``scope_signer``). Yields (service, gateway server,
    gateway service)."""
    stores = Stores(root / "store")
    service = start_technique(
        Toy, stores=stores, service_token=service_token, max_running=4, scope_verifier=scope_verifier
    )
    config = GatewayConfig(access=access or Access(), scope_signer=scope_signer)
    gateway = GatewayService(
        {"toy": service.address},
        stores=stores,
        config=config,
        store=store,
        service_token=gateway_token if gateway_token is not None else service_token,
    )
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    try:
        yield service, gw, gateway
    finally:
        gw.drain_and_stop(1)
        gateway.close()
        service.drain_and_stop(1)
