"""AnalyticsView, the streamz way: sinks on volatility, surface, quote and risk streams."""

from __future__ import annotations

import math

from streamz import Stream

from dataflows.analytics import FitOutcome
from dataflows.views.analytics import AnalyticsView
from models.records import PremiumQuoteRecord, VolatilityEstimate


def _vol(asset: str, ts: float, vol: float) -> VolatilityEstimate:
    return VolatilityEstimate(asset, ts, 86_400.0, 100, vol, vol, True)


def _quote(asset: str, tier: str, premium: float) -> PremiumQuoteRecord:
    return PremiumQuoteRecord(asset, 1.0, tier, 80_000.0, 2.0e9, 1.0, 100_000.0, 100_100.0, 0.6,
                              0.55, 0.55, premium, 0.0, premium, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_volatility_history_per_asset_is_bounded_and_filtered_by_time():
    source = Stream()
    view = AnalyticsView(history=3)
    source.sink(view.on_volatility)
    source.emit([_vol("BTC", t, 0.5) for t in range(5)] + [_vol("ETH", 1.0, 0.7)])
    assert [e.ts for e in view.volatility("BTC")] == [2, 3, 4]
    assert [e.ts for e in view.volatility("BTC", since_ts=3)] == [4]
    assert view.assets == ["BTC", "ETH"]


def test_latest_fit_skips_failed_fits_but_keeps_their_absence_of_records():
    source = Stream()
    view = AnalyticsView()
    source.sink(view.on_surfaces)
    good = FitOutcome("BTC", 1.0, 100_000.0, fit=object(), record=None)
    failed = FitOutcome("BTC", 2.0, 100_000.0, fit=None, record=None, error="too few options")
    source.emit([good])
    source.emit([failed])
    assert view.latest_fit("BTC") is good  # a failed refit leaves the last good surface
    assert view.latest_fit("ETH") is None
    assert view.fit_records("BTC") == []


def test_quotes_keep_the_latest_per_asset_and_tier():
    source = Stream()
    view = AnalyticsView()
    source.sink(view.on_quotes)
    source.emit([_quote("BTC", "basic", 10.0), _quote("BTC", "premium", 30.0)])
    source.emit([_quote("BTC", "basic", 11.0), _quote("ETH", "basic", 1.0)])
    assert [(q.tier, q.premium_usd) for q in view.quotes("BTC")] == [("basic", 11.0), ("premium", 30.0)]
    assert len(view.quotes()) == 3
    assert math.isclose(view.quotes("ETH")[0].premium_usd, 1.0)
