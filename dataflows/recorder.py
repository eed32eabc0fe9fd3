"""Recording: every raw message as received, in the capture format replay reads.

One text file per exchange and run, ``<DIR>/<EXCHANGE>.hedgeflow.<start>.capture``, one line per
message: ``<receive epoch seconds>: <raw message>``, the format of ../shared/data/recorded, so
``hedgeflow replay DIR`` runs a recorded session through the graph again with the same clock.
A message is written as received, whatever its verdict: quarantined ones too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from models.records import RawBatch


class CaptureRecorder:
    def __init__(self, directory: str | os.PathLike, start_ts: float) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.start_ts = start_ts
        self._files: dict[str, TextIO] = {}
        self.lines = 0

    def path(self, exchange: str) -> Path:
        return self.directory / f"{exchange.upper()}.hedgeflow.{int(self.start_ts)}.capture"

    def on_raw(self, batch: RawBatch) -> None:
        f = self._files.get(batch.exchange)
        if f is None:
            f = self._files[batch.exchange] = self.path(batch.exchange).open("a", encoding="utf-8")
        # A message holding a newline would break the one-line-per-message format; JSON text from
        # a websocket never does, but the guard keeps a capture readable whatever arrives.
        f.writelines(
            f"{ts!r}: {m.replace(chr(10), ' ')}\n" for ts, m in zip(batch.receive_ts.tolist(), batch.messages)
        )
        f.flush()
        self.lines += len(batch)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
