"""Every ``PANREDUCE_*`` environment variable, in one typed model.

Servers and the command line read their configuration here and nowhere else; science
modules read none. ``get_settings()`` reads the environment once and keeps the result
(it reads it again only if a ``PANREDUCE_*`` variable changed, which only tests do); a
bad value is one :class:`SettingsError` naming the variable. Tests and callers that hold
their own mapping build ``Settings(...)`` or ``Settings.from_env(mapping)``.

The table in docs/configuration.md is generated from this model
(``python scripts/settings-docs.py``); tests/deploy/test_settings.py checks that it is.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from panreduce import errors

PREFIX = "PANREDUCE_"
# Variables of the development tools, not of a PaNReduce process: the test S3 and PostgreSQL
# servers (scripts/s3-server.sh, scripts/pg-server.sh), benchmarks, the image checks.
DEV_VARIABLES = frozenset(
    {
        "PANREDUCE_S3_PORT",
        "PANREDUCE_S3_MON_PORT",
        "PANREDUCE_S3_MEMORY_MIB",
        "PANREDUCE_S3_TEST_BUCKETS",
        "PANREDUCE_S3_START_TIMEOUT",
        "PANREDUCE_S3_DATA",
        "PANREDUCE_TEST_PG_DSN",
        "PANREDUCE_TEST_TIMEOUT",
        "PANREDUCE_BENCH_MIB",
        "PANREDUCE_IMAGES_CHECK",
    }
)
log = logging.getLogger("panreduce.settings")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

Port = Annotated[int, Field(ge=1, le=65535)]
CommaList = Annotated[list[str], NoDecode]
_MAPPING_ONLY: ContextVar[bool] = ContextVar("panreduce_settings_mapping_only", default=False)


class SettingsError(errors.InvalidRequest):
    """A ``PANREDUCE_*`` variable has a value that is not valid; the message names it."""


def _section(name: str) -> dict[str, Any]:
    return {"section": name}


class Settings(BaseSettings):
    """The configuration of a PaNReduce process. Field ``x`` is ``$PANREDUCE_X``."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True, validate_default=True
    )

    # -- a technique service (panreduce-service, panreduce service) ---------------------------
    technique: str | None = Field(
        None,
        description="the technique `panreduce-service` runs (its image sets it)",
        json_schema_extra=_section("service"),
    )
    host: str | None = Field(
        None,
        description="address to listen on; services: `127.0.0.1` (loopback only), "
        "`panreduce gateway`: `0.0.0.0`; the chart sets `0.0.0.0` in pods",
        json_schema_extra=_section("service"),
    )
    port: Port | None = Field(
        None, description="port to listen on; services: 50051, gateway: 50050", json_schema_extra=_section("service")
    )
    store: Path = Field(
        Path("panreduce-store"),
        description="the local object store folder (uploads, results, shard scratch, the embedded job table)",
        json_schema_extra=_section("service"),
    )
    max_running: int = Field(
        1, ge=1, description="jobs one service replica runs at once", json_schema_extra=_section("service")
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus `/metrics` port (0: off)", json_schema_extra=_section("service")
    )
    drain_seconds: float = Field(
        30.0, ge=0, description="on SIGTERM, how long running jobs may finish", json_schema_extra=_section("service")
    )
    service_token_file: Path | None = Field(
        None,
        description="file with the secret the gateway sends and "
        "every service requires (without one a service starts only "
        "with `--insecure`)",
        json_schema_extra=_section("service"),
    )
    scope_key_file: Path | None = Field(
        None,
        description="the scope key (PEM): on the gateway its private "
        "key, which signs each call's scope; on a service only the public key "
        "or a certificate (a service with a credential and no key starts only "
        "with `--insecure`)",
        json_schema_extra=_section("service"),
    )
    insecure: bool = Field(
        False,
        description="`true`: a service starts without a service credential or scope key "
        "(as `--insecure`; development only, logged as a warning)",
        json_schema_extra=_section("service"),
    )
    service_tls_dir: Path | None = Field(
        None,
        description="mutual TLS between the gateway and the services: "
        "a folder with `tls.crt`, `tls.key`, `ca.crt` (off without one)",
        json_schema_extra=_section("service"),
    )
    service_tls_server_name: str | None = Field(
        None,
        description="on the gateway: the name checked in every service's certificate instead of the route's host",
        json_schema_extra=_section("gateway"),
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="with mTLS: a plain-text port that answers only health checks (0: none)",
        json_schema_extra=_section("service"),
    )
    max_input_bytes: int | None = Field(
        None,
        gt=0,
        description="largest input a job may stage (default: the technique's own limit)",
        json_schema_extra=_section("service"),
    )
    max_array_bytes: int | None = Field(
        None,
        gt=0,
        description="largest dataset one read may allocate (default: half the memory of the machine or container)",
        json_schema_extra=_section("service"),
    )
    max_streams: int = Field(
        200,
        ge=1,
        description="long streams (Reduce, Watch, Upload, Download) a server "
        "admits at once; one more is RESOURCE_EXHAUSTED",
        json_schema_extra=_section("service"),
    )
    max_connection_age_s: float = Field(
        300.0,
        ge=0,
        description="a server (service or gateway) closes each "
        "client connection after this long (s), so clients resolve again and "
        "reach new replicas (0: never)",
        json_schema_extra=_section("service"),
    )
    max_connection_age_grace_s: float = Field(
        0.0,
        ge=0,
        description="how long (s) calls still running on a closed connection may go on (0: until they end)",
        json_schema_extra=_section("service"),
    )
    job_history: int = Field(
        1000, ge=0, description="finished jobs a server keeps in memory", json_schema_extra=_section("service")
    )
    job_history_seconds: float = Field(
        3600.0, ge=0, description="how long a finished job stays in memory (s)", json_schema_extra=_section("service")
    )
    results_uri: str = Field(
        "",
        description="where jobs without an output go, e.g. `s3://reduced/` (default `<store>/results`)",
        json_schema_extra=_section("service"),
    )
    scratch_uri: str = Field(
        "",
        description="shard scratch, readable by every service (default `<store>/shards`)",
        json_schema_extra=_section("service"),
    )
    uploads_uri: str = Field(
        "",
        description="gateway: an `s3://` prefix for inline uploads (`<prefix>/PROPOSAL/ID/NAME`) instead of "
        "`<store>/uploads`, for a deployment without a shared file system",
        json_schema_extra=_section("service"),
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`json`: one JSON object per log line (the images set it)",
        json_schema_extra=_section("service"),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="root log level (any case)", json_schema_extra=_section("service")
    )

    # -- the gateway (panreduce gateway, panreduce serve) --------------------------------------
    routes: CommaList = Field(
        [],
        description="comma-separated `TECHNIQUE=ADDRESS` pairs (added to `--route`)",
        json_schema_extra=_section("gateway"),
    )
    db_dsn: str | None = Field(
        None,
        description="job table: a `postgresql://` DSN (replicated gateway)",
        json_schema_extra=_section("gateway"),
        repr=False,
    )
    db: str | None = Field(
        None,
        description="job table: a SQLite file (used when `PANREDUCE_DB_DSN` is unset; "
        "default: `serve` `<store>/jobs.sqlite`, `gateway` in memory)",
        json_schema_extra=_section("gateway"),
    )
    db_lease: float = Field(
        60.0,
        gt=0,
        description="a replica not seen for this long (s) loses its jobs to the others (PostgreSQL)",
        json_schema_extra=_section("gateway"),
    )
    db_heartbeat: float = Field(
        10.0,
        gt=0,
        description="how often (s) a replica renews its heartbeat (PostgreSQL)",
        json_schema_extra=_section("gateway"),
    )
    claim_seconds: float = Field(
        30.0,
        gt=0,
        description="how often (s) a replica claims the jobs of replicas that went away (PostgreSQL)",
        json_schema_extra=_section("gateway"),
    )
    max_attempts: int = Field(
        3, ge=1, description="runs of a job whose service went away", json_schema_extra=_section("gateway")
    )
    service_wait_seconds: float = Field(
        300.0,
        ge=0,
        description="how long (s) a job waits in all for its technique's service to be reachable",
        json_schema_extra=_section("gateway"),
    )
    queue_max: int = Field(
        100,
        ge=0,
        description="jobs the gateway queues per technique while it has no ready "
        "replica (scale from zero); one more is RESOURCE_EXHAUSTED (0: no queue, UNAVAILABLE)",
        json_schema_extra=_section("gateway"),
    )
    queue_wait_s: float = Field(
        900.0,
        gt=0,
        description="how long (s) a queued job waits for a ready replica of its technique before it fails naming both",
        json_schema_extra=_section("gateway"),
    )
    tls_cert: Path | None = Field(
        None, description="serve TLS: certificate chain (PEM)", json_schema_extra=_section("gateway")
    )
    tls_key: Path | None = Field(
        None, description="serve TLS: private key (PEM)", json_schema_extra=_section("gateway")
    )
    tokens_file: str | None = Field(
        None, description="static bearer tokens (JSON); turns access control on", json_schema_extra=_section("gateway")
    )
    jwks: str | None = Field(
        None,
        description="JWKS (file or URL) verifying OIDC JWTs; turns access control on",
        json_schema_extra=_section("gateway"),
    )
    jwt_issuer: str | None = Field(
        None, description="the `iss` a JWT must carry", json_schema_extra=_section("gateway")
    )
    jwt_audience: str | None = Field(
        None, description="the `aud` a JWT must carry", json_schema_extra=_section("gateway")
    )
    jwt_proposals_claim: str = Field(
        "proposals",
        min_length=1,
        description="the JWT claim listing the caller's proposals",
        json_schema_extra=_section("gateway"),
    )
    allowed_prefixes: CommaList = Field(
        [],
        description="comma-separated URI prefixes a proposal may use, with `{proposal}` (empty: any)",
        json_schema_extra=_section("gateway"),
    )
    retention_days: float = Field(
        90.0,
        gt=0,
        description="`panreduce retention`: results older than this are listed or deleted",
        json_schema_extra=_section("gateway"),
    )

    # -- the command line (panreduce techniques|reduce|jobs) -----------------------------------
    gateway: str | None = Field(
        None,
        description="`HOST:PORT` of a gateway (default: run the embedded platform)",
        json_schema_extra=_section("cli"),
    )
    token: SecretStr | None = Field(
        None, description="bearer token sent to the gateway", json_schema_extra=_section("cli")
    )
    tls_ca: Path | None = Field(
        None, description="talk TLS to the gateway, trusting this CA bundle (PEM)", json_schema_extra=_section("cli")
    )

    # -- data sets (panreduce.datasets) --------------------------------------------------------
    data: Path | None = Field(
        None,
        description="folder searched first for registered facility files (then `../shared/data`, then the cache)",
        json_schema_extra=_section("data"),
    )
    cache: Path | None = Field(
        None,
        description="download cache of registered files (default `~/.cache/panreduce/data`)",
        json_schema_extra=_section("data"),
    )

    # -- S3 (panreduce.s3): raw strings here, checked together by S3Config ----------------------
    s3_config: Path | None = Field(
        None,
        description="a TOML (`[s3]` table or top level) or `.json` file with "
        "the S3 keys below (lower case); the variables override it",
        json_schema_extra=_section("s3"),
    )
    s3_endpoint: str | None = Field(
        None, description="e.g. `http://127.0.0.1:7480` (default: AWS for the region)", json_schema_extra=_section("s3")
    )
    s3_access_key_id: str | None = Field(
        None, description="required unless anonymous", json_schema_extra=_section("s3"), repr=False
    )
    s3_secret_access_key: str | None = Field(
        None, description="required unless anonymous", json_schema_extra=_section("s3"), repr=False
    )
    s3_session_token: str | None = Field(
        None, description="temporary credentials", json_schema_extra=_section("s3"), repr=False
    )
    s3_region: str | None = Field(None, description="signing region (`us-east-1`)", json_schema_extra=_section("s3"))
    s3_allow_http: str | None = Field(
        None, description="`true` to allow a plain-HTTP endpoint (`false`)", json_schema_extra=_section("s3")
    )
    s3_anonymous: str | None = Field(
        None, description="`true`: unsigned requests, public buckets (`false`)", json_schema_extra=_section("s3")
    )
    s3_virtual_hosted_style: str | None = Field(
        None,
        description="`true`: `bucket.host/key` instead of `host/bucket/key` (`false`)",
        json_schema_extra=_section("s3"),
    )
    s3_buckets: str | None = Field(
        None,
        description="space/comma list: the only buckets this server may touch (all)",
        json_schema_extra=_section("s3"),
    )
    s3_part_size: str | None = Field(
        None,
        description="bytes: ranged-read and multipart part size, ≥ 5 MiB (16 MiB)",
        json_schema_extra=_section("s3"),
    )
    s3_concurrency: str | None = Field(
        None, description="ranges or parts in flight per object (8)", json_schema_extra=_section("s3")
    )
    s3_put_max: str | None = Field(
        None, description="bytes: largest output sent as one conditional PUT (64 MiB)", json_schema_extra=_section("s3")
    )
    s3_max_retries: str | None = Field(
        None, description="retries of a failed request (5)", json_schema_extra=_section("s3")
    )
    s3_retry_timeout: str | None = Field(
        None, description="seconds: give up retrying after this long (60)", json_schema_extra=_section("s3")
    )
    s3_init_backoff: str | None = Field(
        None, description="seconds: first backoff, doubling with jitter (0.1)", json_schema_extra=_section("s3")
    )
    s3_max_backoff: str | None = Field(
        None, description="seconds: longest backoff (5)", json_schema_extra=_section("s3")
    )
    s3_connect_timeout: str | None = Field(
        None, description="seconds per connection (5)", json_schema_extra=_section("s3")
    )
    s3_request_timeout: str | None = Field(
        None, description="seconds per request (300)", json_schema_extra=_section("s3")
    )

    @field_validator("routes", "allowed_prefixes", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keywords, then the environment; no .env or secrets folder. ``from_env``: keywords only."""
        return (init_settings,) if _MAPPING_ONLY.get() else (init_settings, env_settings)

    # -- derived values -----------------------------------------------------------------------
    @property
    def db_spec(self) -> str | None:
        """The job table a server opens: the DSN, else the SQLite file, else None."""
        return self.db_dsn or self.db or None

    @property
    def cache_dir(self) -> Path:
        return self.cache or Path.home() / ".cache" / "panreduce" / "data"

    def s3_values(self) -> dict[str, str]:
        """The S3 variables that are set (non-blank), by S3Config field name."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            if name.startswith("s3_") and name != "s3_config":
                value = getattr(self, name)
                if value is not None and str(value).strip():
                    out[name[3:]] = str(value).strip()
        return out

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings in ``environ`` (a mapping like ``os.environ``), ignoring the process
        environment; blank values count as unset. A bad value is a SettingsError."""
        values: dict[str, Any] = {}
        for key, value in environ.items():
            name = key[len(PREFIX) :].lower() if key.upper().startswith(PREFIX) else ""
            if name in cls.model_fields and value is not None and str(value) != "":
                values[name] = value
        token = _MAPPING_ONLY.set(True)
        try:
            return cls(**values)
        except ValidationError as exc:
            raise settings_error(exc, values) from None
        finally:
            _MAPPING_ONLY.reset(token)

    @classmethod
    def env_name(cls, field: str) -> str:
        return PREFIX + field.upper()


def settings_error(exc: ValidationError, values: Mapping[str, Any] | None = None) -> SettingsError:
    """One error naming every bad variable and the value it has."""
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        shown = ""
        if values is not None and field in values and not field.startswith(("token", "s3_secret", "db_dsn")):
            shown = f"={errors.clip(values[field], 80)}"
        problems.append(f"{Settings.env_name(field)}{shown}: {err['msg']}")
    return SettingsError("bad configuration: " + "; ".join(problems))


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``PANREDUCE_*`` names in ``environ`` that are no setting (a typo is otherwise ignored)."""
    fields = {Settings.env_name(n) for n in Settings.model_fields}
    return sorted(
        k
        for k in environ
        if k.upper().startswith(PREFIX) and k.upper() not in fields and k.upper() not in DEV_VARIABLES
    )


def _snapshot() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(PREFIX)))


@functools.lru_cache(maxsize=4)
def _cached(snapshot: tuple[tuple[str, str], ...]) -> Settings:
    unknown = unknown_variables(dict(snapshot))
    if unknown:
        log.warning("ignoring %s: not a PaNReduce setting (docs/configuration.md lists them)", ", ".join(unknown))
    try:
        return Settings()  # pydantic-settings reads the environment (the snapshot is the cache key)
    except ValidationError as exc:
        raise settings_error(exc, {k[len(PREFIX) :].lower(): v for k, v in snapshot}) from None


def get_settings() -> Settings:
    """This process's settings from its environment, validated once and kept."""
    return _cached(_snapshot())


def settings_for(environ: Mapping[str, str] | None = None) -> Settings:
    """``get_settings()``, or the settings in ``environ`` when one is given."""
    return get_settings() if environ is None else Settings.from_env(environ)
