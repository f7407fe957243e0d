"""Every route of the live data page over real HTTP: authorised, unauthorised, another
proposal's ids, malformed ids and filters (never a 500), CSRF, cookie flags, sessions,
the OIDC code flow with PKCE against the local identity provider."""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.parse
from contextlib import closing

import httpx
import pytest

from panreduce.v1 import reduce_pb2 as pb
from panreduce_web.app import WebConfig
from panreduce_web.server import start_web

from .conftest import free_port


def login(url: str, token: str) -> httpx.Client:
    c = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
    page = c.get("/login")
    assert page.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    done = c.post("/login", data={"csrf": csrf, "token": token, "next": "/"})
    assert done.status_code == 303, done.text
    return c


def csrf_of(c: httpx.Client, path: str = "/") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', c.get(path).text).group(1)


@pytest.fixture(scope="module")
def alice(web):
    with closing(login(web.url, "token-a")) as c:
        yield c


@pytest.fixture(scope="module")
def bob(web):
    with closing(login(web.url, "token-b")) as c:
        yield c


def routes(job_id: str) -> list[str]:
    return [
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/events",
        f"/jobs/{job_id}/outputs/0",
        f"/jobs/{job_id}/outputs/0/plots",
        f"/jobs/{job_id}/outputs/0/view",
        f"/jobs/{job_id}/outputs/0/metadata",
    ]


LIST_ROUTES = ["/", "/api/jobs", "/events/jobs"]


def test_unauthorised_callers_get_nothing(web, site):
    with httpx.Client(base_url=web.url, follow_redirects=False, timeout=30) as c:
        for path in LIST_ROUTES + routes(site.jobs["propA"]):
            r = c.get(path)
            assert r.status_code == 401, path
            assert site.jobs["propA"] not in r.text and "propA" not in r.text
            page = c.get(path, headers={"accept": "text/html"})
            assert page.status_code in (303, 401), path
            if page.status_code == 303:
                assert page.headers["location"].startswith("/login?next=")
        r = c.post(f"/jobs/{site.jobs['propA']}/cancel", data={"csrf": "x"})
        assert r.status_code == 401
        assert c.get("/healthz").text == "ok"
        # a token the gateway does not know is refused at the login, naming no account
        page = c.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        r = c.post("/login", data={"csrf": csrf, "token": "token-z", "next": "/"})
        assert r.status_code == 401 and "does not know" in r.text
        assert c.get("/api/jobs").status_code == 401


def test_the_list_shows_only_the_callers_proposal(alice, bob, site):
    a_rows = alice.get("/api/jobs").json()["jobs"]
    b_rows = bob.get("/api/jobs").json()["jobs"]
    assert site.jobs["propA"] in {r["id"] for r in a_rows}
    assert {r["proposal"] for r in a_rows} == {"propA"}
    assert {r["proposal"] for r in b_rows} == {"propB"}
    page = alice.get("/")
    assert page.status_code == 200 and site.jobs["propA"] in page.text and site.jobs["propB"] not in page.text
    row = next(r for r in a_rows if r["id"] == site.jobs["propA"])
    assert row["technique"] == "scan" and row["state"] == "SUCCEEDED" and row["progress"] == pytest.approx(1.0)
    assert row["owner"] == "alice" and row["sample"] == "web" and row["created"] and row["finished"]
    # filters: technique, state, sample, dates
    assert alice.get("/api/jobs", params={"technique": "tomography"}).json()["jobs"] == []
    assert alice.get("/api/jobs", params={"state": "FAILED"}).json()["jobs"] == []
    assert alice.get("/api/jobs", params={"state": "SUCCEEDED", "technique": "scan"}).json()["jobs"]
    assert alice.get("/api/jobs", params={"sample": "no-such-sample"}).json()["jobs"] == []
    assert alice.get("/api/jobs", params={"since": "2100-01-01"}).json()["jobs"] == []
    assert alice.get("/api/jobs", params={"until": "2000-01-01"}).json()["jobs"] == []
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert alice.get("/api/jobs", params={"since": today, "until": today}).json()["jobs"]
    # paging: one job a page, then the next page token
    first = alice.get("/api/jobs", params={"size": 1}).json()
    assert len(first["jobs"]) == 1


def test_the_job_page_and_its_outputs(alice, site):
    jid = site.jobs["propA"]
    page = alice.get(f"/jobs/{jid}")
    assert page.status_code == 200
    for part in ('id="parameters"', 'id="catalogue"', 'id="summary"', 'id="events"', "pseudo_voigt", "i16"):
        assert part in page.text
    assert 'id="cancel"' not in page.text  # a finished job cannot be cancelled
    assert "accepted" in page.text and "result" in page.text  # the event log
    job = site.a.get_job(jid)
    out = job.result.outputs[0]
    r = alice.get(f"/jobs/{jid}/outputs/0")
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")
    assert hashlib.sha256(r.content).hexdigest() == out.sha256 and len(r.content) == out.size
    # every output downloads
    for i, o in enumerate(job.result.outputs):
        assert hashlib.sha256(alice.get(f"/jobs/{jid}/outputs/{i}").content).hexdigest() == o.sha256
    plots = alice.get(f"/jobs/{jid}/outputs/0/plots").json()
    curve = next(f for f in plots["figures"] if f["kind"] == "curve" and f["group"].endswith("/data"))
    main = curve["data"][0]
    assert len(main["x"]) == 61 and main["error_y"]["visible"] and all(e > 0 for e in main["error_y"]["array"])
    names = {t["name"] for t in curve["data"]}
    assert {"fit", "residuals"} <= names
    resid = next(t for t in curve["data"] if t["name"] == "residuals")
    assert resid["yaxis"] == "y2"
    fit = next(t for t in curve["data"] if t["name"] == "fit")
    # the fit passes through the data near the peak (the centre the summary gives)
    centre = site.a.get_job(jid).result.summary["center"]
    k = min(range(61), key=lambda i: abs(main["x"][i] - centre))
    assert fit["y"][k] == pytest.approx(main["y"][k], rel=0.2)
    assert alice.get(f"/jobs/{jid}/outputs/0/view").status_code == 200
    md = alice.get(f"/jobs/{jid}/outputs/0/metadata").json()
    assert md["records"] and any("scan_794932" in r["path"] for r in md["records"])
    # the event stream of a finished job: its events, then its state, then the end
    with alice.stream("GET", f"/jobs/{jid}/events") as s:
        text = "".join(s.iter_text())
    assert "event: job" in text and '"kind": "result"' in text and "event: state" in text and "SUCCEEDED" in text
    with alice.stream("GET", f"/jobs/{jid}/events", headers={"Last-Event-ID": str(job.last_seq)}) as s:
        text = "".join(s.iter_text())
    assert "event: job" not in text and "event: state" in text  # resumed after the last event


def test_another_proposals_ids_are_not_found(alice, bob, site):
    for me, other in ((alice, site.jobs["propB"]), (bob, site.jobs["propA"])):
        for path in routes(other):
            r = me.get(path)
            assert r.status_code == 404, path
            assert r.json() == {"error": "not found", "status": 404}
            page = me.get(path, headers={"accept": "text/html"})
            assert page.status_code == 404 and other not in page.text and "propB" not in page.text.replace("propA", "")
        r = me.post(f"/jobs/{other}/cancel", data={"csrf": csrf_of(me)})
        assert r.status_code == 404
    # the other's job is untouched
    assert site.b.get_job(site.jobs["propB"]).state == pb.SUCCEEDED


@pytest.mark.parametrize(
    "bad", ["..%2f..%2fetc", "%2e%2e", "a" * 65, "x y", "%00", "j%C3%A9b", "a;b", "0123456789abcdef0"]
)
def test_malformed_ids_are_404_never_500(alice, bad):
    for path in routes(bad):
        r = alice.get(path)
        assert r.status_code in (400, 404), (path, r.status_code)
    assert alice.post(f"/jobs/{bad}/cancel", data={"csrf": csrf_of(alice)}).status_code in (400, 404)


def test_malformed_outputs_and_filters(alice, site):
    jid = site.jobs["propA"]
    for path in (
        f"/jobs/{jid}/outputs/99",
        f"/jobs/{jid}/outputs/-1",
        f"/jobs/{jid}/outputs/x",
        f"/jobs/{jid}/outputs/99/plots",
        f"/jobs/{jid}/outputs/99999999999999999999999/view",
        "/static/../app.py",
        "/static/app.py",
        "/nowhere",
    ):
        assert alice.get(path).status_code == 404, path
    for params in (
        {"state": "DONE"},
        {"since": "yesterday"},
        {"size": "100000"},
        {"size": "0"},
        {"page": "x"},
        {"technique": "a/b"},
        {"sample": "s" * 500},
        {"bogus": "1"},
        {"sample": "a\x00b"},
        {"page": "9" * 40},
    ):
        for path in ("/", "/api/jobs", "/events/jobs"):
            assert alice.get(path, params=params).status_code == 400, (path, params)
    for q in ({"slice": "-1"}, {"slice": "x" * 20}, {"group": "relative"}, {"group": "/" + "g" * 300}):
        assert alice.get(f"/jobs/{jid}/outputs/0/plots", params=q).status_code == 400, q
    # a group that is not in the file: no figures, not an error
    assert alice.get(f"/jobs/{jid}/outputs/0/plots", params={"group": "/nope"}).json()["figures"] == []


def test_cancel_needs_the_csrf_token_and_the_origin(alice, site, web):
    jid = site.submit(site.a, "propA", title="to cancel")
    page = alice.get(f"/jobs/{jid}")
    assert 'id="cancel"' in page.text or site.a.get_job(jid).state in (pb.SUCCEEDED, pb.FAILED)
    csrf = csrf_of(alice, f"/jobs/{jid}")
    assert alice.post(f"/jobs/{jid}/cancel").status_code == 403
    assert alice.post(f"/jobs/{jid}/cancel", data={"csrf": "forged"}).status_code == 403
    assert (
        alice.post(f"/jobs/{jid}/cancel", data={"csrf": csrf}, headers={"origin": "https://evil.example"}).status_code
        == 403
    )
    assert site.a.get_job(jid).state in (pb.QUEUED, pb.RUNNING, pb.SUCCEEDED)  # nothing cancelled yet
    # another session's CSRF token is not this session's
    with closing(login(web.url, "token-a")) as other:
        assert alice.post(f"/jobs/{jid}/cancel", data={"csrf": csrf_of(other)}).status_code == 403
    r = alice.post(f"/jobs/{jid}/cancel", data={"csrf": csrf}, headers={"origin": web.url})
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/{jid}"
    job = site.a.wait(jid)
    assert job.state in (pb.CANCELLED, pb.SUCCEEDED)
    # the login and logout forms are protected too
    with httpx.Client(base_url=web.url, timeout=30) as c:
        c.get("/login")
        assert c.post("/login", data={"token": "token-a"}).status_code == 403


def test_cookie_flags_and_sessions(web, site):
    with httpx.Client(base_url=web.url, follow_redirects=False, timeout=30) as c:
        first = c.get("/login")
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower() and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http here
        before = c.cookies["panreduce_session"]
        csrf = re.search(r'name="csrf" value="([^"]+)"', first.text).group(1)
        done = c.post("/login", data={"csrf": csrf, "token": "token-a", "next": "//evil.example/x"})
        assert done.headers["location"] == "/"  # no open redirect
        after = c.cookies["panreduce_session"]
        assert after != before  # a new session id at login: no fixation
        assert httpx.get(web.url + "/api/jobs", cookies={"panreduce_session": before}, timeout=30).status_code == 401
        assert "HttpOnly" in done.headers["set-cookie"]
        page = c.get("/")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"].split("script-src")[1].split(";")[0]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        assert "<script>" not in page.text  # no inline script
        csrf = csrf_of(c)
        assert c.post("/logout", data={"csrf": csrf}).status_code == 303
        assert httpx.get(web.url + "/api/jobs", cookies={"panreduce_session": after}, timeout=30).status_code == 401
    # over https the cookie is Secure and __Host- bound
    port = free_port()
    running = start_web(WebConfig(gateway=site.gateway, public_url=f"https://127.0.0.1:{port}"), port=port)
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/login", timeout=30)
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("__Host-panreduce_session=") and "Secure" in cookie and "HttpOnly" in cookie
        assert "strict-transport-security" in r.headers
    finally:
        running.stop()


def test_static_files_are_served_here(web):
    r = httpx.get(web.url + "/static/plotly.min.js", timeout=30)
    assert r.status_code == 200 and len(r.content) > 1_000_000 and b"plotly" in r.content[:2000].lower()
    assert httpx.get(web.url + "/static/app.js", timeout=30).status_code == 200


def test_the_live_list_streams_the_callers_jobs(alice, site):
    with alice.stream("GET", "/events/jobs", timeout=30) as s:
        buf = ""
        for chunk in s.iter_text():
            buf += chunk
            if "\n\n" in buf:
                break
    event = buf.split("\n\n")[0]
    assert event.startswith("event: jobs")
    rows = json.loads(event.split("data: ", 1)[1])["jobs"]
    assert rows and {r["proposal"] for r in rows} == {"propA"}


# -- OIDC -------------------------------------------------------------------------------------
def oidc_login(url: str, idp, user: str) -> httpx.Client:
    idp.user = user
    c = httpx.Client(base_url=url, follow_redirects=False, timeout=60)
    start = c.get("/login", params={"next": "/api/jobs"})
    assert start.status_code == 303
    target = start.headers["location"]
    assert target.startswith(idp.url + "/authorize?")
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) >= 43 and q["state"] and q["nonce"]
    assert q["redirect_uri"] == url + "/auth/callback"
    back = httpx.get(target, follow_redirects=False, timeout=30)
    assert back.status_code == 302
    callback = back.headers["location"]
    done = c.get(callback.replace(url, ""))
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/api/jobs"
    c.last_callback = callback  # type: ignore[attr-defined]
    return c


def test_oidc_login_with_pkce(web_oidc, site, idp):
    with closing(oidc_login(web_oidc.url, idp, "alice")) as a, closing(oidc_login(web_oidc.url, idp, "bob")) as b:
        a_rows = a.get("/api/jobs").json()["jobs"]
        b_rows = b.get("/api/jobs").json()["jobs"]
        assert {r["proposal"] for r in a_rows} == {"propA"} and {r["proposal"] for r in b_rows} == {"propB"}
        assert a.get(f"/jobs/{site.jobs['propB']}").status_code == 404
        assert b.get(f"/jobs/{site.jobs['propB']}/outputs/0").status_code == 200
        assert a.get("/").text.count("alice") >= 1  # the subject of the ID token
        # the callback cannot be replayed (the state is used once, the code too)
        assert a.get(a.last_callback.replace(web_oidc.url, "")).status_code == 400
    # a callback with a state this browser did not start
    with httpx.Client(base_url=web_oidc.url, follow_redirects=False, timeout=30) as c:
        c.get("/login")
        assert c.get("/auth/callback", params={"code": "x", "state": "forged"}).status_code == 400
        assert c.get("/api/jobs").status_code == 401
    # a browser without the pre-login session cannot finish someone else's login
    idp.user = "alice"
    with httpx.Client(base_url=web_oidc.url, follow_redirects=False, timeout=30) as victim:
        target = victim.get("/login").headers["location"]
        callback = httpx.get(target, follow_redirects=False, timeout=30).headers["location"]
    with httpx.Client(base_url=web_oidc.url, follow_redirects=False, timeout=30) as attacker:
        assert attacker.get(callback.replace(web_oidc.url, "")).status_code == 400
    # the token login form is not offered by an OIDC deployment
    assert httpx.post(web_oidc.url + "/login", data={"token": "token-a"}, timeout=30).status_code == 404
