"""JSON GET/POST for the calls that are not measured: pre-flight (/v1/models, /props, /version),
the server's /tokenize, the overhead probe. The measured requests go through core.client instead.

Network failures (aiohttp.ClientError, asyncio.TimeoutError) are the caller's to word: pre-flight
turns them into a one-line error, the optional probes into "not there".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp

# what a reply that is not JSON keeps of its body, for a message
TEXT_KEPT = 200


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the parsed JSON; None when the body is not JSON
    text: str  # the start of the body when it is not JSON, else ""
    server: str | None = None  # the Server header

    @property
    def ok_json(self) -> Any:
        """The JSON body of a 200 reply; None otherwise."""
        return self.body if self.status == 200 else None


async def _call(session: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str], timeout: float,
                body: Any = None) -> Reply:
    data = None if body is None else json.dumps(body)
    async with session.request(method, url, data=data, headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        raw = await r.read()
        try:
            parsed, text = json.loads(raw), ""
        except ValueError:  # UnicodeDecodeError included
            parsed, text = None, raw[:TEXT_KEPT].decode("utf-8", "replace")
        return Reply(r.status, parsed, text, r.headers.get("Server"))


async def get_json(session: aiohttp.ClientSession, url: str, headers: dict[str, str], timeout: float) -> Reply:
    return await _call(session, "GET", url, headers, timeout)


async def post_json(session: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str],
                    timeout: float) -> Reply:
    return await _call(session, "POST", url, headers, timeout, body)
