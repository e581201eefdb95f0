"""After the run, off the hot path: output tokens for the requests the server sent no count for.

The server's own tokenizer first (llama-server and vLLM /tokenize, llama-cpp-python
/extras/tokenize), then a client-side one (core.tokens). A server known to send one token per
output chunk (servers.detect) needs neither: its chunk count is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Callable, Iterable

from tpsload.config import RunConfig
from tpsload.core.client import make_session
from tpsload.core.tokens import count_on_server, pending, resolve_pending
from tpsload.kinds import ONE_TOKEN_PER_CHUNK
from tpsload.records import RequestRecord
from tpsload.workload.lengths import server_counter
from tpsload.workload.tokenizer import Tokenizer


async def resolve_counts(cfg: RunConfig, batches: Iterable[list[RequestRecord]],
                         settle: Callable[[list[RequestRecord]], None], server: dict[str, Any], model: str,
                         tokenizer: Tokenizer) -> None:
    """Fill `output_tokens` and `token_source` of every record that has none yet, a batch at a time
    (the run's ledger parks them on disk past a few hundred); each batch goes to `settle` once counted."""
    chunks_exact = server.get("kind") in ONE_TOKEN_PER_CHUNK
    async with contextlib.AsyncExitStack() as stack:
        counter: Any = None
        asked = False
        for batch in batches:
            if pending(batch) and not asked:
                asked = True  # the server's tokenizer is looked for once
                try:
                    session = await stack.enter_async_context(
                        make_session(8, min(cfg.limits.timeout_s, 30.0), cfg.target.insecure))
                    counter = await server_counter(cfg, session, model)
                except Exception:  # the server went away: the client-side counts below stand in
                    counter = None
            if counter is not None and pending(batch):
                try:
                    await count_on_server(batch, counter.count)
                except Exception:
                    counter = None
            # may load a tokenizer: off the loop
            await asyncio.to_thread(resolve_pending, batch, tokenizer, chunks_exact)
            settle(batch)
