"""Views of the oracle's prices and of the feed connections' health."""

from __future__ import annotations

from collections import deque

from models.records import OraclePrice


class OracleView:
    """The latest oracle price per asset and a bounded history of each; with the graph's
    ``oracle`` (models.oracle.RobustOracle), each source's standing at the latest price
    (``sources(asset)``: models.oracle.VenueComparison rows), and with its chain ``publisher``
    the prices last confirmed on chain (``on_chain()``)."""

    def __init__(self, history: int = 3600, oracle=None, publisher=None) -> None:
        self._history: dict[str, deque[OraclePrice]] = {}
        self._maxlen = history
        self._oracle = oracle
        self._publisher = publisher
        self._sources: dict[str, tuple] = {}
        self.version = 0  # bumped on every update; sessions compare to skip redraws

    def on_prices(self, prices: list[OraclePrice]) -> None:
        for p in prices:
            self._history.setdefault(p.asset, deque(maxlen=self._maxlen)).append(p)
            if self._oracle is not None:
                # The evaluation that made this price is the oracle's latest one of the asset.
                self._sources[p.asset] = tuple(self._oracle.cross_venue(p.asset))
        self.version += 1

    def sources(self, asset: str) -> tuple:
        """Each source of ``asset`` at its latest price: mid, spread and deviation from the
        consensus (bps), used / rejected / stale with the reason, reliability and weight."""
        return self._sources.get(asset, ())

    def on_chain(self) -> dict[str, tuple[float, float]]:
        """Per asset, the price last confirmed on chain and its time: ``(price_usd, ts)``; empty
        without a chain publisher."""
        return {} if self._publisher is None else self._publisher.confirmed_prices()

    def publisher_counts(self) -> dict[str, int]:
        """The chain publisher's counts (decided, sent, confirmed, failed...); empty without one."""
        return {} if self._publisher is None else dict(self._publisher.stats.counts)

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
    view = OracleView(oracle=pipeline.graph.oracle, publisher=pipeline.graph.publisher)
    pipeline.graph.oracle_prices.sink(view.on_prices)
    return view


def attach_connections(pipeline) -> ConnectionView:
    view = ConnectionView()
    pipeline.graph.health.sink(view.on_event)
    return view
