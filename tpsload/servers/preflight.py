"""Before the load: is the server there, which model, what does it say about itself.

Failures here are the user's to fix (wrong URL, key, model) and become one line
and exit 2. Capacity mismatches (more requests than llama-server slots) are
warnings: the run still measures what the user asked for.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tpsload.config import RunConfig, TpsloadError, redact, server_root
from tpsload.httpjson import get_json
from tpsload.servers.detect import detect


@dataclass
class ServerInfo:
    model: str
    server: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    llama_cpp: bool = False


async def preflight(cfg: RunConfig, session: aiohttp.ClientSession, timeout: float = 10.0) -> ServerInfo:
    headers = cfg.request_headers()
    secrets = cfg.secrets()
    models_url = cfg.target.base_url + "/models"
    try:
        reply = await get_json(session, models_url, headers, timeout)
    # the TLS errors first: they are ClientConnectorErrors too, and would read as "cannot reach"
    except aiohttp.ClientConnectorCertificateError as e:
        raise TpsloadError(redact(f"the TLS certificate of {cfg.target.base_url} was not accepted "
                                  f"({_cert_reason(e)}): --insecure skips verification", secrets)) from None
    except aiohttp.ClientSSLError as e:
        raise TpsloadError(redact(f"TLS failure talking to {cfg.target.base_url} ({_ssl_reason(e)}): is it "
                                  "https? (--insecure skips certificate verification)", secrets)) from None
    except aiohttp.ClientConnectorError as e:
        err = e.os_error
        if isinstance(err, socket.gaierror):
            why = f"cannot resolve the host name: {err.strerror}"
        elif err is not None and err.errno and err.errno > 0:
            why = os.strerror(err.errno).lower()
        else:
            why = str(err or e)
        raise TpsloadError(f"cannot reach {cfg.target.base_url} ({why}): is the server running? "
                           "(--base-url / --host --port)") from None
    except asyncio.TimeoutError:
        raise TpsloadError(f"{models_url} did not answer within {timeout:g} s (--base-url)") from None
    except aiohttp.ClientError as e:
        raise TpsloadError(redact(f"cannot talk to {cfg.target.base_url}: {e}", secrets)) from None
    status, body = reply.status, reply.body
    if status in (401, 403):
        where = "the credentials in --base-url" if cfg.target.url_auth else "--api-key or OPENAI_API_KEY"
        raise TpsloadError(f"the server refused the API key (HTTP {status} on /models): check {where}")
    if status == 503:
        raise TpsloadError("the server is not ready (HTTP 503 on /models): is the model still loading?")
    ids: list[str] = []
    if status == 200 and isinstance(body, dict) and isinstance(body.get("data"), list):
        ids = [m.get("id") for m in body["data"] if isinstance(m, dict) and m.get("id")]
    info = ServerInfo(model=cfg.target.model or "")
    info.server["models"] = ids
    if reply.server:
        info.server["server_header"] = reply.server
    props = await _llama_props(cfg, session, headers, timeout, info)
    found = await detect(server_root(cfg.target.base_url), session, headers, timeout, body, reply.server,
                         known={"/props": props})
    info.server["kind"] = found.kind
    info.server["kind_evidence"] = found.evidence
    if found.version:
        info.server["version"] = found.version
        if found.kind in ("vllm", "sglang"):  # the names earlier results used
            info.server[f"{found.kind}_version"] = found.version
    if not cfg.target.model:
        if not ids:
            raise TpsloadError(f"cannot pick a model: {models_url} answered HTTP {status} with no model list; "
                               "pass --model")
        info.model = ids[0]
    elif ids and cfg.target.model not in ids:
        if info.llama_cpp:
            info.warnings.append(f"model {cfg.target.model!r} is not in /v1/models ({', '.join(ids)}); "
                                 "llama-server serves its one model whatever the name")
        else:
            raise TpsloadError(f"model {cfg.target.model!r} is not served here; available: {', '.join(ids)} (--model)")
    return info


async def _llama_props(cfg: RunConfig, session: aiohttp.ClientSession, headers: dict[str, str],
                       timeout: float, info: ServerInfo) -> Any:
    """llama-server's /props: slots and per-slot context, for the capacity warnings. Returns its
    JSON (None when it did not answer), which server detection reads too."""
    try:
        props = (await get_json(session, server_root(cfg.target.base_url) + "/props", headers, timeout)).ok_json
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None
    if not isinstance(props, dict) or "total_slots" not in props:
        return props
    info.llama_cpp = True
    gen = props.get("default_generation_settings") or {}
    n_ctx = gen.get("n_ctx") if isinstance(gen, dict) else None
    slots = props.get("total_slots")
    info.server["llama_cpp"] = {
        "total_slots": slots,
        "n_ctx_per_slot": n_ctx,
        "model_path": props.get("model_path"),
        "build_info": props.get("build_info"),
    }
    if isinstance(slots, int) and not cfg.load.rate and cfg.load.concurrency > slots:
        info.warnings.append(f"--concurrency {cfg.load.concurrency} exceeds llama-server's {slots} slots: "
                             f"{cfg.load.concurrency - slots} requests will queue and TTFT will include the wait "
                             "(start the server with -np N to add slots)")
    return props


def _cert_reason(e: aiohttp.ClientConnectorCertificateError) -> str:
    err = e.certificate_error
    return str(getattr(err, "verify_message", None) or getattr(err, "reason", None) or err)


def _ssl_reason(e: aiohttp.ClientSSLError) -> str:
    err = e.os_error if isinstance(e.os_error, ssl.SSLError) else None
    return str((err.reason if err is not None else None) or e.os_error or e)
