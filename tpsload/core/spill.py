"""Records waiting for a token count, parked on disk: a long run against a server that sends no
counts holds their text in a temporary file, not in memory (the run's ledger hands them over in
batches; they are read back a batch at a time when the counts are resolved after the run).

The file is unlinked as soon as it is made (tempfile.TemporaryFile): nothing is left behind, even
after a crash.
"""

from __future__ import annotations

import pickle
import tempfile
from typing import IO, Iterator

from tpsload.records import RequestRecord


class SpillFile:
    def __init__(self) -> None:
        self._fh: IO[bytes] | None = None
        self.batches = 0

    def __call__(self, batch: list[RequestRecord]) -> None:
        if self._fh is None:
            self._fh = tempfile.TemporaryFile(prefix="tpsload-spill-")  # noqa: SIM115
        pickle.dump(batch, self._fh, protocol=pickle.HIGHEST_PROTOCOL)
        self.batches += 1

    def read(self) -> Iterator[list[RequestRecord]]:
        """Every batch written, in order, once; then the file is gone."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            fh.seek(0)
            for _ in range(self.batches):
                yield pickle.load(fh)
        finally:
            fh.close()
            self.batches = 0
