"""Views of the oracle's prices and of the feed connections' health."""

from __future__ import annotations

from collections import deque

from models.records import OraclePrice


class OracleView:
    """The latest oracle price per asset and a bounded history of each."""

    def __init__(self, history: int = 3600) -> None:
        self._history: dict[str, deque[OraclePrice]] = {}
        self._maxlen = history
        self.version = 0  # bumped on every update; sessions compare to skip redraws

    def on_prices(self, prices: list[OraclePrice]) -> None:
        for p in prices:
            self._history.setdefault(p.asset, deque(maxlen=self._maxlen)).append(p)
        self.version += 1

    @property
    def assets(self) -> list[str]:
        return sorted(self._history)

    def latest(self) -> dict[str, OraclePrice]:
        return {a: h[-1] for a, h in sorted(self._history.items()) if h}

    def history(self, asset: str, since_ts: float = float("-inf")) -> list[OraclePrice]:
        return [p for p in self._history.get(asset, ()) if p.ts > since_ts]


class ConnectionView:
    """Each feed connection's health: its last event, and how often it connected and dropped."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], dict] = {}
        self.version = 0

    def on_event(self, event) -> None:
        key = (event.exchange, event.connection)
        s = self._state.setdefault(
            key, {"exchange": event.exchange, "connection": event.connection, "connects": 0,
                  "disconnects": 0, "silences": 0},
        )
        s["state"], s["since"], s["detail"] = event.kind, event.ts, event.detail
        if event.kind == "connected":
            s["connects"] += 1
        elif event.kind == "disconnected":
            s["disconnects"] += 1
        elif event.kind == "silent":
            s["silences"] += 1
        self.version += 1

    def rows(self) -> list[dict]:
        return [dict(v) for _, v in sorted(self._state.items())]


def attach(pipeline) -> OracleView:
    view = OracleView()
    pipeline.graph.oracle_prices.sink(view.on_prices)
    return view


def attach_connections(pipeline) -> ConnectionView:
    view = ConnectionView()
    pipeline.graph.health.sink(view.on_event)
    return view
