"""The hedge desk as it steps: its latest step (positions, mode, P&L, treasury, accounts) and a
bounded history of equity, LTV and delta for charts, plus its recent fills and decisions."""

from __future__ import annotations

from collections import deque


class HedgeView:
    """``latest`` is the last ``models.desk.DeskStep`` (None before the first); ``history`` holds
    one ``(ts_s, equity_usd, ltv, delta_coin, spot_usd, hedge_ratio)`` tuple per step (the last
    ``history`` steps); ``fills`` and ``events`` the recent fills and ``(ts_s, event)`` pairs."""

    def __init__(self, node=None, history: int = 3600, recent: int = 200) -> None:
        self.node = node  # dataflows.hedging.HedgeNode: its desk's config and gate (read only)
        self.latest = None
        self.history: deque[tuple] = deque(maxlen=history)
        self.fills: deque = deque(maxlen=recent)
        self.events: deque[tuple[float, str]] = deque(maxlen=recent)
        self.version = 0

    def on_steps(self, steps) -> None:
        for st in steps:
            self.latest = st
            self.history.append((st.ts_s, st.equity_usd, st.ltv, st.delta_coin, st.spot_usd,
                                 st.hedge_ratio))
            if st.fills:
                self.fills.extend(st.fills)
            if st.events:
                self.events.extend((st.ts_s, e) for e in st.events)
        if steps:
            self.version += 1

    def since(self, ts_s: float) -> list[tuple]:
        return [row for row in self.history if row[0] > ts_s]


def attach(pipeline) -> HedgeView:
    view = HedgeView(pipeline.hedge)
    if pipeline.desk_steps is not None:
        pipeline.desk_steps.sink(view.on_steps)
    return view
