"""The run's configuration: frozen, validated, secrets kept out of anything printed.

The CLI turns raw flags into a `RunConfig` here; nothing downstream reads flags.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SECRET_HEADERS = {"authorization", "api-key", "x-api-key", "proxy-authorization"}


class TpsloadError(Exception):
    """A problem the user can fix: printed as one line, exit code 2, no traceback."""

    exit_code = 2


@dataclass(frozen=True)
class RunConfig:
    base_url: str
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    endpoint: str = "chat"
    stream: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    extra_body: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 600.0
    first_byte_timeout_s: float | None = None
    max_response_bytes: int | None = 64 * 1024 * 1024
    max_errors: int | None = None
    max_error_rate: float | None = None
    insecure: bool = False
    prompt: str | None = None
    prompt_file: str | None = None
    dataset: str | None = None
    dataset_format: str = "auto"
    input_tokens: int | None = None
    input_tokens_stddev: float = 0.0
    input_tokens_min: int | None = None
    input_tokens_max: int | None = None
    output_from_dataset: bool = False
    shared_prefix: int = 0
    cache_bust: bool = True
    seed: int = 0
    system: str | None = None
    save_prompts: str | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    temperature: float | None = None
    concurrency: int = 1  # closed loop: requests in flight; open loop: the cap (0 = none)
    rate: float | None = None  # open loop: requests per second
    slos: tuple[str, ...] = ()
    arrival: str = "poisson"
    burstiness: float = 1.0
    requests: int | None = 1
    duration_s: float | None = None
    warmup: int = 0
    grace_s: float = 5.0
    tokenizer: str | None = None
    single: bool = True  # no load flags: the original script's one request
    mock: bool = False

    @property
    def url(self) -> str:
        path = "/chat/completions" if self.endpoint == "chat" else "/completions"
        return self.base_url.rstrip("/") + path

    def request_headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        for k, v in self.headers:
            h[k] = v
        return h

    def secrets(self) -> tuple[str, ...]:
        s = [self.api_key] if self.api_key else []
        s += [v for k, v in self.headers if k.lower() in SECRET_HEADERS]
        # "Bearer X" echoed back may appear without its prefix
        s += [v.split(" ", 1)[1] for v in list(s) if " " in v]
        return tuple(x for x in s if x)

    def public(self) -> dict[str, Any]:
        """Every option that shaped the run, without secrets (for the result JSON)."""
        d = dataclasses.asdict(self)
        d.pop("api_key")
        d["prompt"] = None if self.prompt is None else self.prompt[:200]
        d["api_key_set"] = bool(self.api_key)
        d["headers"] = {k: ("***" if k.lower() in SECRET_HEADERS else v) for k, v in self.headers}
        return d


def parse_header(h: str) -> tuple[str, str]:
    name, sep, value = h.partition(":")
    if not sep or not name.strip():
        raise TpsloadError(f"--header {h.split(':')[0]!r}: expected 'Name: value'")
    return name.strip(), value.strip()


def parse_extra_body(s: str | None) -> dict[str, Any]:
    if not s:
        return {}
    try:
        v = json.loads(s)
    except ValueError as e:
        raise TpsloadError(f"--extra-body is not valid JSON: {e}") from None
    if not isinstance(v, dict):
        raise TpsloadError("--extra-body must be a JSON object, e.g. '{\"top_k\": 1}'")
    return v


def check_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TpsloadError(f"--base-url {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8080/v1)")
    try:
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise TpsloadError(f"--base-url {url!r} has an invalid port") from None
    return url.rstrip("/")


def server_root(base_url: str) -> str:
    """The server's root for non-OpenAI routes (/health, /props): base URL minus a trailing /v1."""
    u = base_url.rstrip("/")
    return u[:-3] if u.endswith("/v1") else u
