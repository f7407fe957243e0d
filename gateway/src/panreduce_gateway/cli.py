"""``panreduce``: the command line.

Without ``--gateway`` (or ``$PANREDUCE_GATEWAY``), ``techniques`` and ``reduce`` run the
embedded platform on this machine; with it, they talk to that gateway.
Exit status 0 only on success; on failure one line naming the cause.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast


class _OnFirstUse:
    """A module imported when one of its names is first used: `panreduce --help`, a
    usage error and `--version` load neither grpc, pydantic nor numpy."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from panreduce import errors
    from panreduce.client import Client
    from panreduce.jobs import JobStore
    from panreduce.v1 import reduce_pb2 as pb
    from panreduce_gateway.gateway import GatewayConfig
else:
    errors = _OnFirstUse("panreduce.errors")
    pb = _OnFirstUse("panreduce.v1.reduce_pb2")

DEFAULT_GATEWAY_PORT = 50050
EXIT = {"ok": 0, "error": 1, "usage": 2, "not_found": 3, "unavailable": 4, "cancelled": 130}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return report_error(exc, as_json=as_json)
    as_json = bool(getattr(args, "json", False))
    if not getattr(args, "func", None):
        (getattr(args, "_parser", None) or parser).print_help(sys.stderr)
        return EXIT["usage"]
    try:
        fill_from_settings(args)  # a bad PANREDUCE_* value stops here, named, in one line
    except errors.PanReduceError as exc:
        return report_error(exc, as_json=as_json, code=EXIT["usage"])
    try:
        return args.func(args) or 0
    except errors.PanReduceError as exc:
        return report_error(exc, as_json=as_json)
    except KeyboardInterrupt:
        print("panreduce: interrupted", file=sys.stderr)
        return EXIT["cancelled"]
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a fault of ours: the traceback on stderr, the one JSON object too
        if as_json:
            print(
                json.dumps(
                    {
                        "error": {
                            "code": "INTERNAL",
                            "message": f"{type(exc).__name__}: {exc}",
                            "field": None,
                            "exit_code": EXIT["error"],
                        }
                    }
                ),
                flush=True,
            )
        raise


class UsageError(Exception):
    """What argparse would print before exiting 2: one line (and one JSON object with --json)."""

    reason = "USAGE"

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.message = prog, message


class Parser(argparse.ArgumentParser):
    """argparse with usage errors raised (main reports them in one line, or as JSON)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, message)


class VersionAction(argparse.Action):
    """``--version``: the installed versions, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit", **kwargs
        )

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any) -> NoReturn:
        print(f"panreduce {version_text()}")
        parser.exit()


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return f"{of('panreduce-gateway')} (panreduce-common {of('panreduce-common')}, Python {sys.version.split()[0]})"


def error_object(exc: Exception, exit_status: int) -> dict[str, Any]:
    """``{"error": {code, message, field, ...}}``: what ``--json`` prints for a failure."""
    violations = [{"field": v.field, "description": v.description} for v in getattr(exc, "violations", [])]
    doc: dict[str, Any] = {
        "code": getattr(exc, "reason", "ERROR"),
        "message": getattr(exc, "message", str(exc)),
        "field": violations[0]["field"] if violations else None,
        "exit_code": exit_status,
    }
    if violations:
        doc["violations"] = violations
    metadata = getattr(exc, "metadata", None)
    if metadata:
        doc["metadata"] = dict(metadata)
    return {"error": doc}


def report_error(exc: Exception, *, as_json: bool, code: int | None = None) -> int:
    """One line on stderr, or with ``--json`` one JSON object on stdout; the exit status."""
    status = code if code is not None else (EXIT["usage"] if isinstance(exc, UsageError) else exit_code(exc))
    if as_json:
        print(json.dumps(error_object(exc, status)), flush=True)
    elif isinstance(exc, UsageError):
        print(f"{exc.prog}: error: {exc.message} (see {exc.prog} --help)", file=sys.stderr)
    else:
        print(f"panreduce: error: {getattr(exc, 'message', exc)}", file=sys.stderr)
    return status


class FromSettings:
    """A flag's default taken from panreduce.settings after parsing (so `--help` and usage
    errors read no configuration): the field ``name``, else ``fallback``."""

    def __init__(self, name: str, fallback: Any = None) -> None:
        self.name, self.fallback = name, fallback

    def __repr__(self) -> str:
        return f"$PANREDUCE_{self.name.upper()}"


def fill_from_settings(args: argparse.Namespace) -> None:
    """Replace every FromSettings default left in ``args`` by its setting."""
    pending = {k: v for k, v in vars(args).items() if isinstance(v, FromSettings)}
    if not pending:
        return
    from panreduce.settings import get_settings

    s = get_settings()
    for key, default in pending.items():
        value = getattr(s, default.name)
        value = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        setattr(args, key, default.fallback if value is None else value)


def exit_code(exc: Exception) -> int:
    if isinstance(exc, errors.JobCancelled):
        return EXIT["cancelled"]
    if isinstance(exc, (errors.InputNotFound, errors.JobNotFound, errors.ObjectNotFound, errors.UnknownTechnique)):
        return EXIT["not_found"]
    if isinstance(exc, errors.Unavailable):
        return EXIT["unavailable"]
    if isinstance(exc, errors.CallerError):
        return EXIT["usage"]
    return EXIT["error"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="panreduce", description="PaNReduce: reduce photon and neutron facility data.")
    p.add_argument("--version", action=VersionAction)
    sub = p.add_subparsers(metavar="COMMAND")

    def gateway_opt(sp: argparse.ArgumentParser, required: bool = False) -> None:
        sp.add_argument(
            "--gateway",
            metavar="HOST:PORT",
            default=FromSettings("gateway"),
            help="talk to this gateway (default: $PANREDUCE_GATEWAY; "
            + ("required" if required else "none: run the embedded platform")
            + ")",
        )
        sp.add_argument(
            "--token", default=FromSettings("token"), help="bearer token for the gateway (default: $PANREDUCE_TOKEN)"
        )
        sp.add_argument(
            "--tls-ca",
            type=Path,
            default=FromSettings("tls_ca"),
            help="talk TLS, trusting this CA bundle (PEM; default: $PANREDUCE_TLS_CA)",
        )

    def server_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--db",
            default=FromSettings("db_spec"),
            help="job table: a SQLite file, or a postgresql:// DSN for a replicated gateway "
            "(default: $PANREDUCE_DB_DSN, $PANREDUCE_DB; serve: <store>/jobs.sqlite; gateway: in memory)",
        )
        sp.add_argument(
            "--tls-cert", type=Path, default=FromSettings("tls_cert"), help="serve TLS: certificate chain (PEM)"
        )
        sp.add_argument("--tls-key", type=Path, default=FromSettings("tls_key"), help="serve TLS: private key (PEM)")
        sp.add_argument("--tokens-file", default=None, help="static bearer tokens (JSON) -- turns access control on")
        sp.add_argument(
            "--jwks", default=None, help="JWKS (file or URL) to verify OIDC JWTs -- turns access control on"
        )
        sp.add_argument(
            "--allowed-prefix",
            action="append",
            default=None,
            metavar="TEMPLATE",
            help="URI prefix a proposal may use, with {proposal}; repeatable "
            "(default: $PANREDUCE_ALLOWED_PREFIXES, comma-separated)",
        )
        sp.add_argument(
            "--max-attempts",
            type=int,
            default=FromSettings("max_attempts"),
            help="runs of a job whose service went away (default 3)",
        )
        sp.add_argument(
            "--service-wait",
            type=float,
            metavar="SECONDS",
            default=FromSettings("service_wait_seconds"),
            help="how long a job waits for its technique's service to be reachable before it "
            "fails naming it (default $PANREDUCE_SERVICE_WAIT_SECONDS or 300)",
        )
        sp.add_argument(
            "--drain-seconds",
            type=float,
            metavar="SECONDS",
            default=FromSettings("drain_seconds"),
            help="on SIGTERM, how long running jobs may finish before they are left to be "
            "resumed by a restart or a replica (default $PANREDUCE_DRAIN_SECONDS or 30)",
        )

    sp = sub.add_parser("techniques", help="list the techniques and their parameters")
    gateway_opt(sp)
    sp.add_argument("--json", action="store_true", help="print JSON (with each parameter schema)")
    sp.set_defaults(func=cmd_techniques)

    sp = sub.add_parser("reduce", help="reduce data with a technique")
    sp.add_argument("technique")
    sp.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders (or prefix/), s3:// or upload:// URIs")
    sp.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter (VALUE read as JSON when it parses, else as text); repeatable",
    )
    sp.add_argument("--params", metavar="FILE", help="parameters from a JSON file (-p overrides)")
    sp.add_argument(
        "--output", "-o", metavar="DIR_OR_URI", default="", help="where results go (default: <store>/results/<job id>)"
    )
    sp.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label kept with the job")
    sp.add_argument("--idempotency-key", default="", help="the same key never runs twice")
    sp.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="deadline for the job")
    sp.add_argument("--upload", action="store_true", help="send local input files inline (gateway mode)")
    sp.add_argument("--detach", action="store_true", help="submit and print the job id without waiting (gateway mode)")
    sp.add_argument("--proposal", default="", help="the proposal the job belongs to (kept as label proposal=)")
    sp.add_argument(
        "--split",
        type=int,
        default=0,
        metavar="N",
        help="split a shardable job into N shards over the replicas (0: automatic, 1: never)",
    )
    sp.add_argument(
        "--dry-run",
        action="store_true",
        help="check the technique, every parameter and the local inputs; run nothing, start nothing",
    )
    sp.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    gateway_opt(sp)
    sp.set_defaults(func=cmd_reduce)

    sp = sub.add_parser("serve", help="run the embedded platform as a long-lived local server")
    sp.add_argument(
        "--port", type=int, default=DEFAULT_GATEWAY_PORT, help=f"gateway port (default {DEFAULT_GATEWAY_PORT})"
    )
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sp.add_argument(
        "--store",
        type=Path,
        default=None,
        help="local object store folder (default $PANREDUCE_STORE or ./panreduce-store)",
    )
    sp.add_argument("--techniques", default=None, help="comma-separated techniques to start (default: all installed)")
    sp.add_argument("--metrics-port", type=int, default=0, help="Prometheus /metrics port (default: off)")
    sp.add_argument("--web-port", type=int, default=8080, help="the live data page's port (default 8080; 0: off)")
    server_opts(sp)
    sp.set_defaults(func=cmd_serve)

    def service_token_opt(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument(
            "--service-token-file",
            type=Path,
            default=None,
            metavar="FILE",
            help=f"the secret shared by the gateway and its services, {what} (default: $PANREDUCE_SERVICE_TOKEN_FILE)",
        )
        sp.add_argument(
            "--service-tls-dir",
            type=Path,
            default=None,
            metavar="DIR",
            help="mutual TLS between the gateway and its services: a folder with tls.crt, tls.key "
            "and ca.crt (default: $PANREDUCE_SERVICE_TLS_DIR)",
        )
        sp.add_argument(
            "--scope-key-file",
            type=Path,
            default=None,
            metavar="FILE",
            help="the scope key (PEM): the gateway's private key, which signs each call's scope; a "
            "service's public key or certificate, which checks it (default: $PANREDUCE_SCOPE_KEY_FILE)",
        )

    sp = sub.add_parser("service", help="run one technique service (what a technique image runs)")
    sp.add_argument("technique")
    sp.add_argument("--port", type=int, default=FromSettings("port", 50051))
    sp.add_argument(
        "--host",
        default=FromSettings("host", "127.0.0.1"),
        help="address to listen on (default 127.0.0.1: loopback only; 0.0.0.0 in a pod)",
    )
    sp.add_argument("--store", type=Path, default=None)
    sp.add_argument("--max-running", type=int, default=FromSettings("max_running"))
    sp.add_argument("--metrics-port", type=int, default=FromSettings("metrics_port"))
    service_token_opt(sp, "required on every call (without one the service does not start)")
    sp.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="also answer health checks in plain text on this port (probes beside mTLS; "
        "default $PANREDUCE_HEALTH_PORT, 0: off)",
    )
    sp.add_argument(
        "--insecure",
        action="store_true",
        help="serve without a service credential (any caller reaching the port), or without a scope key "
        "(a caller names any scope): development only (also $PANREDUCE_INSECURE=true)",
    )
    sp.set_defaults(func=cmd_service)

    sp = sub.add_parser("gateway", help="run the gateway in front of technique services")
    sp.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="TECHNIQUE=HOST:PORT",
        help="where a technique's service is; repeatable (also $PANREDUCE_ROUTES, comma-separated)",
    )
    sp.add_argument("--port", type=int, default=FromSettings("port", DEFAULT_GATEWAY_PORT))
    sp.add_argument("--host", default=FromSettings("host", "0.0.0.0"))
    sp.add_argument("--store", type=Path, default=None)
    sp.add_argument("--metrics-port", type=int, default=FromSettings("metrics_port"))
    server_opts(sp)
    service_token_opt(sp, "sent on every call to a service")
    sp.set_defaults(func=cmd_gateway)

    try:  # the live data page (web/), where it is installed
        from panreduce_web.cli import add_web_command
    except ImportError:
        pass
    else:
        add_web_command(sub)

    sp = sub.add_parser(
        "retention", help="list (--dry-run) or delete (--apply) results and uploads older than the retention"
    )
    mode = sp.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="list what is older than the retention")
    mode.add_argument("--apply", action="store_true", help="delete it")
    sp.add_argument(
        "--days",
        type=retention_days,
        default=FromSettings("retention_days"),
        help="retention in days (default $PANREDUCE_RETENTION_DAYS or 90, the facility minimum)",
    )
    sp.add_argument("--store", type=Path, default=None, help="the gateway's store folder")
    sp.add_argument(
        "--db",
        default=FromSettings("db_spec"),
        help="the job table: SQLite file or postgresql:// DSN (default <store>/jobs.sqlite)",
    )
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_retention)

    jobs = sub.add_parser("jobs", help="list, show, watch or cancel jobs on a gateway")
    jsub = jobs.add_subparsers(metavar="ACTION")
    jobs.set_defaults(_parser=jobs)
    sp = jsub.add_parser("list", help="list jobs (newest first)")
    sp.add_argument("--technique", default="")
    sp.add_argument("--state", default="", choices=["", *STATE_NAMES])
    sp.add_argument("--owner", default="", help="who submitted it, or a user named in the inputs")
    sp.add_argument("--proposal", default="")
    sp.add_argument("--sample", default="", help="sample name (labels or the inputs' metadata; substring)")
    sp.add_argument("--since", default="", help="created on or after this date/time (ISO 8601)")
    sp.add_argument("--until", default="", help="created before this date/time (ISO 8601)")
    sp.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    sp.add_argument("--json", action="store_true")
    gateway_opt(sp, required=True)
    sp.set_defaults(func=cmd_jobs_list)
    for action, helptext in (("show", "show one job"), ("watch", "follow a job's events"), ("cancel", "cancel a job")):
        sp = jsub.add_parser(action, help=helptext)
        sp.add_argument("job_id")
        sp.add_argument("--json", action="store_true")
        if action == "watch":
            sp.add_argument("--after", type=int, default=0, help="resume after this event sequence number")
        gateway_opt(sp, required=True)
        sp.set_defaults(func={"show": cmd_jobs_show, "watch": cmd_jobs_watch, "cancel": cmd_jobs_cancel}[action])

    sp = sub.add_parser(
        "metadata",
        help="list every metadata field of a NeXus/HDF5 file, and its sample, instrument and user information",
    )
    sp.add_argument("file", help="a local file, or (with --gateway) any URI the gateway can read")
    sp.add_argument("--json", action="store_true", help="print JSON: {file, summary, records}")
    gateway_opt(sp)
    sp.set_defaults(func=cmd_metadata)

    sp = sub.add_parser("upload", help="send a local file to a gateway; prints its upload:// URI")
    sp.add_argument("path", type=Path)
    gateway_opt(sp, required=True)
    sp.set_defaults(func=cmd_upload)
    sp = sub.add_parser("download", help="fetch an output from a gateway")
    sp.add_argument("uri")
    sp.add_argument("dest", type=Path)
    gateway_opt(sp, required=True)
    sp.set_defaults(func=cmd_download)
    sp = sub.add_parser(
        "validate",
        help="run each installed technique's reference case through a gateway and "
        "compare with the recorded reference figures (docs/validate.md)",
    )
    gateway_opt(sp, required=True)
    sp.add_argument("--token-file", type=Path, default=None, help="file holding the bearer token")
    sp.add_argument("--json", dest="json_out", type=Path, default=None, metavar="OUT", help="write the rows as JSON")
    sp.add_argument("--markdown", type=Path, default=None, metavar="OUT", help="write the table as Markdown")
    sp.add_argument("--references", type=Path, default=None, help="reference file (default: the recorded one)")
    sp.set_defaults(func=cmd_validate)
    return p


# -- helpers -------------------------------------------------------------------------
MAX_RETENTION_DAYS = 36500  # a century: more is a typo, and past what a date can hold


def retention_days(text: str | float) -> float:
    """``--days``: a positive, finite number of days up to a century (argparse type)."""
    import math

    try:
        days = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not math.isfinite(days) or days <= 0 or days > MAX_RETENTION_DAYS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the retention must be a number of days above 0 and at most {MAX_RETENTION_DAYS}"
        )
    return days


def parse_pairs(pairs: Sequence[str], what: str, as_json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise errors.InvalidRequest(f"{what} {pair!r} is not KEY=VALUE")
        if as_json:
            try:
                out[key.strip()] = json.loads(value)
            except ValueError:
                out[key.strip()] = value
        else:
            out[key.strip()] = value
    return out


def load_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if args.params:
        path = Path(args.params)
        try:
            params = json.loads(path.read_text())
        except FileNotFoundError:
            raise errors.InputNotFound(str(path), "parameter file not found") from None
        except ValueError as exc:
            raise errors.InvalidInput(str(path), f"not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise errors.InvalidInput(str(path), "must hold a JSON object of parameters")
    params.update(parse_pairs(args.param, "parameter", as_json=True))
    return params


def local_uri(value: str) -> str:
    """Local paths made absolute (keeping a trailing '/'); URIs as they are."""
    if "://" in value:
        return value
    absolute = str(Path(value).expanduser().resolve())
    return absolute + "/" if value.endswith("/") else absolute


def gateway_address(value: str | None) -> str | None:
    if not value:
        return None
    return value if ":" in value else f"{value}:{DEFAULT_GATEWAY_PORT}"


def cmd_validate(args: argparse.Namespace) -> int:
    from panreduce_gateway import validate

    if args.token_file:
        args.token = Path(args.token_file).read_text().strip()
    cases = validate.load_references(args.references or validate.REFERENCES)
    with need_gateway(args) as client:
        rows = validate.run(
            client, cases, log=lambda s: print(f"panreduce: validate: {s}", file=sys.stderr, flush=True)
        )
    print(validate.table(rows))
    if args.json_out:
        Path(args.json_out).write_text(validate.as_json(rows))
    if args.markdown:
        Path(args.markdown).write_text(validate.markdown(rows))
    return 0 if all(r.status in ("PASS", "SKIP") for r in rows) else 1


def client_for(args: argparse.Namespace, address: str) -> Client:
    from panreduce.client import Client

    ca = getattr(args, "tls_ca", None)
    return Client(
        address, token=getattr(args, "token", None) or None, root_certificates=Path(ca).read_bytes() if ca else None
    )


def need_gateway(args: argparse.Namespace) -> Client:
    address = gateway_address(args.gateway)
    if not address:
        raise errors.InvalidRequest(
            "no gateway given: use --gateway HOST:PORT or set $PANREDUCE_GATEWAY (start one with `panreduce serve`)"
        )
    return client_for(args, address)


class ProgressBar:
    """A one-line progress bar on a terminal's stderr (silent elsewhere)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = ""
        self.t0 = time.monotonic()

    def __call__(self, event: pb.JobEvent) -> None:
        kind = event.WhichOneof("kind")
        if kind == "accepted" and not event.accepted.upstream:
            self._line(f"job {event.job_id} accepted")
        elif kind == "progress":
            f = max(0.0, min(1.0, event.progress.fraction))
            width = 30
            bar = "#" * int(f * width) + "-" * (width - int(f * width))
            text = f"[{bar}] {f * 100:5.1f}% {event.progress.stage}: {event.progress.message}"
            self._line(text[:120])
        elif kind == "log" and event.log.level >= pb.LogLine.WARNING:
            self._clear()
            print(f"{pb.LogLine.Level.Name(event.log.level).lower()}: {event.log.message}", file=sys.stderr)

    def step(self, text: str) -> None:
        """A start-up step, before the job's own events (loading, starting services)."""
        self._line(f"[{time.monotonic() - self.t0:4.1f} s] {text}")

    def _line(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write("\r" + text.ljust(len(self.last)))
            sys.stderr.flush()
            self.last = text

    def _clear(self) -> None:
        if self.enabled and self.last:
            sys.stderr.write("\r" + " " * len(self.last) + "\r")
            sys.stderr.flush()
            self.last = ""

    def done(self) -> None:
        self._clear()


# -- commands ------------------------------------------------------------------------
def _client_or_platform(
    args: argparse.Namespace, stack: ExitStack, techniques: list[str] | None, on_step: Any = None
) -> Client:
    from panreduce.client import Client

    address = gateway_address(args.gateway)
    if address is None:
        from panreduce_gateway.embedded import Platform

        # The job table is kept in <store>/jobs.sqlite, as `serve` keeps it, so that `retention`
        # covers embedded reductions; jobs of other commands (running, or left by one that was
        # killed) are not run again here.
        platform = Platform(techniques, persistent=True, resume=False).start(on_step)
        stack.callback(platform.stop)
        return stack.enter_context(Client(platform.address))
    return stack.enter_context(client_for(args, address))


def cmd_techniques(args: argparse.Namespace) -> int:
    if gateway_address(args.gateway) is None:  # embedded: described from the classes, nothing started
        from panreduce_gateway.embedded import describe_installed

        techniques = describe_installed()
    else:
        with ExitStack() as stack:
            techniques = _client_or_platform(args, stack, None).techniques()
    if args.json:
        print(json.dumps(techniques, indent=1))
        return 0
    for t in techniques:
        flags = ", ".join(
            x
            for x in ("GPU" if t["wants_gpu"] else "", f"shardable by {t['shard_unit']}" if t["shardable"] else "")
            if x
        )
        print(f"{t['name']:<14} {t['version']:<8} {t['title']}" + (f" [{flags}]" if flags else ""))
        props = t["parameters_schema"].get("properties", {})
        for name, prop in props.items():
            default = prop.get("default")
            desc = prop.get("description", "")
            print(f"    {name:<22} {desc}" + (f" (default {json.dumps(default)})" if default is not None else ""))
    return 0


def check_before_start(technique: str, params: dict[str, Any], inputs: Sequence[str], output: str) -> None:
    """What the embedded platform would refuse, refused before it starts: an unknown
    technique, a bad parameter, a local input that does not exist."""
    from panreduce import registry

    cls = registry.load(technique)
    cls.validate_parameters(params)
    for uri in inputs:
        if "://" not in uri and not Path(uri).exists():
            raise errors.InputNotFound(uri, "no such file or folder")
    if output and "://" not in output and Path(output).is_file():
        raise errors.InvalidRequest(f"output {output} is a file: give a folder")


def cmd_reduce(args: argparse.Namespace) -> int:
    import signal
    import threading

    params = load_params(args)
    labels = parse_pairs(args.label, "label", as_json=False)
    if args.proposal:
        labels["proposal"] = args.proposal
    inputs = [local_uri(i) for i in args.inputs]
    output = local_uri(args.output) if args.output else ""
    embedded = gateway_address(args.gateway) is None
    if args.upload and embedded:
        raise errors.InvalidRequest("--upload needs --gateway: the embedded platform reads local files directly")
    if args.detach and embedded:
        raise errors.InvalidRequest("--detach needs --gateway: embedded jobs end with the command")
    if args.dry_run:  # the same checks the embedded platform makes before it starts
        check_before_start(args.technique, params, inputs, output)
        doc = {"dry_run": True, "technique": args.technique, "inputs": inputs, "params": params}
        print(json.dumps(doc) if args.json else f"ok: {args.technique} with {len(params)} parameter(s) given")
        return 0
    bar = ProgressBar(sys.stderr.isatty() and not args.json)
    if embedded:
        bar.step(f"checking the request ({args.technique})")
        check_before_start(args.technique, params, inputs, output)
    from panreduce.client import make_request  # grpc: after the checks

    with ExitStack() as stack:
        client = _client_or_platform(args, stack, [args.technique] if embedded else None, bar.step)
        if args.upload:
            inputs = [client.upload(Path(i)).uri if "://" not in i and Path(i).is_file() else i for i in inputs]
        request = make_request(
            args.technique, inputs, params, output, labels=labels, idempotency_key=args.idempotency_key
        )
        request.split = max(args.split, 0)
        if args.detach:
            job = client._call(client.stub.Submit, request)
            print(json.dumps({"job_id": job.job_id}) if args.json else job.job_id)
            return 0
        bar.step("submitting the job")
        call = client.reduce_call(request, timeout=args.timeout)
        interrupted = threading.Event()

        def on_sigint(_signum: int, _frame: object) -> None:
            interrupted.set()
            call.cancel()

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            done = client._follow(call, args.technique, bar)
        except errors.JobCancelled:
            bar.done()
            raise errors.JobCancelled("cancelled: the job stopped and left no output") from None
        except errors.PanReduceError:
            bar.done()
            if interrupted.is_set():
                raise errors.JobCancelled("cancelled: the job stopped and left no output") from None
            raise
        finally:
            signal.signal(signal.SIGINT, previous)
        bar.done()
    doc = done.to_dict()
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    print_result(doc)
    return 0


PREFERRED_COLUMNS = (
    "file",
    "scan",
    "name",
    "axis",
    "center",
    "center_err",
    "fwhm",
    "fwhm_err",
    "area",
    "area_err",
    "flags",
)
MAX_COLUMNS = 9


def print_result(doc: dict[str, Any]) -> None:
    """A short human-readable account of a finished job (``--json`` has everything)."""
    print(f"job {doc['job_id']} ({doc['technique']}) succeeded")
    summary = doc["summary"]
    shown = {k: summary[k] for k in sorted(summary) if not isinstance(summary[k], (list, dict))}
    if shown:
        print("summary:")
        for k, v in shown.items():
            print(f"  {k}: {_fmt(v)}")
    tables = [(k, v) for k, v in summary.items() if isinstance(v, list) and v and all(isinstance(r, dict) for r in v)]
    tables.sort(key=lambda kv: -sum(c in kv[1][0] for c in PREFERRED_COLUMNS))
    for k, rows in tables[:1]:
        common = [c for c in rows[0] if all(c in r for r in rows) and not isinstance(rows[0][c], dict)]
        columns = [c for c in PREFERRED_COLUMNS if c in common] or common
        columns = columns[:MAX_COLUMNS]
        print(f"{k} ({len(rows)}; all columns with --json):")
        cells = [[_fmt(r[c]) for c in columns] for r in rows[:50]]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in cells:
            print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
        if len(rows) > 50:
            print(f"  ... {len(rows) - 50} more")
    print("results:")
    for o in doc["outputs"]:
        print(f"  {o['format']:<8} {o['uri']}")
    folders = sorted({str(Path(o["uri"]).parent) for o in doc["outputs"] if "://" not in o["uri"]})
    if len(folders) == 1:
        print(f"results are in {folders[0]}")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "-"
    return "-" if v is None else str(v)


def gateway_settings(args: argparse.Namespace) -> tuple[GatewayConfig, tuple[bytes, bytes] | None]:
    """GatewayConfig and TLS pair from the serve/gateway flags."""
    from panreduce.settings import get_settings
    from panreduce_gateway.auth import Access
    from panreduce_gateway.gateway import GatewayConfig

    flags: dict[str, Any] = {}  # the flags win over the variables
    if args.tokens_file:
        flags["tokens_file"] = str(args.tokens_file)
    if args.jwks:
        flags["jwks"] = str(args.jwks)
    if args.allowed_prefix:
        flags["allowed_prefixes"] = list(args.allowed_prefix)
    config = GatewayConfig(
        access=Access.from_settings(get_settings().model_copy(update=flags)),
        max_attempts=max(args.max_attempts, 1),
        service_wait=max(args.service_wait, 0.0),
    )
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise errors.InvalidRequest("TLS needs both --tls-cert and --tls-key")
        tls = (Path(args.tls_cert).read_bytes(), Path(args.tls_key).read_bytes())
    return config, tls


def ensure_port_free(host: str, port: int) -> None:
    """Unavailable (exit 4, one line) when ``host:port`` cannot be listened on. gRPC binds
    with SO_REUSEPORT, so a second server could otherwise share the port of a running
    one; this plain bind does not, and sees it taken."""
    import errno
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise errors.InvalidRequest(f"--host {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free
        try:
            probe.bind(address)
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise errors.Unavailable(
                f"port {port} on {host} {why}: stop what listens there, or choose another --port"
            ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from panreduce.logs import configure
    from panreduce.metrics import serve_metrics
    from panreduce.serving import StopSignals, run_until_signal
    from panreduce_gateway.embedded import Platform

    ensure_port_free(args.host, args.port)  # before any service starts
    signals = StopSignals()  # a SIGTERM while the page still starts drains too
    configure()
    config, tls = gateway_settings(args)
    names = [n.strip() for n in args.techniques.split(",") if n.strip()] if args.techniques else None
    platform = Platform(
        names,
        store_root=args.store.resolve() if args.store else None,
        address=f"{args.host}:{args.port}",
        persistent=True,
        db=args.db,
        config=config,
        tls=tls,
    )
    try:
        platform.start()
    except (OSError, RuntimeError) as exc:  # the port was taken between the check and the start
        raise errors.Unavailable(f"cannot listen on {args.host}:{args.port} ({exc}); choose another --port") from None
    serve_metrics(args.metrics_port)
    try:
        from panreduce_web.cli import start_beside
    except ImportError:
        web = None
    else:
        web = start_beside(
            platform.address,
            host=args.host,
            port=args.web_port,
            access_enabled=config.access.enabled,
            gateway_ca=tls[0] if tls else None,
        )
    print(
        f"panreduce: serving {', '.join(platform.services) or 'no techniques'} on {platform.address} "
        f"(store {platform.stores.root}{', TLS' if tls else ''}"
        f"{', access control on' if config.access.enabled else ''}); stop with Ctrl-C",
        file=sys.stderr,
        flush=True,
    )
    if web is not None:
        print(f"panreduce: live data page on {web.url}", file=sys.stderr, flush=True)
    run_until_signal(platform.all_servers(), grace=max(args.drain_seconds, 0.0), signals=signals)
    if web is not None:
        web.stop()
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from panreduce import registry
    from panreduce.kit.__main__ import service_credentials
    from panreduce.kit.server import serve
    from panreduce.mtls import health_port_setting

    technique = registry.load(args.technique)
    token, tls, verifier = service_credentials(
        args.service_token_file, args.service_tls_dir, args.scope_key_file, insecure=args.insecure
    )
    serve(
        technique,
        port=args.port,
        host=args.host,
        store_root=args.store,
        max_running=args.max_running,
        metrics_port=args.metrics_port,
        service_token=token,
        service_tls=tls,
        health_port=health_port_setting(args.health_port),
        scope_verifier=verifier,
    )
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from panreduce.logs import configure
    from panreduce.metrics import serve_metrics
    from panreduce.serving import run_until_signal, service_token_setting, start_server
    from panreduce.settings import get_settings
    from panreduce.storage import Stores
    from panreduce_gateway.embedded import default_store_root
    from panreduce_gateway.gateway import GatewayService, parse_routes
    from panreduce_gateway.pgstore import open_job_store

    ensure_port_free(args.host, args.port)
    configure()
    pairs = list(args.route) + get_settings().routes
    routes = parse_routes(pairs)
    if not routes:
        raise errors.InvalidRequest("no routes: give --route TECHNIQUE=HOST:PORT or $PANREDUCE_ROUTES")
    config, tls = gateway_settings(args)
    config.service_token = service_token_setting(args.service_token_file, required=False)
    from panreduce.mtls import service_tls_setting

    config.service_tls = service_tls_setting(args.service_tls_dir)
    from panreduce.scopekey import signer_setting

    config.scope_signer = signer_setting(args.scope_key_file)
    if config.scope_signer is None:
        print(
            "panreduce: warning: no --scope-key-file: the gateway's scopes are unsigned, which only services "
            "run --insecure accept",
            file=sys.stderr,
            flush=True,
        )
    if config.service_token is None and config.service_tls is None:
        print(
            "panreduce: warning: no --service-token-file: the gateway reaches only services run --insecure",
            file=sys.stderr,
            flush=True,
        )
    store = open_job_store(args.db)
    service = GatewayService(
        routes, stores=Stores.from_env(args.store or default_store_root()), store=store, config=config
    )
    running = start_server(
        service, address=f"{args.host}:{args.port}", name="gateway", manager=service.manager, tls=tls
    )
    service.resume()
    service.start_claiming()
    running.set_serving(True)
    serve_metrics(args.metrics_port)
    print(f"panreduce: gateway on port {running.port} routing {', '.join(sorted(routes))}", file=sys.stderr, flush=True)
    run_until_signal([running], grace=max(args.drain_seconds, 0.0))
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from datetime import datetime

    from panreduce.settings import get_settings
    from panreduce.storage import Stores
    from panreduce_gateway import retention
    from panreduce_gateway.embedded import default_store_root
    from panreduce_gateway.pgstore import open_job_store

    try:
        args.days = retention_days(args.days)  # also when it came from $PANREDUCE_RETENTION_DAYS
    except argparse.ArgumentTypeError as exc:
        raise errors.InvalidRequest(f"--days {exc}") from None
    root = (args.store or default_store_root()).resolve()
    db = args.db or str(root / "jobs.sqlite")
    if "://" not in db and not Path(db).is_file():
        raise errors.InputNotFound(db, "no job table there; give --store or --db")
    if args.days < retention.DEFAULT_DAYS:
        print(
            f"panreduce: warning: {args.days:g} days is below the facility minimum of {retention.DEFAULT_DAYS} days",
            file=sys.stderr,
        )
    store = cast("JobStore", open_job_store(db))  # db is never empty here
    stores = Stores.from_env(root)
    items = retention.expired(store, days=args.days)
    uploads = retention.expired_uploads(store, stores, days=args.days, s3_uploads=get_settings().uploads_uri)
    deleted = retention.apply(store, stores, items) if args.apply else []
    deleted += retention.apply_uploads(stores, uploads) if args.apply else []
    if args.json:
        print(
            json.dumps(
                {
                    "retention_days": args.days,
                    "applied": bool(args.apply),
                    "jobs": [
                        {
                            "job_id": e.job_id,
                            "technique": e.technique,
                            "proposal": e.proposal,
                            "finished": e.finished.isoformat(),
                            "outputs": [o.uri for o in e.outputs],
                            "bytes": e.size,
                        }
                        for e in items
                    ],
                    "uploads": [
                        {"uri": u.uri, "proposal": u.proposal, "modified": u.modified.isoformat(), "bytes": u.size}
                        for u in uploads
                    ],
                    "deleted": deleted,
                },
                indent=1,
            )
        )
        return 0
    verb = "deleted" if args.apply else "older than the retention"
    for e in items:
        print(
            f"{e.job_id}  {e.finished:%Y-%m-%d}  {e.technique:<12} {e.proposal or '-':<12} "
            f"{len(e.outputs)} output(s), {e.size} bytes"
        )
    for u in uploads:
        print(f"{u.uri}  {u.modified:%Y-%m-%d}  upload of {u.proposal or '-'}, {u.size} bytes")
    print(
        f"{len(items)} job(s) and {len(uploads)} upload(s) {verb} ({args.days:g} days; now {datetime.now():%Y-%m-%d %H:%M})"
    )
    return 0


STATE_NAMES = ("queued", "running", "succeeded", "failed", "cancelled")


def job_line(job: pb.Job) -> str:
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created.seconds))
    state = pb.JobState.Name(job.state).lower()
    extra = job.failure.message if job.HasField("failure") else ""
    return f"{job.job_id}  {created}  {job.technique:<12} {state:<10} {extra}".rstrip()


def job_dict(job: pb.Job) -> dict[str, Any]:
    from panreduce.convert import from_struct, message_to_dict

    doc = message_to_dict(job)
    if job.HasField("result"):
        doc["result"]["summary"] = from_struct(job.result.summary)
    return doc


def parse_time(text: str) -> Timestamp | None:
    """An ISO 8601 date/time (local time when no zone is given) as a protobuf Timestamp, or None."""
    if not text:
        return None
    from datetime import datetime

    from google.protobuf import timestamp_pb2

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise errors.InvalidRequest(f"{text!r} is not an ISO 8601 date or date/time") from None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when.astimezone())
    return ts


def cmd_jobs_list(args: argparse.Namespace) -> int:
    with need_gateway(args) as client:
        jobs = client.list_jobs(
            technique=args.technique,
            state=getattr(pb, args.state.upper()) if args.state else 0,
            labels=parse_pairs(args.label, "label", as_json=False),
            owner=args.owner,
            proposal=args.proposal,
            sample=args.sample,
            created_after=parse_time(args.since),
            created_before=parse_time(args.until),
        )
    if args.json:
        print(json.dumps([job_dict(j) for j in jobs], indent=1))
    else:
        for job in jobs:
            print(job_line(job))
    return 0


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from panreduce.convert import result_to_dict

    with need_gateway(args) as client:
        job = client.get_job(args.job_id)
    if args.json:
        print(json.dumps(job_dict(job), indent=1))
    else:
        print(job_line(job))
        if job.state == pb.SUCCEEDED:
            print_result(result_to_dict(job))
    return 0


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    """Follow a job; the exit status is its outcome: 0 succeeded, 1 failed, 130 cancelled
    (4 when the watch ended before the job did)."""
    from panreduce.convert import message_to_dict

    outcome: pb.JobEvent | None = None
    last_seq = args.after
    with need_gateway(args) as client:
        for event in client.watch(args.job_id, args.after):
            last_seq = event.seq
            kind = event.WhichOneof("kind")
            if kind in ("result", "failure"):
                outcome = event
            if args.json:
                print(json.dumps(message_to_dict(event)), flush=True)
            else:
                body = message_to_dict(getattr(event, kind))
                print(f"{event.seq:>5} {kind:<9} {json.dumps(body)}", flush=True)
        state = client.get_job(args.job_id).state if outcome is None else None
    if outcome is not None:
        if outcome.WhichOneof("kind") == "result":
            return EXIT["ok"]
        return EXIT["cancelled"] if outcome.failure.code == "CANCELLED" else EXIT["error"]
    if state == pb.SUCCEEDED:
        return EXIT["ok"]
    if state == pb.CANCELLED:
        return EXIT["cancelled"]
    if state == pb.FAILED:
        return EXIT["error"]
    raise errors.Unavailable(
        f"the watch of job {args.job_id} ended before the job did; "
        f"resume with `panreduce jobs watch {args.job_id} --after {last_seq}`"
    )


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with need_gateway(args) as client:
        job = client.cancel(args.job_id)
    print(json.dumps(job_dict(job), indent=1) if args.json else job_line(job))
    return 0


def cmd_metadata(args: argparse.Namespace) -> int:
    from panreduce.metadata import extract

    address = gateway_address(args.gateway)
    if address:
        with client_for(args, address) as client:
            m = client.metadata(local_uri(args.file))
    else:
        path = Path(args.file)
        if not path.is_file():
            raise errors.InputNotFound(str(path), "no such file")
        m = extract(path)
    print(m.to_json(indent=1) if args.json else m.table())
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    with need_gateway(args) as client:
        info = client.upload(args.path)
    print(info.uri)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    with need_gateway(args) as client:
        info = client.download(args.uri, args.dest)
    print(f"{args.dest} ({info.size} bytes, sha256 {info.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
