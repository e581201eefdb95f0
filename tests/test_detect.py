"""Server detection: which server answers, from what it answers (routes, headers, /v1/models), and
that the result records it. The mock imitates each server's identifying answers; the real
llama-server and llama-cpp-python are checked in their own tests."""

import asyncio

import pytest

from conftest import load_json, tpsload
from tpsload.config import server_root
from tpsload.core.client import make_session
from tpsload.httpjson import get_json
from tpsload.kinds import KINDS
from tpsload.servers.detect import detect

VERSIONS = {"llama-server": None, "llama-cpp-python": "0.3.16", "vllm": "0.11.0", "sglang": "0.5.3",
            "ollama": "0.12.6", "lmstudio": None}
ROUTE = {"llama-server": "GET /props", "llama-cpp-python": "GET /openapi.json", "vllm": "GET /version",
         "sglang": "GET /get_server_info", "ollama": "GET /api/version", "lmstudio": "GET /api/v0/models"}


def detect_at(base_url):
    async def go():
        async with make_session(4, 10.0, False) as s:
            models = await get_json(s, base_url + "/models", {}, 10.0)
            return await detect(server_root(base_url), s, {}, 10.0, models.body, models.server)

    return asyncio.run(go())


@pytest.mark.parametrize("kind", KINDS)
def test_each_server_is_told_by_the_route_only_it_has(mock_server, kind):
    found = detect_at(mock_server(ttft_ms=1, itl_ms=1, imitate=kind).base_url)
    assert (found.kind, found.version) == (kind, VERSIONS[kind])
    assert found.evidence[0] == ROUTE[kind]


def test_an_unknown_server_is_not_guessed(mock_server):
    found = detect_at(mock_server(ttft_ms=1, itl_ms=1).base_url)
    assert (found.kind, found.version, found.evidence) == (None, None, [])


def test_the_result_records_the_kind(mock_server, tmp_path):
    out = tmp_path / "r.json"
    m = mock_server(ttft_ms=1, itl_ms=1, imitate="vllm")
    tpsload("run", "--base-url", m.base_url, "-n", "1", "--max-tokens", "2", "--json", str(out), check=0)
    server = load_json(out)["server"]
    assert server["kind"] == "vllm" and server["version"] == server["vllm_version"] == "0.11.0"
    assert server["kind_evidence"] == ["GET /version", "/v1/models owned_by 'vllm'"]
    m = mock_server(ttft_ms=1, itl_ms=1)
    tpsload("run", "--base-url", m.base_url, "-n", "1", "--max-tokens", "2", "--json", str(out), check=0)
    assert load_json(out)["server"]["kind"] is None


@pytest.mark.llama
def test_the_real_llama_server_is_told(llama_server):
    found = detect_at(llama_server().base_url)
    assert found.kind == "llama-server" and found.evidence[0] == "GET /props"
    assert "Server: llama.cpp" in found.evidence


@pytest.mark.llama_cpp_python
def test_the_real_llama_cpp_python_is_told(llama_cpp_python):
    found = detect_at(llama_cpp_python(interrupt=False).base_url)
    assert (found.kind, found.version) == ("llama-cpp-python", "0.3.16")
    assert found.evidence == ["GET /openapi.json", "/v1/models owned_by 'me'"]
