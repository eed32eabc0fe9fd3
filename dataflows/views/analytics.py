"""The analytics' latest results per asset: 24 h volatility, surface fits, premium quotes and the
seller's risk of them, with a bounded history of each for charts."""

from __future__ import annotations

from collections import deque

from models.records import PolicyRiskRecord, PremiumQuoteRecord, VolatilityEstimate


class AnalyticsView:
    """Per asset: the volatility history (``history`` bars), the latest surface fit outcome
    (``dataflows.analytics.FitOutcome``, with the fitted ``SurfaceFit`` to evaluate) and the last
    ``history`` successful fits' records, the latest premium quote and policy risk per tier."""

    def __init__(self, history: int = 1440) -> None:
        self._maxlen = history
        self._volatility: dict[str, deque[VolatilityEstimate]] = {}
        self._fits: dict[str, object] = {}
        self._fit_records: dict[str, deque] = {}
        self._quotes: dict[tuple[str, str], PremiumQuoteRecord] = {}
        self._risk: dict[tuple[str, str], PolicyRiskRecord] = {}
        self.version = 0

    # ------------------------------------------------------------------ sinks
    def on_volatility(self, estimates: list[VolatilityEstimate]) -> None:
        for e in estimates:
            self._volatility.setdefault(e.asset, deque(maxlen=self._maxlen)).append(e)
        self.version += 1

    def on_surfaces(self, outcomes) -> None:
        for o in outcomes:
            if o.fit is not None:
                self._fits[o.asset] = o
            if o.record is not None:
                self._fit_records.setdefault(o.asset, deque(maxlen=self._maxlen)).append(o.record)
        self.version += 1

    def on_quotes(self, quotes: list[PremiumQuoteRecord]) -> None:
        for q in quotes:
            self._quotes[(q.asset, q.tier)] = q
        self.version += 1

    def on_risk(self, rows: list[PolicyRiskRecord]) -> None:
        for r in rows:
            self._risk[(r.asset, r.tier)] = r
        self.version += 1

    # ------------------------------------------------------------------ reads
    @property
    def assets(self) -> list[str]:
        return sorted(set(self._volatility) | set(self._fits))

    def volatility(self, asset: str, since_ts: float = float("-inf")) -> list[VolatilityEstimate]:
        return [e for e in self._volatility.get(asset, ()) if e.ts > since_ts]

    def latest_fit(self, asset: str):
        """The last successful fit outcome of ``asset`` (``.fit`` a models.surface.SurfaceFit,
        ``.record`` its SurfaceRecord, ``.ts``, ``.spot_usd``), or None."""
        return self._fits.get(asset)

    def fit_records(self, asset: str, since_ts: float = float("-inf")) -> list:
        return [r for r in self._fit_records.get(asset, ()) if r.ts > since_ts]

    def quotes(self, asset: str | None = None) -> list[PremiumQuoteRecord]:
        return [q for (a, _), q in sorted(self._quotes.items()) if asset is None or a == asset]

    def risk(self, asset: str | None = None) -> list[PolicyRiskRecord]:
        return [r for (a, _), r in sorted(self._risk.items()) if asset is None or a == asset]


def attach(pipeline) -> AnalyticsView:
    view = AnalyticsView()
    graph = pipeline.graph
    if graph.analytics is not None:
        graph.volatility.sink(view.on_volatility)
        graph.surfaces.sink(view.on_surfaces)
        graph.premium_quotes.sink(view.on_quotes)
        graph.policy_risk.sink(view.on_risk)
    return view
