"""docs/deploy.md's nginx configuration, run by Debian's nginx in front of the app."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from serving import free_port
from werkzeug.serving import make_server

from consent import create_app

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def documented_nginx_config() -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    return re.search(r"```nginx\n(.*?)```", text, re.S).group(1)


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "consent.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("consent.example.com"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def nginx(tmp_path):
    if not Path(NGINX).exists():
        if os.environ.get("CI"):
            pytest.fail("nginx is required in CI (make loadbalancer)")
        pytest.skip("no nginx (make loadbalancer installs Debian's)")
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path}/consent.sqlite",
            "SECRET_KEY": "deploy-test",
            "METRICS_TOKEN": "inside-only",
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cert_path, key_path = self_signed(tmp_path)
    http_port, https_port = free_port(), free_port()
    site = (
        documented_nginx_config()
        .replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{server.server_port};")
        .replace("listen 80;", f"listen 127.0.0.1:{http_port};")
        .replace("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl")
        .replace("/etc/ssl/consent/fullchain.pem", str(cert_path))
        .replace("/etc/ssl/consent/privkey.pem", str(key_path))
    )
    (tmp_path / "consent.conf").write_text(site)
    temporary = tmp_path / "nginx-temp"
    temporary.mkdir()
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        "events {}\nhttp {\n"
        f"  access_log {tmp_path}/access.log;\n"
        + "".join(
            f"  {kind}_temp_path {temporary}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"  include {tmp_path}/consent.conf;\n}}\n"
    )
    process = subprocess.Popen(
        [NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 15
    while not (tmp_path / "nginx.pid").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "nginx did not start"
        time.sleep(0.1)
    yield {"http": http_port, "https": https_port, "cert": cert_path}
    process.terminate()
    process.wait(timeout=15)
    process.stderr.close()
    server.shutdown()
    server.server_close()


def tls_context(cert: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    context.minimum_version = context.maximum_version = version
    return context


def test_tls_1_3_reaches_the_app(nginx):
    context = tls_context(nginx["cert"], ssl.TLSVersion.TLSv1_3)
    response = httpx.get(f"https://127.0.0.1:{nginx['https']}/healthz", verify=context)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert response.headers["X-Request-Id"]


def test_tls_1_2_is_refused(nginx):
    context = tls_context(nginx["cert"], ssl.TLSVersion.TLSv1_2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://127.0.0.1:{nginx['https']}/healthz", verify=context)


def test_plain_http_is_redirected_to_the_public_name(nginx):
    response = httpx.get(
        f"http://127.0.0.1:{nginx['http']}/healthz", headers={"Host": "evil.example"}
    )
    assert response.status_code == 301
    assert response.headers["Location"] == "https://consent.example.com/healthz"


def test_metrics_stay_inside(nginx):
    context = tls_context(nginx["cert"], ssl.TLSVersion.TLSv1_3)
    response = httpx.get(
        f"https://127.0.0.1:{nginx['https']}/metrics",
        headers={"Authorization": "Bearer inside-only"},
        verify=context,
    )
    assert response.status_code == 404
