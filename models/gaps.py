"""Where data may be missing: connection gaps and silent instruments, as ``Gap`` rows.

Two small state machines, fed by the graph and asked with the time (no clock here):

- ``ConnectionGaps`` turns connection health events into one gap per outage: it opens when a
  connection drops ("disconnect") or goes quiet ("silence") and closes when it is connected again.
- ``InstrumentSilence`` watches each liquid instrument's last event time and reports a "silence"
  gap for any that is quiet for longer than ``limit_s`` (10 s by default: on a liquid instrument
  that is an outage, not a calm market), closed when its data resumes. Liquid means an instrument
  of one of ``assets`` (BTC and ETH by default); a quiet altcoin pair is not an outage.

A gap is reported once, when it closes, with its start and end; ``close(now)`` reports those still
open with an unknown end (NaN), so a run that ends mid-outage still leaves its row.
"""

from __future__ import annotations

import math

import numpy as np

from models.records import ConnectionEvent, Gap


class ConnectionGaps:
    def __init__(self) -> None:
        self._open: dict[tuple[str, str], tuple[str, float, str]] = {}

    def on_event(self, event: ConnectionEvent) -> list[Gap]:
        key = (event.exchange, event.connection)
        if event.kind in ("disconnected", "silent"):
            kind = "disconnect" if event.kind == "disconnected" else "silence"
            self._open.setdefault(key, (kind, event.ts, event.detail))
            return []
        if event.kind == "connected" and key in self._open:
            kind, start, detail = self._open.pop(key)
            return [Gap(event.exchange, "*", kind, start, event.ts, -1, f"{event.connection}: {detail}")]
        return []

    def close(self, now: float) -> list[Gap]:
        gaps = [
            Gap(ex, "*", kind, start, math.nan, -1, f"{conn}: {detail} (still open at {now:.3f})")
            for (ex, conn), (kind, start, detail) in self._open.items()
        ]
        self._open.clear()
        return gaps


class InstrumentSilence:
    def __init__(self, limit_s: float = 10.0, assets: tuple[str, ...] = ("BTC", "ETH")) -> None:
        if limit_s <= 0:
            raise ValueError("limit_s must be positive")
        self.limit_s = limit_s
        self.assets = tuple(assets)
        self._last: dict[tuple[str, str], float] = {}
        self._silent_since: dict[tuple[str, str], float] = {}

    def on_data(self, exchange: np.ndarray, instrument: np.ndarray, asset: np.ndarray,
                event_ts: np.ndarray) -> list[Gap]:
        """Fold in a batch's event times; report the silences this data ends."""
        gaps = []
        latest: dict[tuple[str, str], float] = {}
        watched = np.isin(asset, self.assets)
        if not watched.any():
            return gaps
        rows = zip(exchange[watched].tolist(), instrument[watched].tolist())
        for key, ts in zip(rows, event_ts[watched].tolist()):
            if ts > latest.get(key, -math.inf):
                latest[key] = ts
        for key, ts in latest.items():
            if ts <= self._last.get(key, -math.inf):
                continue
            self._last[key] = ts
            start = self._silent_since.pop(key, None)
            if start is not None:
                gaps.append(Gap(key[0], key[1], "silence", start, ts, -1,
                                f"no data for more than {self.limit_s:g} s"))
        return gaps

    def check(self, now: float) -> None:
        """Mark instruments quiet for longer than the limit (their gap starts at the last event)."""
        for key, last in self._last.items():
            if key not in self._silent_since and now - last > self.limit_s:
                self._silent_since[key] = last

    @property
    def silent(self) -> list[tuple[str, str]]:
        return sorted(self._silent_since)

    def close(self, now: float) -> list[Gap]:
        self.check(now)
        gaps = [
            Gap(ex, inst, "silence", start, math.nan, -1,
                f"no data for more than {self.limit_s:g} s (still silent at {now:.3f})")
            for (ex, inst), start in self._silent_since.items()
        ]
        self._silent_since.clear()
        self._last.clear()  # closed: a second close reports nothing again
        return gaps
