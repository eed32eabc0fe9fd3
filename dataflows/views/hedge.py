"""The hedge desk as it steps: its latest step (positions, mode, P&L, treasury, accounts) and a
bounded history of equity, LTV and delta for charts, plus its recent fills and decisions, and the
series plan 001's KPIs are computed from (``kpi_series``, ``kpis``)."""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import numpy as np

from models.kpis import Kpis, compute_kpis


class KpiPoint(NamedTuple):
    """One point of the KPI series: the equity (USD) and LTV after a step at ``ts_s``, and the
    step's running totals since the view's first step (USD): funding paid (positive = paid),
    the trading P&L before fees and funding (``gross_profit_usd``) and what profits repaid the
    lender (interest + principal). A KPI over a span takes the difference of the totals."""

    ts_s: float
    equity_usd: float
    ltv: float
    funding_paid_usd: float
    gross_profit_usd: float
    repaid_from_profits_usd: float


class HedgeView:
    """``latest`` is the last ``models.desk.DeskStep`` (None before the first); ``history`` holds
    one ``(ts_s, equity_usd, ltv, delta_coin, spot_usd, hedge_ratio)`` tuple per step (the last
    ``history`` steps); ``fills`` and ``events`` the recent fills and ``(ts_s, event)`` pairs;
    ``realized_pnl_usd`` the engine's realized P&L summed over every step seen (USD).

    The KPI series keeps one ``KpiPoint`` every ``kpi_period_s`` (the last ``kpi_points`` of them:
    30 days of minutes by default) plus the latest step, so the KPIs cover far more than the
    chart history at a bounded cost. Steps without a finite equity (an unknown spot) are left out
    of it. The gross trading profit is not on a ``DeskStep``; it is recovered from the desk's cash
    identity (models/desk.py: cash moves only by the gross profit, fees, funding and the profit
    paid out to the lender and the reserve), step to step::

        gross += d(cash_usd) + d(fees_usd) + d(funding_usd) + (profit - retained of a distribution)
    """

    def __init__(self, node=None, history: int = 3600, recent: int = 200,
                 kpi_period_s: float = 60.0, kpi_points: int = 43_200) -> None:
        if not (math.isfinite(kpi_period_s) and kpi_period_s >= 0.0):
            raise ValueError(f"kpi_period_s must be finite and >= 0, got {kpi_period_s!r}")
        if kpi_points < 2:
            raise ValueError(f"kpi_points must be at least 2, got {kpi_points!r}")
        self.node = node  # dataflows.hedging.HedgeNode: its desk's config and gate (read only)
        self.latest = None
        self.history: deque[tuple] = deque(maxlen=history)
        self.fills: deque = deque(maxlen=recent)
        self.events: deque[tuple[float, str]] = deque(maxlen=recent)
        self.version = 0
        self.kpi_period_s = float(kpi_period_s)
        self._kpi_kept: deque[KpiPoint] = deque(maxlen=kpi_points)
        self._kpi_last: KpiPoint | None = None
        self._gross_usd = 0.0
        self._repaid_usd = 0.0
        # The engine reports realized P&L per step; the page shows it summed since the view's start.
        self.realized_pnl_usd = 0.0
        self.initial_loan_usd = math.nan  # the loan's original principal, from the first step
        self._kpis_cache: tuple[int, Kpis | None] = (-1, None)

    def on_steps(self, steps) -> None:
        for st in steps:
            self._account(st)
            self.latest = st
            self.history.append((st.ts_s, st.equity_usd, st.ltv, st.delta_coin, st.spot_usd,
                                 st.hedge_ratio))
            if st.fills:
                self.fills.extend(st.fills)
            if st.events:
                self.events.extend((st.ts_s, e) for e in st.events)
        if steps:
            self.version += 1

    def _account(self, st) -> None:
        """The running totals and the KPI series, for step ``st`` (before it becomes ``latest``)."""
        prev = self.latest
        if math.isfinite(st.realized_pnl_usd):
            self.realized_pnl_usd += st.realized_pnl_usd
        paid_out = 0.0
        if st.distribution is not None:
            d = st.distribution
            paid_out = d.profit_usd - d.retained_usd
            self._repaid_usd += d.repaid_usd
        if prev is None:
            # Principal only moves by repayment, so outstanding + paid is what was borrowed.
            self.initial_loan_usd = st.principal_usd + st.principal_paid_usd
        else:
            self._gross_usd += ((st.cash_usd - prev.cash_usd) + (st.fees_usd - prev.fees_usd)
                                + (st.funding_usd - prev.funding_usd) + paid_out)
        if not math.isfinite(st.equity_usd):
            return
        point = KpiPoint(st.ts_s, st.equity_usd, st.ltv, st.funding_usd, self._gross_usd,
                         self._repaid_usd)
        kept = self._kpi_kept
        if not kept or st.ts_s - kept[-1].ts_s >= self.kpi_period_s:
            kept.append(point)
        self._kpi_last = point

    def since(self, ts_s: float) -> list[tuple]:
        return [row for row in self.history if row[0] > ts_s]

    def kpi_series(self) -> list[KpiPoint]:
        """The KPI series in time order: the kept points and, after them, the latest step's."""
        points = list(self._kpi_kept)
        last = self._kpi_last
        if last is not None and (not points or last.ts_s > points[-1].ts_s):
            points.append(last)
        return points

    def kpi_span(self) -> tuple[int, float]:
        """How many points ``kpi_series`` has, and the seconds from its first to its last."""
        kept, last = self._kpi_kept, self._kpi_last
        if last is None:
            return 0, 0.0
        n = len(kept) + (1 if not kept or last.ts_s > kept[-1].ts_s else 0)
        return n, last.ts_s - (kept[0].ts_s if kept else last.ts_s)

    def kpis(self) -> Kpis | None:
        """Plan 001's six KPIs (models.kpis.compute_kpis) over ``kpi_series``: the equity and LTV
        curve, and the funding paid, gross profit and repayments from profits between its first
        and last point; None when the series spans no time yet. Computed once per ``version``."""
        version, cached = self._kpis_cache
        if version == self.version:
            return cached
        points = self.kpi_series()
        kpis = None
        if len(points) >= 2 and points[-1].ts_s > points[0].ts_s \
                and math.isfinite(self.initial_loan_usd) and self.initial_loan_usd > 0.0:
            first, last = points[0], points[-1]
            kpis = compute_kpis(
                np.fromiter((p.ts_s for p in points), np.float64, len(points)),
                np.fromiter((p.equity_usd for p in points), np.float64, len(points)),
                np.fromiter((p.ltv for p in points), np.float64, len(points)),
                repayments_usd=last.repaid_from_profits_usd - first.repaid_from_profits_usd,
                initial_loan_usd=self.initial_loan_usd,
                funding_paid_usd=last.funding_paid_usd - first.funding_paid_usd,
                gross_profit_usd=last.gross_profit_usd - first.gross_profit_usd,
            )
        self._kpis_cache = (self.version, kpis)
        return kpis


def attach(pipeline) -> HedgeView:
    view = HedgeView(pipeline.hedge)
    if pipeline.desk_steps is not None:
        pipeline.desk_steps.sink(view.on_steps)
    return view
