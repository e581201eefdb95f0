"""Failed requests -> their likely causes, and whether so many failed that the run's numbers say
little. Pure: records in, words out.

A cause is named only where the records show it, e.g. llama-cpp-python's --interrupt_requests:
streams that got `data: [DONE]` but lost the rest of their body while other requests arrived.
"""

from __future__ import annotations

from typing import Sequence

from tpsload.records import ErrorClass, RequestRecord

# runs whose failed share is above this say so loudly and exit 1 (--max-failed-share)
DEFAULT_MAX_FAILED_SHARE = 0.05

INTERRUPTED = ("the server interrupts running requests when new ones arrive "
               "(llama-cpp-python: --interrupt_requests False)")


def _end(r: RequestRecord) -> int | None:
    return r.t_done or r.t_end


def _interrupted(r: RequestRecord, sends: Sequence[int]) -> bool:
    """Ended with [DONE] but an unfinished body, while another request was sent during it."""
    if r.error_class != ErrorClass.DISCONNECT or not r.saw_done or r.t_send is None:
        return False
    end = _end(r)
    return end is not None and any(r.t_send < t <= end for t in sends)


def likely_causes(records: Sequence[RequestRecord]) -> dict[ErrorClass, str]:
    """For each class of failure whose cause the records show, that cause in the user's terms."""
    measured = [r for r in records if not r.warmup]
    failed = [r for r in measured if r.failed]
    if not failed:
        return {}
    sends = sorted(r.t_send for r in measured if r.t_send is not None)
    causes: dict[ErrorClass, str] = {}
    disconnects = [r for r in failed if r.error_class == ErrorClass.DISCONNECT]
    if disconnects and 2 * sum(_interrupted(r, sends) for r in disconnects) >= len(disconnects):
        causes[ErrorClass.DISCONNECT] = INTERRUPTED
    messages: dict[ErrorClass, list[str]] = {}
    for r in failed:
        if r.error_class is not None:
            messages.setdefault(r.error_class, []).append((r.error or "").lower())
    for cls, texts in messages.items():
        if cls in causes:
            continue
        if cls == ErrorClass.CONNECT and any("refused" in t for t in texts):
            causes[cls] = "the server refused connections: it is not running, or it stopped during the run"
        elif cls == ErrorClass.HTTP_4XX and any("context" in t for t in texts):
            causes[cls] = ("prompt + max_tokens exceed the context the server gives a request "
                           "(llama-server splits -c over its -np slots)")
        elif cls == ErrorClass.HTTP_429:
            causes[cls] = "the server rate-limits (lower -c or --rate)"
        elif cls == ErrorClass.HTTP_5XX and any(t.startswith("http 503") for t in texts):
            causes[cls] = "the server is overloaded or still loading (HTTP 503)"
        elif cls == ErrorClass.TIMEOUT_FIRST_BYTE:
            causes[cls] = ("no answer before the timeout: the server may queue more requests than it serves "
                           "(lower -c, or raise --timeout / --first-byte-timeout)")
    return causes


def too_many_failed(ok: int, failed: int, by_class: dict[ErrorClass, int], causes: dict[ErrorClass, str],
                    max_share: float | None) -> str | None:
    """The one loud line for a run whose failed share is above `max_share`, or None."""
    total = ok + failed
    if not failed or max_share is None or failed <= max_share * total:
        return None
    parts = []
    for cls, n in sorted(by_class.items(), key=lambda kv: (-kv[1], kv[0])):
        if cls == ErrorClass.CANCELLED:
            continue
        parts.append(f"{cls} {n}" + (f": likely {causes[cls]}" if cls in causes else ""))
    return (f"{failed} of {total} requests failed ({failed / total:.0%}, over --max-failed-share {max_share:.0%}): "
            f"these numbers say little about the server ({'; '.join(parts)})")
