"""After the run, off the hot path: output tokens for the requests the server sent no count for.

The server's own tokenizer first (llama-server and vLLM /tokenize, llama-cpp-python
/extras/tokenize), then a client-side one (core.tokens). A server known to send one token per
output chunk (servers.detect) needs neither: its chunk count is exact.
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

from tpsload.config import RunConfig
from tpsload.core.client import make_session
from tpsload.core.tokens import count_on_server, pending, resolve_pending
from tpsload.kinds import ONE_TOKEN_PER_CHUNK
from tpsload.records import RequestRecord
from tpsload.workload.lengths import server_counter
from tpsload.workload.tokenizer import Tokenizer


async def resolve_counts(cfg: RunConfig, records: Sequence[RequestRecord], server: dict[str, Any], model: str,
                         tokenizer: Tokenizer) -> None:
    """Fill `output_tokens` and `token_source` of every record that has none yet."""
    if pending(records):
        try:
            async with make_session(8, min(cfg.limits.timeout_s, 30.0), cfg.target.insecure) as session:
                counter = await server_counter(cfg, session, model)
                if counter is not None:
                    await count_on_server(records, counter.count)
        except Exception:  # the server went away: the client-side counts below stand in
            pass
    chunks_exact = server.get("kind") in ONE_TOKEN_PER_CHUNK
    # may load a tokenizer: off the loop
    await asyncio.to_thread(resolve_pending, records, tokenizer, chunks_exact)
