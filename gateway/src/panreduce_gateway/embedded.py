"""The embedded platform: the gateway and technique services on this machine, a
local folder as the object store, no cluster.

Every part is a real gRPC server on loopback, so the embedded platform exercises the
same code paths as a deployment; only the addresses differ. The services serve only this
gateway: a random service token is made for each run (kept in memory, never written) and
the services refuse every call without it, as in a deployment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from panreduce import registry

if TYPE_CHECKING:  # imported when a platform starts (`panreduce techniques` needs none of them)
    from panreduce.kit.technique import Technique
    from panreduce.serving import RunningServer
    from panreduce_gateway.gateway import GatewayConfig, GatewayService

log = logging.getLogger("panreduce.embedded")

DEFAULT_STORE = "panreduce-store"


def default_store_root() -> Path:
    """``$PANREDUCE_STORE``, else ./panreduce-store."""
    from panreduce.settings import get_settings

    return get_settings().store.resolve()


class Platform:
    """Technique servers plus a gateway, in this process.

    ``techniques``: names to start (default: every installed technique).
    ``address``: where the gateway listens (default: a free loopback port).
    ``persistent``: keep the job table in ``<store>/jobs.sqlite`` (it survives restarts,
    and unfinished jobs run again) instead of in memory. ``resume=False``: do not run
    again the unfinished jobs the table holds (the command line's one-shot platform: they
    may be another command's, running now).
    """

    def __init__(
        self,
        techniques: Iterable[str] | None = None,
        *,
        store_root: Path | None = None,
        address: str = "127.0.0.1:0",
        max_running: int = 1,
        persistent: bool = False,
        db: Path | str | None = None,
        config: GatewayConfig | None = None,
        tls: tuple[bytes, bytes] | None = None,
        resume: bool = True,
    ) -> None:
        from panreduce.storage import Stores

        self.names = list(techniques) if techniques is not None else registry.names()
        self.stores = Stores.from_env(store_root or default_store_root())
        self.address_spec = address
        self.max_running = max_running
        self.db = str(db) if db else (str(self.stores.root / "jobs.sqlite") if persistent else None)
        self.config = config
        self.tls = tls
        self.resume = resume
        self.service_token = secrets.token_urlsafe(32)  # this run's service credential
        from panreduce.scopekey import ScopeSigner, generate_pem

        private, public = generate_pem()  # this run's scope key: the services get the public half only
        self.scope_signer = ScopeSigner(private)
        self._scope_public = public
        self.services: dict[str, RunningServer] = {}
        self.gateway: RunningServer | None = None
        self._gateway_service: GatewayService | None = None

    @property
    def address(self) -> str:
        if self.gateway is None:
            raise RuntimeError("platform not started")
        host = self.address_spec.rsplit(":", 1)[0]
        host = "127.0.0.1" if host in ("0.0.0.0", "[::]", "") else host
        return f"{host}:{self.gateway.port}"

    def start(self, on_step: Callable[[str], None] | None = None) -> Platform:
        """Start the services, then the gateway; ``on_step`` hears each step (the CLI's
        progress display shows them)."""
        from panreduce.kit.server import start_technique
        from panreduce.scopekey import ScopeVerifier
        from panreduce.serving import start_server
        from panreduce_gateway.gateway import GatewayConfig, GatewayService
        from panreduce_gateway.pgstore import open_job_store

        step = on_step or (lambda _text: None)
        try:
            for name in self.names:
                step(f"loading technique {name}")
                cls = registry.load(name)
                step(f"starting the {name} service")
                self.services[name] = start_technique(
                    cls,
                    stores=self.stores,
                    max_running=self.max_running,
                    service_token=self.service_token,
                    scope_verifier=ScopeVerifier(self._scope_public),
                )
                log.info("technique %s on %s", name, self.services[name].address)
            routes = {name: s.address for name, s in self.services.items()}
            step("starting the gateway")
            store = open_job_store(self.db)
            config = dataclasses.replace(self.config or GatewayConfig(), scope_signer=self.scope_signer)
            self._gateway_service = GatewayService(
                routes, stores=self.stores, store=store, config=config, service_token=self.service_token
            )
            self.gateway = start_server(
                self._gateway_service,
                address=self.address_spec,
                name="gateway",
                manager=self._gateway_service.manager,
                tls=self.tls,
            )
            resumed = self._gateway_service.resume() if self.resume else []
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


# -- what is installed, without starting anything ---------------------------------------
CACHE_VERSION = 1


def technique_description(cls: type[Technique[Any, Any]]) -> dict[str, Any]:
    """What ``Client.techniques()`` gives for a technique, from its class."""
    return {
        "name": cls.name,
        "version": cls.version,
        "title": cls.title,
        "description": cls.description,
        "parameters_schema": json.loads(json.dumps(cls.parameters_schema(), sort_keys=True)),
        "input_kinds": list(cls.input_kinds),
        "output_formats": list(cls.output_formats),
        "wants_gpu": cls.wants_gpu,
        "shardable": cls.shardable,
        "shard_unit": cls.shard_unit if cls.shardable else "",
    }


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/panreduce`` (default ~/.cache/panreduce)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "panreduce"


def _code_signature(names: Iterable[str]) -> str:
    """A digest of what a description depends on: each technique's entry point, its
    distribution's version and the size and time of every .py file of its package, the
    kit's files, and pydantic's version (it renders the schemas). Computed without
    importing any of them."""
    import importlib.util
    from importlib.metadata import entry_points, version

    wanted = set(names)
    parts: list[Any] = [CACHE_VERSION, version("pydantic")]
    packages = {"panreduce"}
    for ep in sorted(entry_points(group=registry.GROUP), key=lambda e: (e.name, e.value)):
        if ep.name in wanted:
            parts.append([ep.name, ep.value, ep.dist.version if ep.dist else ""])
            packages.add(ep.value.split(":")[0].split(".")[0])
    for package in sorted(packages):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            for f in sorted(Path(folder).rglob("*.py")):
                st = f.stat()
                parts.append([str(f), st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def describe_installed(names: Iterable[str] | None = None, *, use_cache: bool = True) -> list[dict[str, Any]]:
    """Every installed technique's description (name order), without starting a
    platform. Importing all techniques takes seconds (their science libraries), so the
    descriptions are kept in :func:`cache_dir` and used while no technique's code,
    version or entry point has changed; a cache that cannot be read or written is
    ignored."""
    wanted = sorted(names) if names is not None else registry.names()
    key = _code_signature(wanted)
    path = cache_dir() / "techniques.json"
    if use_cache:
        try:
            doc = json.loads(path.read_text())
            if doc.get("key") == key and [t["name"] for t in doc["techniques"]] == wanted:
                return list(doc["techniques"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    described, broken = [], []
    for name in wanted:
        try:
            described.append(technique_description(registry.load(name)))
        except Exception as exc:  # one broken install does not hide the others
            broken.append(name)
            log.warning("technique %s is installed but cannot be loaded: %s: %s", name, type(exc).__name__, exc)
    if use_cache and not broken:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"key": key, "techniques": described}))
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("techniques cache not written: %s", exc)
    return described
