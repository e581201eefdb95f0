"""https with a self-signed certificate: pre-flight says so in one line, and --insecure gets through."""

import shutil
import subprocess

import pytest

from conftest import load_json, tpsload


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


def test_self_signed_certificate_is_named_with_the_insecure_hint(mock_server, self_signed, tmp_path):
    cert, key = self_signed
    m = mock_server(ttft_ms=2, itl_ms=1, tls_cert=cert, tls_key=key)
    assert m.base_url.startswith("https://127.0.0.1:")
    p = tpsload("run", "--base-url", m.base_url, "-n", "2", "--max-tokens", "3", check=2)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "certificate" in p.stderr and "--insecure" in p.stderr, p.stderr
    out = tmp_path / "r.json"
    tpsload("run", "--base-url", m.base_url, "--insecure", "-n", "2", "--max-tokens", "3", "--json", str(out),
            check=0)
    assert load_json(out)["summary"]["requests_ok"] == 2


def test_tls_to_a_plain_http_server_is_one_line(mock_server):
    m = mock_server(ttft_ms=2, itl_ms=1)
    p = tpsload("run", "--base-url", m.base_url.replace("http://", "https://"), check=2)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr and "TLS" in p.stderr, p.stderr
