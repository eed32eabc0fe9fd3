"""AlertsView, the streamz way: a sink on a stream of alert batches."""

from __future__ import annotations

from streamz import Stream

from dataflows.views.alerts import AlertsView
from models.records import Alert


def _alerts(n: int, start: float = 0.0, severity: str = "warning") -> list[Alert]:
    return [Alert(start + i, f"kind{i % 2}", severity, f"message {i}", "BTC") for i in range(n)]


def test_recent_keeps_arrival_order_and_the_newest_limit():
    source = Stream()
    view = AlertsView(history=5)
    source.sink(view.on_alerts)
    source.emit(_alerts(3))
    source.emit(_alerts(4, start=10.0))
    recent = view.recent(limit=3)
    assert [a.ts for a in recent] == [11.0, 12.0, 13.0]
    # the bounded history keeps the last five, and the counts every alert ever seen
    assert [a.ts for a in view.recent(limit=100)] == [2.0, 10.0, 11.0, 12.0, 13.0]
    assert view.counts_by_kind == {"kind0": 4, "kind1": 3}
    assert view.version == 2


def test_recent_filters_by_time_and_severity():
    view = AlertsView()
    view.on_alerts(_alerts(3) + _alerts(2, start=5.0, severity="critical"))
    assert [a.ts for a in view.recent(since_ts=1.0)] == [2.0, 5.0, 6.0]
    assert [a.ts for a in view.recent(severity="critical")] == [5.0, 6.0]
    assert view.recent(limit=0) == []
