"""The embedded platform: the gateway and technique services on this machine, a
local folder as the object store, no cluster.

Every part is a real gRPC server on loopback, so the embedded platform exercises the
same code paths as a deployment; only the addresses differ. The services serve only this
gateway: a random service token is made for each run (kept in memory, never written) and
the services refuse every call without it, as in a deployment.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from panreduce import registry
from panreduce.kit.server import start_technique
from panreduce.serving import RunningServer, start_server
from panreduce.storage import Stores
from panreduce_gateway.gateway import GatewayConfig, GatewayService
from panreduce_gateway.pgstore import open_job_store

log = logging.getLogger("panreduce.embedded")

DEFAULT_STORE = "panreduce-store"


def default_store_root() -> Path:
    """``$PANREDUCE_STORE``, else ./panreduce-store."""
    return Path(os.environ.get("PANREDUCE_STORE", DEFAULT_STORE)).resolve()


class Platform:
    """Technique servers plus a gateway, in this process.

    ``techniques``: names to start (default: every installed technique).
    ``address``: where the gateway listens (default: a free loopback port).
    ``persistent``: keep the job table in ``<store>/jobs.sqlite`` (it survives restarts,
    and unfinished jobs run again) instead of in memory.
    """

    def __init__(self, techniques: Iterable[str] | None = None, *, store_root: Path | None = None,
                 address: str = "127.0.0.1:0", max_running: int = 1, persistent: bool = False,
                 db: Path | str | None = None, config: GatewayConfig | None = None,
                 tls: tuple[bytes, bytes] | None = None) -> None:
        self.names = list(techniques) if techniques is not None else registry.names()
        self.stores = Stores.from_env(store_root or default_store_root())
        self.address_spec = address
        self.max_running = max_running
        self.db = str(db) if db else (str(self.stores.root / "jobs.sqlite") if persistent else None)
        self.config = config
        self.tls = tls
        self.service_token = secrets.token_urlsafe(32)  # this run's service credential
        self.services: dict[str, RunningServer] = {}
        self.gateway: RunningServer | None = None
        self._gateway_service: GatewayService | None = None

    @property
    def address(self) -> str:
        if self.gateway is None:
            raise RuntimeError("platform not started")
        host = self.address_spec.rsplit(":", 1)[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "[::]", "") else host  # noqa: S104
        return f"{host}:{self.gateway.port}"

    def start(self) -> Platform:
        try:
            for name in self.names:
                cls = registry.load(name)
                self.services[name] = start_technique(cls, stores=self.stores, max_running=self.max_running,
                                                      service_token=self.service_token)
                log.info("technique %s on %s", name, self.services[name].address)
            routes = {name: s.address for name, s in self.services.items()}
            store = open_job_store(self.db)
            self._gateway_service = GatewayService(routes, stores=self.stores, store=store, config=self.config,
                                                   service_token=self.service_token)
            self.gateway = start_server(self._gateway_service, address=self.address_spec, name="gateway",
                                        manager=self._gateway_service.manager, tls=self.tls)
            resumed = self._gateway_service.resume()
            if resumed:
                log.warning("resumed %d unfinished job(s): %s", len(resumed), ", ".join(resumed))
            self._gateway_service.start_claiming()
            self.gateway.set_serving(True)
        except BaseException:
            self.stop(grace=0)
            raise
        return self

    def all_servers(self) -> list[RunningServer]:
        """Gateway first (it drains first), then the services."""
        return ([self.gateway] if self.gateway else []) + list(self.services.values())

    def stop(self, grace: float = 5.0) -> None:
        for server in self.all_servers():
            server.drain_and_stop(grace)
        if self._gateway_service is not None:
            self._gateway_service.close()
        self.gateway = None
        self.services.clear()

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
