"""Which server is this? llama.cpp's llama-server, llama-cpp-python, vLLM, SGLang, Ollama or LM
Studio, from what it answers: a route only that server has, then /v1/models' `owned_by` and the
Server header as weaker hints. The result's `server.kind` (null when none matched) and the
evidence it rests on.

What each one answers (see also SERVERS.md):
- llama-server: `GET /props` with `total_slots`; `Server: llama.cpp`; owned_by "llamacpp".
- llama-cpp-python: `GET /openapi.json` titled "llama.cpp Python API" (its version there);
  owned_by "me"; `Server: uvicorn`.
- vLLM: `GET /version` -> {"version"}; owned_by "vllm".
- SGLang: `GET /get_server_info` -> {"version", ...}; owned_by "sglang".
- Ollama: `GET /api/version` -> {"version"}; owned_by "library" (a model's namespace).
- LM Studio: `GET /api/v0/models` (its REST API); owned_by "organization_owner".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

from tpsload.httpjson import get_json
from tpsload.kinds import KINDS

OWNED_BY = {"llamacpp": "llama-server", "me": "llama-cpp-python", "vllm": "vllm", "sglang": "sglang",
            "library": "ollama", "ollama": "ollama", "organization_owner": "lmstudio"}
SERVER_HEADER = {"llama.cpp": "llama-server"}


@dataclass
class Detected:
    kind: str | None = None
    version: str | None = None
    evidence: list[str] = field(default_factory=list)


def _version_of(body: Any) -> str | None:
    v = body.get("version") if isinstance(body, dict) else None
    return v if isinstance(v, str) else None


def _llama_cpp_python(body: Any) -> str | None:
    """llama-cpp-python's version from its OpenAPI page (FastAPI titles it), or None."""
    info = body.get("info") if isinstance(body, dict) else None
    if isinstance(info, dict) and "llama.cpp python" in str(info.get("title", "")).lower():
        return str(info.get("version") or "") or "?"
    return None


def _lmstudio(body: Any) -> str | None:
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, list) and data and all(isinstance(m, dict) and "type" in m and "state" in m for m in data):
        return "?"
    return None


# (kind, route, what in its answer names the server: a version, "?" when it has none, or None)
PROBES: tuple[tuple[str, str, Callable[[Any], str | None]], ...] = (
    ("llama-server", "/props", lambda b: "?" if isinstance(b, dict) and "total_slots" in b else None),
    ("llama-cpp-python", "/openapi.json", _llama_cpp_python),
    ("vllm", "/version", _version_of),
    ("sglang", "/get_server_info", _version_of),
    ("ollama", "/api/version", _version_of),
    ("lmstudio", "/api/v0/models", _lmstudio),
)


assert {p[0] for p in PROBES} == set(KINDS)


def hints(models: Any, server_header: str | None) -> list[tuple[str, str]]:
    """(kind, evidence) from what pre-flight has already: /v1/models' owned_by, the Server header."""
    out: list[tuple[str, str]] = []
    data = models.get("data") if isinstance(models, dict) else None
    owners = {m.get("owned_by") for m in data if isinstance(m, dict)} if isinstance(data, list) else set()
    for owner in sorted(o for o in owners if isinstance(o, str)):
        if owner in OWNED_BY:
            out.append((OWNED_BY[owner], f"/v1/models owned_by {owner!r}"))
    if server_header:
        name = server_header.split("/")[0].strip().lower()
        if name in SERVER_HEADER:
            out.append((SERVER_HEADER[name], f"Server: {server_header}"))
    return out


async def detect(root: str, session: aiohttp.ClientSession, headers: dict[str, str], timeout: float,
                 models: Any, server_header: str | None, known: dict[str, Any] | None = None) -> Detected:
    """Probe the routes that name a server, the hinted kinds first, until one answers as only it does.
    `known`: answers pre-flight already has (route -> JSON body), not asked again."""
    known = known or {}
    hinted = hints(models, server_header)
    first = [k for k, _ in hinted]
    order = sorted(PROBES, key=lambda p: first.index(p[0]) if p[0] in first else len(first))

    async def answer(route: str) -> Any:
        if route in known:
            return known[route]
        try:
            return (await get_json(session, root + route, headers, timeout)).ok_json
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None

    for kind, route, reads in order:
        version = reads(await answer(route))
        if version is not None:
            evidence = [f"GET {route}"] + [e for k, e in hinted if k == kind]
            return Detected(kind, None if version == "?" else version, evidence)
    if hinted:  # no route confirmed it: the first hint, said to be only that
        kind = hinted[0][0]
        return Detected(kind, None, [e for k, e in hinted if k == kind])
    return Detected()
