"""The shipped HTTPS recipe (deploy/nginx/posfleet.conf) in front of a real fleet server (issue 13, item 2).

Debian's nginx runs the recipe as shipped, with only its ports, certificate paths and the upstream port moved to
what this test owns. Checked: the API answers over HTTPS with TLS 1.2+ only, plain HTTP is sent to HTTPS, and the
server sees each client's own address through the proxy: ten wrong tokens from 127.0.0.2 lock out 127.0.0.2 only,
a user at 127.0.0.3 is still served (without the forwarded address every user behind the proxy would share one
lock-out).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import warnings
from pathlib import Path

import httpx
import pytest

from tests.fleet import free_port, port_open, wait_for

RECIPE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "posfleet.conf"


def _nginx() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(path).exists():
        pytest.fail("nginx is not installed: ./dev installs it (Debian package nginx)")
    return path


@pytest.fixture
def proxy(pki, server, tmp_path: Path):  # type: ignore[no-untyped-def]
    cert, key = pki.ca.issue_keypair("localhost", "broker", tmp_path / "https", 30, san=["localhost", "127.0.0.1"])
    https, http = free_port(), free_port()
    site = RECIPE.read_text()
    for old, new in (("listen 80;", f"listen 127.0.0.1:{http};"), ("listen [::]:80;", ""),
                     ("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
                     ("listen [::]:443 ssl http2;", ""),
                     ("/etc/posfleet/https/fullchain.pem", str(cert)), ("/etc/posfleet/https/privkey.pem", str(key)),
                     ("http://127.0.0.1:8080", f"http://127.0.0.1:{server.http_port}"),
                     ("return 301 https://$host$request_uri;", f"return 301 https://$host:{https}$request_uri;")):
        assert old in site, f"the recipe no longer says {old!r}: update this test with it"
        site = site.replace(old, new)
    d = tmp_path / "nginx"
    d.mkdir()
    conf = d / "nginx.conf"
    temps = "".join(f"{k}_temp_path {d}/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # as root (the test machine), the workers would run as nobody and could not spool request bodies to the
    # temporary folders here (in pytest's private directory)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
                    f"events {{}}\nhttp {{\naccess_log off;\n{temps}{site}\n}}\n")
    nginx = _nginx()
    check = subprocess.run([nginx, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([nginx, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: port_open(https) or proc.poll() is not None, 10, "nginx to listen")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield {"https": https, "http": http, "ca": str(pki.dir / "ca.pem"), "log": d / "error.log"}
    finally:
        proc.terminate()
        proc.wait(10)


def _client(proxy: dict, source: str) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=proxy["ca"])
    return httpx.Client(transport=httpx.HTTPTransport(verify=ctx, local_address=source),
                        base_url=f"https://localhost:{proxy['https']}", timeout=10)


def test_api_over_https_through_the_recipe(proxy, server) -> None:  # type: ignore[no-untyped-def]
    with _client(proxy, "127.0.0.1") as c:
        r = c.get("/api/v1/units", headers={"Authorization": f"Bearer {server.token()}"})
        assert r.status_code == 200, r.text
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert c.get("/dashboard/").status_code == 200
    # TLS 1.1 and older are refused
    ctx = ssl.create_default_context(cafile=proxy["ca"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://localhost:{proxy['https']}/healthz", verify=ctx, timeout=5)
    # plain HTTP is redirected to HTTPS, never served
    r = httpx.get(f"http://127.0.0.1:{proxy['http']}/api/v1/units", follow_redirects=False, timeout=5)
    assert r.status_code == 301 and r.headers["location"].startswith("https://")


def test_the_server_sees_each_clients_own_address_through_the_proxy(proxy, server) -> None:  # type: ignore[no-untyped-def]
    with _client(proxy, "127.0.0.2") as attacker:
        codes = [attacker.get("/api/v1/units", headers={"Authorization": "Bearer wrong"}).status_code
                 for _ in range(12)]
        assert codes[:10] == [401] * 10 and codes[-1] == 429, codes
    with _client(proxy, "127.0.0.3") as user:
        r = user.get("/api/v1/units", headers={"Authorization": f"Bearer {server.token()}"})
        assert r.status_code == 200, "a user behind the same proxy was locked out with the attacker"
    # and a client cannot pick its own address: the proxy overwrites X-Forwarded-For (still locked out, not a 401)
    with _client(proxy, "127.0.0.2") as attacker:
        r = attacker.get("/api/v1/units", headers={"Authorization": "Bearer wrong", "X-Forwarded-For": "127.0.0.9"})
        assert r.status_code == 429


def test_a_body_too_large_gets_the_apis_error_body_through_the_proxy(proxy, server) -> None:  # type: ignore[no-untyped-def]
    """Refused by the API (over its 32 MiB, under nginx's 33m) or by nginx itself (over 33m): the same JSON body
    either way (docs/api.md), not nginx's HTML page."""
    headers = {"Authorization": f"Bearer {server.token()}", "Content-Type": "text/csv"}
    with _client(proxy, "127.0.0.1") as c:
        for size in (32 * 2**20 + 100, 34 * 2**20):
            r = c.post("/api/v1/registry/units/import", content=b"x" * size, headers=headers)
            assert r.status_code == 413 and r.headers["content-type"].startswith("application/json"), \
                (size, r.text, proxy["log"].read_text()[-2000:])
            body = r.json()
            assert isinstance(body["detail"], str) and body["errors"][0]["field"] == "body", (size, body)
