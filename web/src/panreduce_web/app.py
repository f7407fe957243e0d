"""The live data page: a Starlette application in front of the gateway's gRPC API.

Every page and stream is fetched with the caller's own bearer token (a gateway token
entered in the login form, or the access token of an OIDC login), so the caller sees
exactly what the gateway lets it see: another proposal's job, output or file is 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from panreduce.convert import from_struct
from panreduce.v1 import reduce_pb2 as pb
from panreduce_web import pages, views
from panreduce_web.gateway import FINISHED, STATES, Gateway, GatewayError
from panreduce_web.oidc import OidcClient, OidcError
from panreduce_web.sessions import COOKIE, SECURE_COOKIE, Session, Sessions

log = logging.getLogger("panreduce.web")

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TOKEN = 8192
MAX_FIELD = 128
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass
class WebConfig:
    """``auth``: ``none`` (the gateway has access control off), ``tokens`` (a login form
    for the gateway's bearer tokens) or ``oidc`` (authorization code + PKCE against
    ``oidc_issuer``). ``public_url``: the page's own URL (its scheme decides the Secure
    cookie flag; the OIDC redirect URI is ``public_url + /auth/callback``)."""

    gateway: str
    auth: str = "tokens"
    public_url: str = "http://127.0.0.1:8080"
    gateway_ca: bytes | None = None
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid profile"
    poll_seconds: float = 2.0
    heartbeat_seconds: float = 15.0
    stream_seconds: float = 3600.0
    max_streams: int = 500
    max_streams_per_session: int = 8
    max_view_bytes: int = 1 << 30
    cache_files: int = 16
    session_idle: float = 8 * 3600
    session_lifetime: float = 24 * 3600

    @property
    def secure(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def origin(self) -> str:
        u = urllib.parse.urlsplit(self.public_url)
        return f"{u.scheme}://{u.netloc}"


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class ViewCache:
    """Outputs downloaded for plotting, keyed by (the caller's token digest, URI, SHA-256):
    one caller's download never serves another caller."""

    folder: Path
    capacity: int
    items: OrderedDict[tuple[str, str, str], Path] = field(default_factory=OrderedDict)

    def get(self, key: tuple[str, str, str]) -> Path | None:
        path = self.items.get(key)
        if path is not None and path.exists():
            self.items.move_to_end(key)
            return path
        return None

    def put(self, key: tuple[str, str, str], path: Path) -> None:
        self.items[key] = path
        while len(self.items) > self.capacity:
            _, old = self.items.popitem(last=False)
            old.unlink(missing_ok=True)


class App:
    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.gateway = Gateway(config.gateway, root_certificates=config.gateway_ca)
        self.sessions = Sessions(idle=config.session_idle, lifetime=config.session_lifetime)
        self.streams = 0
        self.oidc: OidcClient | None = None
        if config.auth == "oidc":
            if not config.oidc_issuer or not config.oidc_client_id:
                raise ValueError("OIDC login needs the issuer and the client id")
            self.oidc = OidcClient(
                config.oidc_issuer,
                config.oidc_client_id,
                config.public_url.rstrip("/") + "/auth/callback",
                client_secret=config.oidc_client_secret,
                scopes=config.oidc_scopes,
            )
        elif config.auth not in ("none", "tokens"):
            raise ValueError(f"auth must be none, tokens or oidc, not {config.auth!r}")
        self._tmp = Path(tempfile.mkdtemp(prefix="panreduce-web-"))
        os.chmod(self._tmp, 0o700)
        self.cache = ViewCache(self._tmp, config.cache_files)
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def shutdown(self) -> None:
        await self.gateway.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- sessions ---------------------------------------------------------------------
    def cookie_name(self) -> str:
        return SECURE_COOKIE if self.config.secure else COOKIE

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(self.cookie_name()))

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            self.cookie_name(), session.sid, httponly=True, secure=self.config.secure, samesite="lax", path="/"
        )

    def caller(self, request: Request) -> Session:
        """The logged-in session (auth none: an anonymous one, made on first use)."""
        s = self.session_of(request)
        if s is not None and s.logged_in:
            return s
        if self.config.auth == "none":
            s = self.sessions.login(s, None, "anonymous")
            request.state.new_session = s
            return s
        raise HttpError(401, "log in first")

    def check_csrf(self, request: Request, session: Session, form: Any) -> None:
        sent = str(form.get("csrf", "")) or request.headers.get("x-csrf-token", "")
        if not sent or len(sent) > 100 or not hmac.compare_digest(sent, session.csrf):
            raise HttpError(403, "the form has expired or did not come from this page: reload and try again")
        origin = request.headers.get("origin")
        if origin is not None and origin != self.config.origin and origin != _request_origin(request):
            raise HttpError(403, "a request from another site")

    # -- gateway calls ----------------------------------------------------------------
    async def job(self, session: Session, job_id: str) -> pb.Job:
        if not JOB_ID.match(job_id):
            raise HttpError(404, "not found")
        return await self.gateway.get_job(session.token, job_id)

    async def output(self, session: Session, job_id: str, n: int) -> tuple[pb.Job, pb.Output]:
        job = await self.job(session, job_id)
        outputs = list(job.result.outputs)
        if not 0 <= n < len(outputs):
            raise HttpError(404, "not found")
        return job, outputs[n]

    async def fetch_output(self, session: Session, out: pb.Output) -> Path:
        """The output file, downloaded through the gateway with the caller's token."""
        key = (hashlib.sha256((session.token or "").encode()).hexdigest(), out.uri, out.sha256)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
            _head, body = await self.gateway.download(session.token, out.uri, max_bytes=self.config.max_view_bytes)
            fd, name = tempfile.mkstemp(dir=self._tmp, suffix=_suffix(out.uri))
            try:
                with os.fdopen(fd, "wb") as fh:
                    async for data in body:
                        fh.write(data)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
            self.cache.put(key, Path(name))
            self._locks.pop(key, None)
            return Path(name)


def metadata_of(path: Path, name: str) -> dict[str, Any]:
    import h5py

    from panreduce import metadata

    if not h5py.is_hdf5(str(path)):
        return {"summary": {}, "records": [], "note": "not an HDF5 file"}
    md = metadata.extract(path, name, roots=[path.parent])
    records = [
        {"path": r.path, "value": json.dumps(r.value, default=str)[:500], "units": r.units} for r in md.records[:5000]
    ]
    return {"summary": md.summary, "records": records}


def _request_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _suffix(uri: str) -> str:
    tail = uri.rsplit("/", 1)[-1]
    ext = tail.rsplit(".", 1)[-1] if "." in tail else ""
    return "." + ext if NAME.match(ext or "-") and ext else ""


def filename_of(uri: str) -> str:
    tail = urllib.parse.unquote(uri.rstrip("/").rsplit("/", 1)[-1])
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", tail)[:120].lstrip(".")
    return clean or "output"


# -- job records as the pages show them --------------------------------------------------------
def _time(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def job_row(job: pb.Job) -> dict[str, Any]:
    labels = dict(job.request.labels)
    cat = dict(job.result.catalogue)
    return {
        "id": job.job_id,
        "technique": job.technique,
        "state": pb.JobState.Name(job.state),
        "sample": cat.get("sample") or labels.get("sample", ""),
        "title": cat.get("title") or labels.get("title", ""),
        "progress": round(job.progress.fraction, 4),
        "stage": job.progress.stage,
        "created": _time(job.created),
        "started": _time(job.started),
        "finished": _time(job.finished),
        "owner": job.owner,
        "proposal": job.proposal,
        "cancellable": job.state not in FINISHED,
    }


def event_dict(event: pb.JobEvent) -> dict[str, Any]:
    kind = event.WhichOneof("kind") or ""
    d: dict[str, Any] = {"seq": event.seq, "kind": kind, "time": _time(event.time)}
    if kind == "progress":
        d.update(stage=event.progress.stage, fraction=event.progress.fraction, message=event.progress.message)
    elif kind == "log":
        d.update(level=pb.LogLine.Level.Name(event.log.level), message=event.log.message)
    elif kind == "failure":
        d.update(code=event.failure.code, message=event.failure.message)
    elif kind == "accepted":
        d.update(message=f"accepted by {event.accepted.technique}")
    elif kind == "result":
        d.update(message=f"{len(event.result.outputs)} output(s)")
    return d


def list_request(request: Request) -> tuple[pb.ListJobsRequest, dict[str, str]]:
    """The ListJobs query of the filters in the URL; every field checked and limited."""
    q = request.query_params
    allowed = {"technique", "state", "sample", "owner", "since", "until", "page", "size"}
    for key in q:
        if key not in allowed:
            raise HttpError(400, f"unknown filter {key[:40]!r}")
    filters = {k: q.get(k, "") for k in allowed}
    for k, v in filters.items():
        if len(v) > MAX_FIELD or any(ord(c) < 32 for c in v):
            raise HttpError(400, f"{k}: at most {MAX_FIELD} printable characters")
    req = pb.ListJobsRequest(technique=filters["technique"], sample=filters["sample"], owner=filters["owner"])
    if filters["technique"] and not NAME.match(filters["technique"]):
        raise HttpError(400, "technique: letters, digits, '_', '-' and '.'")
    if filters["state"]:
        if filters["state"] not in STATES:
            raise HttpError(400, f"state: one of {', '.join(STATES)}")
        req.state = STATES[filters["state"]]  # type: ignore[assignment]
    for key, target in (("since", req.created_after), ("until", req.created_before)):
        if filters[key]:
            try:
                when = datetime.fromisoformat(filters[key])
            except ValueError:
                raise HttpError(400, f"{key}: a date, YYYY-MM-DD") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if key == "until" and len(filters[key]) == 10:
                when = when.replace(hour=23, minute=59, second=59)
            target.FromDatetime(when)
    if filters["page"]:
        if not filters["page"].isdigit() or len(filters["page"]) > 12:
            raise HttpError(400, "page: not a page of this list")
        req.page_token = filters["page"]
    size = filters["size"] or str(PAGE_SIZE)
    if not size.isdigit() or not 1 <= int(size) <= MAX_PAGE_SIZE:
        raise HttpError(400, f"size: 1 to {MAX_PAGE_SIZE}")
    req.page_size = int(size)
    return req, {k: v for k, v in filters.items() if v and k != "page"}


# -- the application ----------------------------------------------------------------------------
def create_app(config: WebConfig) -> Starlette:
    app_state = App(config)

    def page(request: Request, body: str, *, title: str, status: int = 200, session: Session | None = None) -> Response:
        html = pages.layout(title, body, session=session, auth=config.auth)
        return HTMLResponse(html, status_code=status)

    def wants_html(request: Request) -> bool:
        return "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/")

    async def guarded(request: Request, handler: Any) -> Response:
        try:
            resp: Response = await handler(request)
            new = getattr(request.state, "new_session", None)
            if new is not None:
                app_state.set_cookie(resp, new)
            return resp
        except HttpError as exc:
            if exc.status == 401 and wants_html(request) and request.method == "GET":
                target = urllib.parse.quote(request.url.path + ("?" + request.url.query if request.url.query else ""))
                return RedirectResponse(f"/login?next={target}", status_code=303)
            return error_response(request, exc.status, exc.message)
        except GatewayError as exc:
            status = exc.http_status
            if status == 401:
                s = app_state.session_of(request)
                if s is not None:
                    app_state.sessions.drop(s)  # the token expired or was withdrawn
                if wants_html(request) and request.method == "GET":
                    return RedirectResponse("/login", status_code=303)
            message = "not found" if status == 404 else exc.message
            return error_response(request, status, message)

    def error_response(request: Request, status: int, message: str) -> Response:
        if wants_html(request):
            return page(request, pages.error(status, message), title=f"{status}", status=status)
        return JSONResponse({"error": message, "status": status}, status_code=status)

    def route(path: str, methods: tuple[str, ...] = ("GET",)) -> Any:
        def wrap(fn: Any) -> Route:
            async def endpoint(request: Request) -> Response:
                return await guarded(request, fn)

            return Route(path, endpoint, methods=list(methods), name=fn.__name__)

        return wrap

    # -- login ----------------------------------------------------------------------------
    def safe_next(value: str) -> str:
        # only a path of this site (no //host, no scheme): no open redirect
        if not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 1000:
            return "/"
        return value

    @route("/login")
    async def login(request: Request) -> Response:
        nxt = safe_next(request.query_params.get("next", "/"))
        if config.auth == "none":
            return RedirectResponse("/", status_code=303)
        s = app_state.session_of(request) or app_state.sessions.new()
        if config.auth == "oidc":
            assert app_state.oidc is not None
            try:
                pending, url = await run_in_threadpool(app_state.oidc.start, nxt)
            except OidcError as exc:
                raise HttpError(502, f"login unavailable: {exc}") from None
            s.pending = pending
            resp: Response = RedirectResponse(url, status_code=303)
        else:
            resp = HTMLResponse(pages.layout("Log in", pages.login_form(s.csrf, nxt), session=None, auth=config.auth))
        app_state.set_cookie(resp, s)
        return resp

    @route("/login", methods=("POST",))
    async def login_post(request: Request) -> Response:
        if config.auth != "tokens":
            raise HttpError(404, "not found")
        s = app_state.session_of(request)
        form = await request.form(max_files=0, max_fields=4, max_part_size=MAX_TOKEN)
        if s is None:
            raise HttpError(403, "the form has expired: reload the login page")
        app_state.check_csrf(request, s, form)
        token = str(form.get("token", "")).strip()
        nxt = safe_next(str(form.get("next", "/")))
        if not token or len(token) > MAX_TOKEN or any(ord(c) < 33 or ord(c) > 126 for c in token):
            return HTMLResponse(
                pages.layout(
                    "Log in", pages.login_form(s.csrf, nxt, "that is not a token"), session=None, auth=config.auth
                ),
                status_code=400,
            )
        try:  # the gateway decides whether the token is valid
            await app_state.gateway.list_jobs(token, pb.ListJobsRequest(page_size=1))
        except GatewayError as exc:
            if exc.code != "UNAUTHENTICATED":
                raise
            return HTMLResponse(
                pages.layout(
                    "Log in",
                    pages.login_form(s.csrf, nxt, "the gateway does not know that token"),
                    session=None,
                    auth=config.auth,
                ),
                status_code=401,
            )
        fresh = app_state.sessions.login(s, token, "token " + hashlib.sha256(token.encode()).hexdigest()[:8])
        resp = RedirectResponse(nxt, status_code=303)
        app_state.set_cookie(resp, fresh)
        return resp

    @route("/auth/callback")
    async def callback(request: Request) -> Response:
        if app_state.oidc is None:
            raise HttpError(404, "not found")
        s = app_state.session_of(request)
        state, code = request.query_params.get("state", ""), request.query_params.get("code", "")
        if (
            s is None
            or s.pending is None
            or not state
            or len(state) > 200
            or len(code) > 4096
            or not hmac.compare_digest(state, s.pending.state)
        ):
            raise HttpError(400, "this login was not started here, or has expired: log in again")
        pending, s.pending = s.pending, None  # a state is used once
        if request.query_params.get("error") or not code:
            raise HttpError(401, "the identity provider refused the login")
        try:
            tokens = await run_in_threadpool(app_state.oidc.finish, pending, code)
        except OidcError as exc:
            raise HttpError(401, f"login failed: {exc}") from None
        fresh = app_state.sessions.login(s, tokens.access_token, tokens.subject, tokens.expires_at)
        resp = RedirectResponse(safe_next(pending.next_path), status_code=303)
        app_state.set_cookie(resp, fresh)
        return resp

    @route("/logout", methods=("POST",))
    async def logout(request: Request) -> Response:
        s = app_state.session_of(request)
        if s is not None:
            app_state.check_csrf(request, s, await request.form(max_files=0, max_fields=4, max_part_size=200))
            app_state.sessions.drop(s)
        resp = RedirectResponse("/login" if config.auth != "none" else "/", status_code=303)
        resp.delete_cookie(app_state.cookie_name(), path="/", secure=config.secure, httponly=True, samesite="lax")
        return resp

    # -- the job list -----------------------------------------------------------------------
    @route("/")
    async def jobs(request: Request) -> Response:
        s = app_state.caller(request)
        req, filters = list_request(request)
        resp = await app_state.gateway.list_jobs(s.token, req)
        rows = [job_row(j) for j in resp.jobs]
        techniques = sorted(
            {r["technique"] for r in rows} | ({filters["technique"]} if "technique" in filters else set())
        )
        return page(
            request,
            pages.job_list(rows, filters, resp.next_page_token, techniques, list(STATES)),
            title="Recent reductions",
            session=s,
        )

    @route("/api/jobs")
    async def jobs_json(request: Request) -> Response:
        s = app_state.caller(request)
        req, _ = list_request(request)
        resp = await app_state.gateway.list_jobs(s.token, req)
        return JSONResponse({"jobs": [job_row(j) for j in resp.jobs], "next": resp.next_page_token})

    def stream_slot(s: Session) -> None:
        if app_state.streams >= config.max_streams or s.streams >= config.max_streams_per_session:
            raise HttpError(429, "too many live views open: close some")
        app_state.streams += 1
        s.streams += 1

    def release(s: Session) -> None:
        app_state.streams -= 1
        s.streams -= 1

    def sse(gen: AsyncIterator[str], s: Session) -> Response:
        async def body() -> AsyncIterator[str]:
            try:
                async for chunk in gen:
                    yield chunk
            finally:
                release(s)

        return StreamingResponse(
            body(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    @route("/events/jobs")
    async def jobs_events(request: Request) -> Response:
        s = app_state.caller(request)
        req, _ = list_request(request)
        await app_state.gateway.list_jobs(s.token, req)  # refuse a bad query before the stream starts
        stream_slot(s)

        async def gen() -> AsyncIterator[str]:
            last, quiet, start = "", 0.0, time.monotonic()
            while time.monotonic() - start < config.stream_seconds:
                if not s.logged_in or app_state.sessions.get(s.sid) is None:
                    yield "event: end\ndata: {}\n\n"
                    return
                try:
                    resp = await app_state.gateway.list_jobs(s.token, req)
                except GatewayError as exc:
                    yield f"event: error\ndata: {json.dumps({'error': exc.message})}\n\n"
                    return
                doc = json.dumps({"jobs": [job_row(j) for j in resp.jobs], "next": resp.next_page_token})
                if doc != last:
                    last, quiet = doc, 0.0
                    yield f"event: jobs\ndata: {doc}\n\n"
                elif quiet >= config.heartbeat_seconds:
                    quiet = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(config.poll_seconds)
                quiet += config.poll_seconds

        return sse(gen(), s)

    # -- one job ------------------------------------------------------------------------------
    @route("/jobs/{job_id}")
    async def job_page(request: Request) -> Response:
        s = app_state.caller(request)
        job = await app_state.job(s, request.path_params["job_id"])
        params = from_struct(job.request.parameters)
        outputs = [
            {"n": i, "name": filename_of(o.uri), "format": o.format, "size": o.size, "role": o.role, "sha256": o.sha256}
            for i, o in enumerate(job.result.outputs)
        ]
        events: list[dict[str, Any]] = []
        if job.state in FINISHED:  # the whole log at once; a running job's comes by its stream
            async for ev in app_state.gateway.watch(s.token, job.job_id, timeout=5.0):
                events.append(event_dict(ev))
                if len(events) >= 2000:
                    break
        return page(
            request,
            pages.job_page(
                job_row(job),
                params,
                dict(job.result.catalogue),
                from_struct(job.result.summary),
                outputs,
                events,
                s.csrf,
                MessageToDict(job.failure) if job.HasField("failure") else {},
            ),
            title=f"Job {job.job_id}",
            session=s,
        )

    @route("/jobs/{job_id}/events")
    async def job_events(request: Request) -> Response:
        s = app_state.caller(request)
        job = await app_state.job(s, request.path_params["job_id"])
        after = request.headers.get("last-event-id", "") or request.query_params.get("after", "0")
        if not after.isdigit() or len(after) > 18:
            raise HttpError(400, "after: an event number")
        stream_slot(s)

        async def gen() -> AsyncIterator[str]:
            queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=256)

            async def pump() -> None:
                try:
                    async for ev in app_state.gateway.watch(s.token, job.job_id, int(after)):
                        d = event_dict(ev)
                        if ev.HasField("result") or ev.HasField("failure"):
                            d["state"] = "finished"
                        await queue.put(f"id: {ev.seq}\nevent: job\ndata: {json.dumps(d)}\n\n")
                    current = await app_state.gateway.get_job(s.token, job.job_id)
                    await queue.put(f"event: state\ndata: {json.dumps(job_row(current))}\n\n")
                except GatewayError as exc:
                    await queue.put(f"event: error\ndata: {json.dumps({'error': exc.message})}\n\n")
                finally:
                    await queue.put(None)

            task = asyncio.create_task(pump())
            start = time.monotonic()
            try:
                while time.monotonic() - start < config.stream_seconds:
                    try:
                        item = await asyncio.wait_for(queue.get(), timeout=config.heartbeat_seconds)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if item is None:
                        return
                    yield item
            finally:
                task.cancel()

        return sse(gen(), s)

    @route("/jobs/{job_id}/cancel", methods=("POST",))
    async def cancel(request: Request) -> Response:
        s = app_state.caller(request)
        form = await request.form(max_files=0, max_fields=4, max_part_size=200)
        app_state.check_csrf(request, s, form)
        job = await app_state.job(s, request.path_params["job_id"])
        await app_state.gateway.cancel(s.token, job.job_id)
        return RedirectResponse(f"/jobs/{job.job_id}", status_code=303)

    @route("/jobs/{job_id}/outputs/{n:int}")
    async def download(request: Request) -> Response:
        s = app_state.caller(request)
        _, out = await app_state.output(s, request.path_params["job_id"], request.path_params["n"])
        head, body = await app_state.gateway.download(s.token, out.uri, max_bytes=1 << 62)
        name = filename_of(out.uri)
        return StreamingResponse(
            body,
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Content-Length": str(head.size),
                "X-Content-SHA256": head.sha256,
                "Cache-Control": "no-store",
            },
        )

    @route("/jobs/{job_id}/outputs/{n:int}/plots")
    async def plots(request: Request) -> Response:
        s = app_state.caller(request)
        job, out = await app_state.output(s, request.path_params["job_id"], request.path_params["n"])
        q = request.query_params
        full = q.get("full", "") == "1"
        group = q.get("group") or None
        if group is not None and (len(group) > 256 or not group.startswith("/")):
            raise HttpError(400, "group: an HDF5 path")
        slice_text = q.get("slice", "")
        if slice_text and (not slice_text.isdigit() or len(slice_text) > 9):
            raise HttpError(400, "slice: a number")
        path = await app_state.fetch_output(s, out)
        try:
            figs = await run_in_threadpool(
                views.figures,
                path,
                job.technique,
                full=full,
                group=group,
                slice_index=int(slice_text) if slice_text else None,
            )
        except Exception as exc:  # a file the views cannot read is the view's problem, not a 500
            log.warning("no view of %s: %s", out.uri, exc)
            figs = []
        return JSONResponse({"output": filename_of(out.uri), "figures": figs})

    @route("/jobs/{job_id}/outputs/{n:int}/view")
    async def view_page(request: Request) -> Response:
        s = app_state.caller(request)
        job, out = await app_state.output(s, request.path_params["job_id"], request.path_params["n"])
        n = request.path_params["n"]
        return page(
            request, pages.view_page(job.job_id, n, filename_of(out.uri)), title=filename_of(out.uri), session=s
        )

    @route("/jobs/{job_id}/outputs/{n:int}/metadata")
    async def metadata(request: Request) -> Response:
        s = app_state.caller(request)
        _, out = await app_state.output(s, request.path_params["job_id"], request.path_params["n"])
        # read from the file fetched through the gateway's Download (results need not lie
        # under the proposal's prefixes, where GetMetadata looks)
        path = await app_state.fetch_output(s, out)
        try:
            md = await run_in_threadpool(metadata_of, path, filename_of(out.uri))
        except Exception as exc:  # not HDF5, or past the walk's limits: the view's problem, not a 500
            return JSONResponse({"summary": {}, "records": [], "note": str(exc)[:200]})
        return JSONResponse(md)

    # -- static files and probes ------------------------------------------------------------------
    static_files = {
        "app.js": (resources.files("panreduce_web") / "static" / "app.js", "text/javascript"),
        "style.css": (resources.files("panreduce_web") / "static" / "style.css", "text/css"),
        "plotly.min.js": (resources.files("plotly") / "package_data" / "plotly.min.js", "text/javascript"),
    }

    async def static(request: Request) -> Response:
        entry = static_files.get(request.path_params["name"])
        if entry is None:
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(str(entry[0]), media_type=entry[1], headers={"Cache-Control": "public, max-age=3600"})

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok")

    async def not_found(request: Request, _exc: Exception) -> Response:
        return error_response(request, 404, "not found")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("web: %s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(request, 500, "internal error")

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await app_state.shutdown()

    routes = [
        *[
            v
            for v in (
                login,
                login_post,
                callback,
                logout,
                jobs,
                jobs_json,
                jobs_events,
                job_page,
                job_events,
                cancel,
                download,
                plots,
                view_page,
                metadata,
            )
        ],
        Route("/static/{name}", static),
        Route("/healthz", healthz),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, config=config)],
        exception_handlers={404: not_found, 405: not_found, 500: server_error},
        lifespan=lifespan,
    )
    app.state.web = app_state
    return app


class SecurityHeaders:
    """Security headers on every response (pure ASGI: streams pass through untouched)."""

    def __init__(self, app: Any, config: WebConfig) -> None:
        self.app = app
        form_action = "'self'" + (f" {_origin_of(config.oidc_issuer)}" if config.oidc_issuer else "")
        headers = {
            "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
            f"base-uri 'none'; form-action {form_action}",
            "x-frame-options": "DENY",
            "x-content-type-options": "nosniff",
            "referrer-policy": "same-origin",
        }
        if config.secure:
            headers["strict-transport-security"] = "max-age=31536000"
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in have]
                if not static and b"cache-control" not in have:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _origin_of(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def new_csrf() -> str:
    return secrets.token_urlsafe(32)
