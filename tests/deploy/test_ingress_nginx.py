"""A large upload through nginx, configured as the chart's default Ingress annotations make
ingress-nginx configure it (grpc_pass to the gateway; proxy-body-size -> client_max_body_size;
proxy-read/send-timeout -> grpc_read/send_timeout): 100 MiB goes up and comes back whole.
With ingress-nginx's own default body size (1m) the same upload is refused, which is why the
chart sets it, and the gateway takes the cut stream as the caller's end, not an internal
error. Real nginx (Debian's, installed by .ci/run) in front of a real gateway on
loopback."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from panreduce import errors
from panreduce.client import Client

ROOT = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
MiB = 1 << 20
PREFIX = "nginx.ingress.kubernetes.io/"

pytestmark = pytest.mark.skipif(
    NGINX is None and not os.environ.get("CI"), reason="nginx is not installed (.ci/run installs Debian's nginx-light)"
)


def chart_annotations() -> dict[str, str]:
    values = yaml.safe_load((ROOT / "charts" / "panreduce" / "values.yaml").read_text())
    return {k.removeprefix(PREFIX): str(v) for k, v in values["gateway"]["ingress"]["annotations"].items()}


def nginx_conf(annotations: dict[str, str], listen: int, upstream: str, tmp: Path) -> str:
    """The parts of the server block ingress-nginx renders from these annotations."""
    assert annotations.get("backend-protocol") == "GRPC"
    body = annotations.get("proxy-body-size", "1m")  # ingress-nginx's default
    read = annotations.get("proxy-read-timeout", "60")
    send = annotations.get("proxy-send-timeout", "60")
    return f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log {tmp}/access.log;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server {{
    listen 127.0.0.1:{listen} http2;
    client_max_body_size {body};
    location / {{
      grpc_pass grpc://{upstream};
      grpc_read_timeout {read}s;
      grpc_send_timeout {send}s;
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def nginx_in_front(upstream: str, annotations: dict[str, str], tmp: Path):
    if NGINX is None:
        pytest.fail("nginx is not installed: .ci/run installs Debian's nginx-light")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(annotations, port, upstream, tmp))
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")])
    try:
        end = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    pytest.fail(f"nginx did not start: {(tmp / 'error.log').read_text()}")
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    from panreduce_gateway.embedded import Platform

    with Platform(["scan"], store_root=tmp_path_factory.mktemp("store")) as platform:
        yield platform


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "scan_100MiB.nxs"
    with open(path, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(MiB))
    return path


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    return h.hexdigest()


def test_a_100_mib_upload_and_its_download_pass_nginx_with_the_charts_annotations(gateway, big_file, tmp_path):
    annotations = chart_annotations()
    assert annotations["proxy-body-size"] == "4g"
    with nginx_in_front(gateway.address, annotations, tmp_path / "nginx") as front, Client(front, timeout=300) as c:
        info = c.upload(big_file)
        assert info.size == 100 * MiB and info.sha256 == _sha(big_file)
        back = c.download(info.uri, tmp_path / "back.nxs")
        assert back.size == 100 * MiB and _sha(tmp_path / "back.nxs") == info.sha256


def test_with_ingress_nginxs_default_body_size_the_upload_is_refused(gateway, big_file, tmp_path, caplog):
    annotations = {k: v for k, v in chart_annotations().items() if k != "proxy-body-size"}  # 1m
    with nginx_in_front(gateway.address, annotations, tmp_path / "nginx") as front, Client(front, timeout=120) as c:
        with pytest.raises(errors.PanReduceError) as caught:
            c.upload(big_file)
        assert "413" in str(caught.value) or "Too Large" in str(caught.value), caught.value
        assert c.health() == "SERVING"  # small calls still pass
    log = (tmp_path / "nginx" / "error.log").read_text()
    assert "client intended to send too large" in log
    # the stream the proxy cut is the caller's end, not a fault of the gateway
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]
