"""The injected clock: the only place the graph learns what time it is.

Live runs use ``WallClock``; replay and backtest use ``SimulatedClock``, whose time is set from the
data (a capture's receive times, a bar's timestamp). Nodes and timers ask ``clock.now()``;
nothing in ``models/`` reads the time at all. Times are UTC epoch seconds (float).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Current time, UTC epoch seconds."""
        ...


class WallClock:
    """The machine's clock."""

    def now(self) -> float:
        return time.time()


class SimulatedClock:
    """A clock that the data drives. It never goes backwards: a late timestamp leaves it unchanged."""

    def __init__(self, start_ts: float = 0.0) -> None:
        self._now = float(start_ts)

    def now(self) -> float:
        return self._now

    def advance_to(self, ts: float) -> None:
        if ts > self._now:
            self._now = float(ts)

    def advance_by(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a simulated clock does not go backwards")
        self._now += seconds


def iso_utc(ts_s: float) -> str:
    """Epoch seconds as ISO 8601 in UTC with a ``Z`` (``2026-12-25T08:00:00Z``), as hedgeflow
    prints times."""
    import datetime as dt

    return dt.datetime.fromtimestamp(float(ts_s), dt.timezone.utc).isoformat().replace("+00:00", "Z")
