"""The recent alerts of every kind (oracle, volatility anomalies, safety, liquidations)."""

from __future__ import annotations

from collections import deque

from models.records import Alert


class AlertsView:
    """The last ``history`` alerts in arrival order, and how many of each kind were seen."""

    def __init__(self, history: int = 1000) -> None:
        self._alerts: deque[Alert] = deque(maxlen=history)
        self.counts_by_kind: dict[str, int] = {}
        self.version = 0  # bumped on every update; sessions compare to skip redraws

    def on_alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self._alerts.append(a)
            self.counts_by_kind[a.kind] = self.counts_by_kind.get(a.kind, 0) + 1
        self.version += 1

    def recent(self, limit: int = 100, *, since_ts: float = float("-inf"),
               severity: str | None = None) -> list[Alert]:
        """The newest ``limit`` alerts after ``since_ts`` (of ``severity`` when given), newest last."""
        picked = [a for a in self._alerts
                  if a.ts > since_ts and (severity is None or a.severity == severity)]
        return picked[-limit:] if limit > 0 else []


def attach(pipeline) -> AlertsView:
    view = AlertsView()
    pipeline.graph.alerts.sink(view.on_alerts)
    return view
