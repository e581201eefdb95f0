"""The run's configuration: frozen, validated, secrets kept out of anything printed.

The CLI turns raw flags into a `RunConfig` here; nothing downstream reads flags.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from tpsload.analysis import slo
from tpsload.errors import TpsloadError

# Every --header value is masked in what is written: a Cookie or x-goog-api-key is as secret as Authorization.
MASK = "***"
# A secret this short would, if redacted wherever it occurs, mangle ordinary text ("1" in "HTTP 401");
# a value this short is no credential anyway. It is still masked in the written config.
MIN_SECRET_LEN = 4

_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_USERINFO_ANYWHERE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s'\"@]*@")


def public_url(url: str) -> str:
    """The URL without its userinfo (`user:password@`): what may be printed or written."""
    return _USERINFO.sub(r"\1", url)


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """`http://u:p@host/v1` -> (`http://host/v1`, ("u", "p")); a URL without userinfo is returned as is."""
    clean = public_url(url)
    if clean == url:
        return url, None
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:  # a malformed URL: check_base_url says so
        return clean, None
    return clean, (unquote(user or ""), unquote(password or ""))


GROUPS: dict[str, tuple[str, ...]] = {}


def _group(cls: Any) -> Any:
    GROUPS[cls.__name__] = tuple(f.name for f in dataclasses.fields(cls))
    return cls


@_group
@dataclass(frozen=True)
class Target:
    """Which server, and how to reach it."""

    base_url: str  # never with userinfo: that moves to url_auth, so every URL shown is clean
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    insecure: bool = False
    mock: bool = False
    url_auth: tuple[str, str] | None = field(default=None, repr=False)  # (user, password) from the URL: Basic auth

    def __post_init__(self) -> None:
        clean, auth = split_userinfo(self.base_url)
        if auth is not None:
            object.__setattr__(self, "base_url", clean)
            object.__setattr__(self, "url_auth", auth)


@dataclass(frozen=True)
class ThinkTime:
    """The pause between a reply's end and the next turn: fixed, uniform in [lo, hi], or exponential with
    mean `lo` (seeded per conversation and turn)."""

    kind: str  # "fixed", "uniform" or "exponential"
    lo_s: float
    hi_s: float


@_group
@dataclass(frozen=True)
class WorkloadSpec:
    """What is sent: the prompts and the shape of each request."""

    endpoint: str = "chat"
    stream: bool = True
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
    cache_salt: str | None = None  # None: a fresh salt each run, so no run finds another's prompts cached
    seed: int = 0
    system: str | None = None
    continuous_usage: bool = False
    save_prompts: str | None = None
    max_tokens: int | None = None
    ignore_eos: bool = False
    temperature: float | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    # multi-turn sessions (--turns): turns per conversation as (min, max), seeded; None: one request each
    turns: tuple[int, int] | None = None
    think_time: ThinkTime | None = None  # between a reply's end and the conversation's next turn
    history: str = "replies"  # the assistant turns resent: "replies" (what the server said) or "dataset"
    slot_affinity: bool = False  # llama-server: pin each conversation to one slot (id_slot)
    trace: str | None = None  # --trace FILE: each request's time and lengths from a recorded trace
    trace_format: str = "auto"
    trace_block: int = 512  # tokens per hash_id block (Mooncake's)


@dataclass(frozen=True)
class Stage:
    """One stage of a staged run (--stages): a duration and a load, held (step) or ramped linearly.

    `kind` is "c" (closed loop: requests in flight) or "rate" (open loop: requests per second)."""

    duration_s: float
    kind: str
    start: float
    end: float

    @property
    def ramp(self) -> bool:
        return self.start != self.end

    @property
    def mean(self) -> float:
        """The load the stage asks for on average: a ramp's is the middle of it."""
        return (self.start + self.end) / 2

    @property
    def text(self) -> str:
        load = f"{self.start:g}" + (f"->{self.end:g}" if self.ramp else "")
        return f"{self.duration_s:g}s:{self.kind}={load}"


@_group
@dataclass(frozen=True)
class Load:
    """How much, for how long: closed loop (concurrency) or open loop (rate)."""

    concurrency: int = 1  # closed loop: requests in flight; open loop: the cap (0 = none)
    rate: float | None = None  # open loop: requests per second
    arrival: str = "poisson"
    burstiness: float = 1.0
    requests: int | None = 1
    duration_s: float | None = None
    warmup: int = 0
    grace_s: float = 5.0
    preconnect: bool = True  # keep-alive servers: open the run's connections before its first send
    single: bool = True  # no load flags: the original script's one request
    stages: tuple[Stage, ...] = ()  # --stages: steps, ramps and spikes, all closed loop or all open loop
    trace_speed: float = 1.0  # --trace: the recorded times divided by this
    trace_window: tuple[float, float | None] | None = None  # --trace-window: seconds of the trace replayed


@_group
@dataclass(frozen=True)
class Limits:
    """When a request, or the run, gives up."""

    timeout_s: float = 600.0
    first_byte_timeout_s: float | None = None
    max_response_bytes: int | None = 64 * 1024 * 1024
    max_errors: int | None = None
    max_error_rate: float | None = None
    # a finished run with a larger failed share says its numbers mean little, and exits 1
    max_failed_share: float | None = 0.05


@_group
@dataclass(frozen=True)
class Scale:
    """Where the load comes from: one process, several, or Ray actors."""

    workers: int = 1  # processes the load is split over; 0 = auto
    ray_address: str | None = None  # --ray: 'local', 'auto' or a cluster address
    ray_spread: bool = False


@_group
@dataclass(frozen=True)
class Report:
    """How the result is named and judged."""

    label: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    slos: tuple[slo.SLO, ...] = ()  # parsed once, from --slo
    server_metrics_s: float | None = 1.0  # scrape the server's /metrics this often; None: not at all


_PARTS = {"target": Target, "workload": WorkloadSpec, "load": Load, "limits": Limits, "scale": Scale,
          "report": Report}
_FIELD_PART = {name: part for part, cls in _PARTS.items() for name in GROUPS[cls.__name__]}


@dataclass(frozen=True)
class RunConfig:
    """Everything that shapes one run, in parts; built once from the flags (`from_flags`)."""

    target: Target
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    load: Load = field(default_factory=Load)
    limits: Limits = field(default_factory=Limits)
    scale: Scale = field(default_factory=Scale)
    report: Report = field(default_factory=Report)

    @classmethod
    def of(cls, **flat: Any) -> RunConfig:
        """A config from flat field names (each field name belongs to exactly one part)."""
        parts: dict[str, dict[str, Any]] = {p: {} for p in _PARTS}
        for k, v in flat.items():
            if k not in _FIELD_PART:
                raise TypeError(f"RunConfig has no field {k!r}")
            parts[_FIELD_PART[k]][k] = v
        return cls(**{p: _PARTS[p](**kw) for p, kw in parts.items()})  # type: ignore[arg-type]

    def replace(self, **flat: Any) -> RunConfig:
        """A copy with some fields changed, by their flat names."""
        changes: dict[str, dict[str, Any]] = {}
        for k, v in flat.items():
            if k not in _FIELD_PART:
                raise TypeError(f"RunConfig has no field {k!r}")
            changes.setdefault(_FIELD_PART[k], {})[k] = v
        return dataclasses.replace(self, **{p: dataclasses.replace(getattr(self, p), **kw)
                                            for p, kw in changes.items()})

    @property
    def url(self) -> str:
        path = "/chat/completions" if self.workload.endpoint == "chat" else "/completions"
        return self.target.base_url.rstrip("/") + path

    def request_headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.target.api_key:
            h["Authorization"] = f"Bearer {self.target.api_key}"
        if self.target.url_auth:
            h["Authorization"] = "Basic " + _basic(*self.target.url_auth)
        for k, v in self.target.headers:
            h[k] = v
        return h

    def secrets(self) -> tuple[str, ...]:
        """What a server must not be seen echoing back: the key, the URL's password, every header value."""
        t = self.target
        s = [t.api_key] if t.api_key else []
        if t.url_auth:
            s += [t.url_auth[1], _basic(*t.url_auth)]
        s += [v for _, v in t.headers]
        # parts may come back alone: "Bearer X" without its prefix, one cookie of "a=1; b=2"
        for v in list(s):
            if " " in v:
                s.append(v.split(" ", 1)[1])
            for pair in v.split(";"):
                if "=" in pair:
                    s.append(pair.split("=", 1)[1].strip())
        # longest first, so a secret is not left half-replaced by a shorter one inside it
        return tuple(sorted({x for x in s if len(x) >= MIN_SECRET_LEN}, key=len, reverse=True))

    def public(self) -> dict[str, Any]:
        """Every option that shaped the run, flat, without secrets (the result JSON's `config`)."""
        d: dict[str, Any] = {}
        for part in _PARTS:
            d.update(dataclasses.asdict(getattr(self, part)))
        d.pop("api_key")
        d.pop("url_auth")
        d["prompt"] = None if self.workload.prompt is None else self.workload.prompt[:200]
        d["api_key_set"] = bool(self.target.api_key)
        d["url_auth_set"] = bool(self.target.url_auth)
        d["headers"] = {k: MASK for k, _ in self.target.headers}
        d["slos"] = [o.text for o in self.report.slos]
        return d


def parse_header(h: str) -> tuple[str, str]:
    name, sep, value = h.partition(":")
    if not sep or not name.strip():
        raise TpsloadError(f"--header {h.split(':')[0]!r}: expected 'Name: value'")
    if _BREAKS.search(h):  # a value is never printed: it may be a secret
        raise TpsloadError(f"--header {name.strip()!r}: its value holds a line break or NUL, which no HTTP header may")
    return name.strip(), value.strip()


_BREAKS = re.compile(r"[\r\n\x00]")


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


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def check_base_url(url: str) -> str:
    shown = public_url(url)
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise TpsloadError(f"--base-url {shown!r} is not a valid URL (e.g. http://127.0.0.1:8080/v1)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TpsloadError(f"--base-url {shown!r} is not an http(s) URL (e.g. http://127.0.0.1:8080/v1)")
    return url.rstrip("/")


def server_root(base_url: str) -> str:
    """The server's root for non-OpenAI routes (/health, /props): base URL minus a trailing /v1."""
    u = base_url.rstrip("/")
    return u[:-3] if u.endswith("/v1") else u


def parse_duration(value: str | None) -> float | None:
    """'90', '90s', '5m', '1h' -> seconds."""
    if value is None:
        return None
    v = value.strip().lower()
    mult = {"s": 1, "m": 60, "h": 3600}.get(v[-1:], None)
    num = v[:-1] if mult else v
    try:
        secs = float(num) * (mult or 1)
    except ValueError:
        raise TpsloadError(f"--duration {value!r}: expected seconds, or a number with s/m/h (e.g. 30s, 5m)") from None
    if not secs > 0:
        raise TpsloadError(f"--duration {value!r}: must be positive")
    return secs


def parse_rate(value: str | None, flag: str = "--max-error-rate") -> float | None:
    """'5%' or '0.05' -> 0.05."""
    if value is None:
        return None
    v = value.strip()
    try:
        r = float(v[:-1]) / 100 if v.endswith("%") else float(v)
    except ValueError:
        raise TpsloadError(f"{flag} {value!r}: expected a fraction (0.05) or a percentage (5%)") from None
    if not 0 <= r <= 1:
        raise TpsloadError(f"{flag} {value!r}: must be between 0 and 100%")
    return r


def parse_tag(t: str) -> tuple[str, str]:
    k, sep, v = t.partition("=")
    if not sep or not k.strip():
        raise TpsloadError(f"--tag {t!r}: expected key=value (e.g. --tag gpu=H100)")
    return k.strip(), v.strip()


_STAGE = re.compile(r"^\s*([0-9.]+\s*[smh]?)\s*:\s*(c|rate)\s*=\s*([0-9.]+)\s*(?:->\s*([0-9.]+))?\s*$", re.I)
STAGES_HINT = "e.g. '60s:c=4,120s:c=4->32,30s:c=64' or '30s:rate=2,60s:rate=2->10'"


def parse_stages(value: str) -> tuple[Stage, ...]:
    """'60s:c=4,120s:c=4->32,30s:c=64' -> stages; all closed loop (c) or all open loop (rate)."""
    stages = []
    for part in value.split(","):
        m = _STAGE.match(part)
        if not m:
            raise TpsloadError(f"--stages: {part.strip()!r} is not DURATION:c=N[->M] or DURATION:rate=R[->R2] "
                               f"({STAGES_HINT})")
        try:
            duration = parse_duration(m.group(1).strip())
            start = float(m.group(3))
            end = float(m.group(4)) if m.group(4) is not None else start
        except (TpsloadError, ValueError):
            raise TpsloadError(f"--stages: {part.strip()!r}: a positive duration and numbers ({STAGES_HINT})") from None
        kind = m.group(2).lower()
        if kind == "c" and (start != int(start) or end != int(end) or min(start, end) < 1):
            raise TpsloadError(f"--stages: {part.strip()!r}: concurrency is a whole number of at least 1")
        if kind == "rate" and (min(start, end) < 0 or max(start, end) <= 0):
            raise TpsloadError(f"--stages: {part.strip()!r}: a rate is positive (a ramp may start or end at 0)")
        stages.append(Stage(duration_s=float(duration or 0), kind=kind, start=start, end=end))
    if len({s.kind for s in stages}) > 1:
        raise TpsloadError("--stages: give every stage as c= (closed loop) or every stage as rate= (open loop)")
    return tuple(stages)


def parse_trace_window(value: str | None) -> tuple[float, float | None] | None:
    """'START:END' in seconds of the trace ('60:120', '30s:2m', '60:' to the end) -> (start, end)."""
    if value is None:
        return None
    a, sep, b = value.partition(":")
    try:
        start = parse_duration(a) if a.strip() and not _zero(a) else 0.0  # 0: the trace's first request
        end = parse_duration(b) if b.strip() else None
    except TpsloadError:
        start = end = -1.0
    if not sep or start is None or start < 0 or (end is not None and end <= start):
        raise TpsloadError(f"--trace-window {value!r}: expected START:END in seconds of the trace, END after START "
                           "(e.g. 60:120, 30s:2m, or 60: for the rest)")
    return start, end


def _zero(text: str) -> bool:
    """'0', '0s', '0.0m': no time at all (a --trace-window may start there, a --duration may not)."""
    try:
        return float(text.strip().lower().rstrip("smh")) == 0
    except ValueError:
        return False


def parse_workers(value: str) -> int:
    """'auto' -> 0; otherwise a positive count."""
    if str(value).strip().lower() == "auto":
        return 0
    try:
        n = int(value)
    except ValueError:
        raise TpsloadError(f"--workers {value!r}: a number of processes, or 'auto'") from None
    if n < 1:
        raise TpsloadError(f"--workers {value!r}: at least 1")
    return n


def parse_turns(value: str | None) -> tuple[int, int] | None:
    """'3' -> (3, 3); '2-5' -> (2, 5): turns per conversation, drawn per conversation with the seed."""
    if value is None:
        return None
    lo, sep, hi = value.strip().partition("-")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise TpsloadError(f"--turns {value!r}: a number of turns (3) or a range (2-5)") from None
    if a < 1 or b < a:
        raise TpsloadError(f"--turns {value!r}: at least 1, and a range's low end first (2-5)")
    return a, b


def _seconds(text: str, flag: str, value: str) -> float:
    v = text.strip().lower()
    mult = 1e-3 if v.endswith("ms") else 1.0
    num = v[:-2] if v.endswith("ms") else v[:-1] if v.endswith("s") else v
    try:
        secs = float(num) * mult
    except ValueError:
        raise TpsloadError(f"{flag} {value!r}: seconds (2s, 500ms), a range (1s-3s) or a mean (exp:2s)") from None
    if not secs >= 0:
        raise TpsloadError(f"{flag} {value!r}: must not be negative")
    return secs


def parse_think_time(value: str | None) -> ThinkTime | None:
    """'2s' fixed; '1s-3s' (or '1-3s') uniform; 'exp:2s' exponential with a 2 s mean."""
    if value is None:
        return None
    v = value.strip().lower()
    if v.startswith("exp:"):
        return ThinkTime("exponential", _seconds(v[4:], "--think-time", value), 0.0)
    lo, sep, hi = v.partition("-")
    if sep:
        unit = "ms" if hi.endswith("ms") else "s" if hi.endswith("s") else ""
        a = _seconds(lo if lo.endswith("s") else lo + unit, "--think-time", value)
        b = _seconds(hi, "--think-time", value)
        if b < a:
            raise TpsloadError(f"--think-time {value!r}: a range's low end first (1s-3s)")
        return ThinkTime("uniform", a, b)
    secs = _seconds(v, "--think-time", value)
    return ThinkTime("fixed", secs, secs)


def _session_checks(o: dict[str, Any]) -> None:
    """The flags that only make sense with --turns, and what --turns rules out: one line each."""
    if o.get("turns") is None:
        for flag in ("think_time", "slot_affinity"):
            if o.get(flag):
                raise TpsloadError(f"--{flag.replace('_', '-')} needs --turns (multi-turn conversations)")
        if o.get("history", "replies") != "replies":
            raise TpsloadError("--history needs --turns (multi-turn conversations)")
        return
    if o["endpoint"] != "chat":
        raise TpsloadError("--turns needs --endpoint chat: a conversation is a list of chat messages")
    if o["prompt"] is not None or o["prompt_file"] is not None:
        raise TpsloadError("--turns takes its messages from --input-tokens (synthetic) or a --dataset with "
                           "conversations, not from --prompt/--prompt-file")
    if o["input_tokens"] is None and o["dataset"] is None:
        raise TpsloadError("--turns needs --input-tokens N (synthetic user messages) or a --dataset of conversations")
    if o.get("history", "replies") == "dataset" and o["dataset"] is None:
        raise TpsloadError("--history dataset needs a --dataset of conversations (its replies are resent)")
    if o["shared_prefix"]:
        raise TpsloadError("--shared-prefix does not apply to --turns: a conversation's turns share their history")
    if parse_workers(o["workers"]) != 1 or o["ray_address"]:
        raise TpsloadError("--turns runs in one process: drop --workers/--ray (each conversation keeps its "
                           "history in the process that drives it)")


def from_flags(o: dict[str, Any], given: set[str]) -> RunConfig:
    """Raw flag values -> a validated RunConfig; `given` names the flags given on the command line."""
    def explicit(name: str) -> bool:
        return name in given

    if o["mock"]:
        if explicit("base_url") or o["host"] or o["port"]:
            raise TpsloadError("--mock starts its own server: drop --base-url/--host/--port")
        base_url = "http://127.0.0.1:0/v1"  # replaced by the mock's real address
    elif o["host"] or o["port"]:
        if explicit("base_url"):
            raise TpsloadError("give either --base-url or --host/--port, not both")
        base_url = f"http://{o['host'] or '127.0.0.1'}:{o['port'] or 8080}/v1"
    elif o["base_url"]:
        base_url = o["base_url"]
    else:
        raise TpsloadError("no server given: pass --base-url URL (or --host/--port, or set OPENAI_BASE_URL), "
                           "or --mock to benchmark the bundled mock server")
    base_url = check_base_url(base_url)
    headers = tuple(parse_header(h) for h in o["header"])
    if o["api_key"] and _BREAKS.search(o["api_key"]):  # a key read from a file with its newline
        raise TpsloadError("the API key (--api-key or OPENAI_API_KEY) holds a line break or NUL, which no HTTP "
                           "header may: strip it")
    if split_userinfo(base_url)[1] is not None and (
            o["api_key"] or any(k.lower() == "authorization" for k, _ in headers)):
        raise TpsloadError("--base-url carries credentials (user:password@) and --api-key, OPENAI_API_KEY or an "
                           "Authorization header is set too: each is the Authorization header, give one")
    prompt_sources = [f for f in ("prompt", "prompt_file", "dataset", "input_tokens", "trace") if o.get(f) is not None]
    if len(prompt_sources) > 1:
        raise TpsloadError("give one prompt source: " + " or ".join("--" + f.replace("_", "-")
                                                                   for f in prompt_sources))
    max_tokens, ignore_eos, from_dataset = o["max_tokens"], o["ignore_eos"], False
    if o["output_tokens"] is not None:
        if explicit("max_tokens"):
            raise TpsloadError("give either --output-tokens or --max-tokens, not both")
        if o["output_tokens"] == "dataset":
            if not o["dataset"]:
                raise TpsloadError("--output-tokens dataset needs --dataset")
            from_dataset = True
        else:
            try:
                max_tokens = int(o["output_tokens"])
            except ValueError:
                raise TpsloadError(f"--output-tokens {o['output_tokens']!r}: a number of tokens, or 'dataset'") \
                    from None
            if max_tokens < 1:
                raise TpsloadError("--output-tokens must be at least 1")
        ignore_eos = True
    if o["shared_prefix"] and (o["input_tokens"] is None or o["shared_prefix"] >= o["input_tokens"]):
        raise TpsloadError("--shared-prefix N needs --input-tokens larger than N")
    if o["system"] is not None and o["endpoint"] != "chat":
        raise TpsloadError("--system needs --endpoint chat")
    if o["input_tokens_min"] and o["input_tokens_max"] and o["input_tokens_min"] > o["input_tokens_max"]:
        raise TpsloadError("--input-tokens-min is larger than --input-tokens-max")
    _session_checks(o)
    load_flags = any(o[k] is not None for k in ("concurrency", "requests", "duration", "rate", "turns"))
    rate = o["rate"]
    # closed loop: requests in flight; open loop (--rate): an optional cap, 0 = none
    concurrency = o["concurrency"] or (0 if rate else 1)
    duration = parse_duration(o["duration"])
    requests = o["requests"]
    stages, trace = parse_stages(o["stages"]) if o.get("stages") else (), o.get("trace")
    if stages or trace:
        concurrency, rate, requests, duration = _traffic(o, stages, trace)
        load_flags = True
        if trace:
            ignore_eos = True  # every request reaches its recorded output length
    elif requests is None and duration is None:
        if rate:
            requests = max(16, int(rate * 10))  # about ten seconds of load
        else:
            requests = 4 * concurrency if load_flags else 1
    return RunConfig.of(
        base_url=base_url, model=o["model"], api_key=o["api_key"] or None, endpoint=o["endpoint"],
        stream=o["stream"], headers=headers,
        extra_body=parse_extra_body(o["extra_body"]), timeout_s=o["timeout"], insecure=o["insecure"],
        first_byte_timeout_s=o["first_byte_timeout"],
        max_response_bytes=int(o["max_response_mb"] * 1024 * 1024) if o["max_response_mb"] else None,
        max_errors=o["max_errors"], max_error_rate=parse_rate(o["max_error_rate"]),
        max_failed_share=parse_rate(o.get("max_failed_share") or "5%", "--max-failed-share"),
        prompt=o["prompt"], prompt_file=o["prompt_file"], dataset=o["dataset"], dataset_format=o["dataset_format"],
        input_tokens=o["input_tokens"], input_tokens_stddev=o["input_tokens_stddev"],
        input_tokens_min=o["input_tokens_min"], input_tokens_max=o["input_tokens_max"],
        output_from_dataset=from_dataset, shared_prefix=o["shared_prefix"], cache_bust=not o["no_cache_bust"],
        cache_salt=o.get("cache_salt"), seed=o["seed"], system=o["system"], save_prompts=o["save_prompts"],
        continuous_usage=o["continuous_usage"],
        max_tokens=max_tokens, ignore_eos=ignore_eos,
        temperature=o["temperature"], concurrency=concurrency, requests=requests, duration_s=duration,
        rate=rate, arrival=o["arrival"], burstiness=o["burstiness"],
        slos=tuple(slo.parse(t) for t in o["slo"]),
        workers=parse_workers(o["workers"]),
        label=o["label"], tags=tuple(parse_tag(t) for t in o["tag"]),
        server_metrics_s=None if o.get("no_server_metrics") else o.get("server_metrics_interval", 1.0),
        ray_address=o["ray_address"], ray_spread=o["ray_spread"],
        warmup=o["warmup"], grace_s=o["grace"], tokenizer=o["tokenizer"], single=not load_flags,
        mock=o["mock"],
        preconnect=not o["no_preconnect"],
        turns=parse_turns(o.get("turns")), think_time=parse_think_time(o.get("think_time")),
        history=o.get("history") or "replies", slot_affinity=bool(o.get("slot_affinity")),
        stages=stages, trace=trace, trace_format=o.get("trace_format") or "auto",
        trace_block=o.get("trace_block") or 512, trace_speed=o.get("trace_speed") or 1.0,
        trace_window=parse_trace_window(o.get("trace_window")),
    )


def _traffic(o: dict[str, Any], stages: tuple[Stage, ...], trace: str | None
             ) -> tuple[int, float | None, int | None, float | None]:
    """(concurrency, rate, requests, duration) of a staged run or a trace replay: the stages or the
    trace set the load, so the flags that set it otherwise are refused rather than half obeyed."""
    flag = "--stages" if stages else "--trace"
    if stages and trace:
        raise TpsloadError("give --stages or --trace, not both: a trace brings its own schedule")
    clash = [f"--{k}" for k in ("rate", "requests", "duration") if o.get(k) is not None]
    if o.get("warmup"):
        clash.append("--warmup")
    if stages and stages[0].kind == "c" and o.get("concurrency") is not None:
        clash.append("-c")
    if clash:
        raise TpsloadError(f"{flag} sets the load: drop {', '.join(clash)}")
    if o.get("turns") is not None:  # a trace's requests and a stage's streams are single requests, not turns
        raise TpsloadError(f"{flag} sends single requests: drop --turns")
    total = sum(s.duration_s for s in stages)
    if stages and stages[0].kind == "c":
        return int(max(max(s.start, s.end) for s in stages)), None, None, total
    if stages:  # open loop: the run's offered rate is the stages' mean; -c, if given, caps it
        return o.get("concurrency") or 0, sum(s.mean * s.duration_s for s in stages) / total, None, total
    # a trace: its rate and count are known once it is read (workload.prepare)
    return o.get("concurrency") or 0, None, None, None


def redact(text: str | None, secrets: tuple[str, ...]) -> str | None:
    """Remove secrets from text a server may have echoed back (error bodies, messages)."""
    if not text:
        return text
    for s in secrets:
        if len(s) >= MIN_SECRET_LEN and s in text:
            text = text.replace(s, MASK)
    return public_url_text(text)


def public_url_text(text: str) -> str:
    """Userinfo stripped from every URL inside free text (an exception's message)."""
    return _USERINFO_ANYWHERE.sub(r"\1", text)

