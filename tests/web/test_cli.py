"""`panreduce serve` starts the page on its own port and prints its URL; `panreduce web`
serves it in front of a gateway. Real processes on loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .conftest import free_port

PANREDUCE = str(Path(sys.executable).parent / "panreduce")


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "the command ended"
        try:
            return httpx.get(url, timeout=5, follow_redirects=False)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_serve_prints_the_page_and_serves_it(tmp_path):
    port, web_port = free_port(), free_port()
    log = open(tmp_path / "serve.log", "w+")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen(
        [
            PANREDUCE,
            "serve",
            "--port",
            str(port),
            "--web-port",
            str(web_port),
            "--store",
            str(tmp_path / "store"),
            "--techniques",
            "scan",
            "--drain-seconds",
            "1",
        ],
        cwd=tmp_path,
        stderr=log,
        text=True,
        env=env,
    )
    try:
        assert wait_http(f"http://127.0.0.1:{web_port}/healthz", proc).text == "ok"
        deadline = time.monotonic() + 60
        while f"live data page on http://127.0.0.1:{web_port}" not in (tmp_path / "serve.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        # access control off: the page opens without a login and lists the jobs
        with httpx.Client(base_url=f"http://127.0.0.1:{web_port}", timeout=30) as c:
            page = c.get("/")
            assert page.status_code == 200 and 'id="jobs"' in page.text
            assert "HttpOnly" in page.headers["set-cookie"]
            assert c.get("/api/jobs").json()["jobs"] == []
    finally:
        stop(proc)


def test_panreduce_web_in_front_of_a_gateway(site, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [PANREDUCE, "web", "--gateway", site.gateway, "--port", str(port), "--auth", "tokens"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        r = wait_http(f"http://127.0.0.1:{port}/", proc)
        assert r.status_code == 401
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            form = c.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            assert c.post("/login", data={"csrf": csrf, "token": "token-b", "next": "/"}).status_code == 303
            rows = c.get("/api/jobs").json()["jobs"]
            assert {r["proposal"] for r in rows} == {"propB"}
        # SIGTERM (Kubernetes' stop, the image's STOPSIGNAL) drains and exits 0, not 143
        proc.terminate()
        assert proc.wait(30) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            stop(proc)
