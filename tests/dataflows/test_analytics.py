"""dataflows.analytics, the streamz way: build the node, sink_to_list(), emit, assert.

The option chain comes from the simulator's own quoting (models.option_chain), so the surface the
graph fits has a known truth: the SSVI surface the quotes were made from.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

import numpy as np
import pytest
from streamz import Stream

from dataflows.analytics import (
    PremiumNode,
    Refitter,
    VolatilityNode,
    build_analytics,
    expiry_at,
    fit_chain,
)
from dataflows.config import load_config
from dataflows.workers import Worker
from models.option_book import OptionBook
from models.option_chain import BTC_SURFACE, atm_vol, build_chain, implied_vol_surface, quote_chain
from models.premium import BREAKDOWN_FIELDS, PremiumConfig
from models.records import OptionTickerBatch, OraclePrice

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
SPOT = 40_000.0


def chain_batch(now_s: float = T0, spot_usd: float = SPOT, asset: str = "BTC",
                carry_annual: float = 0.0) -> OptionTickerBatch:
    """Every option of the simulator's chain quoted at ``now_s``, as the Deribit adapter emits
    them; each expiry's forward is ``spot exp(carry T)``."""
    spec = build_chain(asset, spot_usd, now_s, BTC_SURFACE, carry_annual)
    q = quote_chain(spec, spot_usd, now_s, BTC_SURFACE, carry_annual)
    n = len(spec)
    no_bid = q.bid_coin <= 0.0
    return OptionTickerBatch.from_columns(
        exchange=["deribit"] * n, instrument=list(spec.names), asset=[asset] * n,
        event_ts=[now_s] * n, receive_ts=[now_s] * n, expiry_utc=spec.expiry_ts,
        strike_usd=spec.strike, is_call=spec.is_call,
        bid_coin=np.where(no_bid, np.nan, q.bid_coin), bid_size=np.full(n, 1.0),
        ask_coin=q.ask_coin, ask_size=np.full(n, 1.0), mark_coin=q.mark_coin, mark_iv=q.mark_iv,
        bid_iv=q.bid_iv, ask_iv=q.ask_iv, underlying_usd=q.forward, index_usd=np.full(n, spot_usd),
        open_interest=np.full(n, 10.0), delta=q.delta, gamma=q.gamma, vega=q.vega, theta=q.theta,
        rho=q.rho, raw=[""] * n,
    )


def price(asset: str, ts: float, usd: float, status: str = "ok") -> OraclePrice:
    return OraclePrice(asset=asset, ts=ts, price_usd=usd, confidence_usd=1.0, n_sources=3, status=status)


def analytics_config(**overrides):
    return load_config(env={}, overrides={f"analytics.{k}": v for k, v in overrides.items()}).analytics


# --------------------------------------------------------------------------- volatility


def test_volatility_node_publishes_a_bar_at_a_time_and_learns_only_from_ok_prices():
    node = VolatilityNode.from_config(analytics_config(volatility_bar_s=60.0, volatility_min_coverage_s=600.0))
    source = Stream()
    out = source.map(node.on_prices).filter(len).sink_to_list()
    rng = np.random.default_rng(3)
    vol_annual = 0.6
    step_sd = vol_annual * math.sqrt(1.0 / (365 * 86_400))  # one second of a 60% vol
    level = SPOT
    for i in range(3_600):
        level *= math.exp(step_sd * rng.standard_normal())
        source.emit([price("BTC", T0 + i, level)])
        # A degraded price far away must not move anything.
        source.emit([price("BTC", T0 + i + 0.5, level * 2.0, status="degraded")])
    estimates = [e for batch in out for e in batch]
    # One estimate per closed minute (the first price opens the first bar).
    assert 58 <= len(estimates) <= 60
    assert [e.ts for e in estimates] == sorted(e.ts for e in estimates)
    assert all(e.asset == "BTC" and e.window_s == 86_400.0 for e in estimates)
    assert not estimates[0].ready and estimates[-1].ready
    # 59 one-minute returns of a 60% vol: the estimate is within ~3 standard errors (60% / sqrt(2 n)).
    assert estimates[-1].vol_annual == pytest.approx(vol_annual, rel=3 / math.sqrt(2 * 59))
    assert node.take_alerts() == []


def test_volatility_node_raises_an_alert_on_a_jump_the_forecast_did_not_allow():
    node = VolatilityNode.from_config(analytics_config(volatility_bar_s=60.0, anomaly_z=4.0))
    source = Stream()
    source.map(node.on_prices).filter(len).sink_to_list()
    rng = np.random.default_rng(5)
    level = SPOT
    for minute in range(120):
        level *= math.exp(0.001 * rng.standard_normal())
        if minute == 100:
            level *= 0.9  # -10% in a minute against a ~0.1% one-minute stdev
        source.emit([price("BTC", T0 + 60.0 * minute, level)])
    alerts = node.take_alerts()
    assert len(alerts) >= 1
    assert alerts[0].subject == "BTC" and alerts[0].severity == "warning"
    assert alerts[0].ts == pytest.approx(T0 + 60.0 * 100, abs=60.0)
    assert node.take_alerts() == []  # taken once


# --------------------------------------------------------------------------- surface refit


def test_fit_chain_recovers_the_simulators_surface():
    book = OptionBook()
    book.update(chain_batch())
    snapshot = book.snapshot("BTC", T0 + 1.0)
    outcome = fit_chain(snapshot, "", 20)
    assert outcome.error == "" and outcome.fit is not None
    record = outcome.record
    assert record.asset == "BTC" and record.n_expiries >= 10 and record.n_options >= 200
    assert record.arbitrage_ok
    years = np.asarray(record.expiry_years)
    # The ATM term structure within a vol point of the surface the quotes came from.
    np.testing.assert_allclose(record.atm_vol_annual, atm_vol(years, BTC_SURFACE), atol=0.01)
    # Put skew: the 25-delta risk reversal is negative at every expiry (rho < 0).
    assert max(record.rr25_vol_annual) < 0.0
    assert record.spot_usd == SPOT


def test_fit_chain_explains_why_it_did_not_fit():
    book = OptionBook()
    book.update(chain_batch())
    # Every ticker is older than max_age_s by then: nothing usable.
    outcome = fit_chain(book.snapshot("BTC", T0 + 10_000.0, max_age_s=300.0), "", 20)
    assert outcome.fit is None and outcome.record is None
    assert "fewer than 20" in outcome.error


def test_refitter_fits_every_interval_inline_and_emits_outcomes():
    emitted = Stream()
    out = emitted.sink_to_list()
    refitter = Refitter(Worker("inline"), emit=emitted.emit, interval_s=5.0)
    refitter.on_tick(T0)  # an empty book: nothing to fit
    assert out == []
    refitter.on_tickers(chain_batch())
    refitter.on_tick(T0 + 1.0)
    refitter.on_tick(T0 + 3.0)  # within the interval: no second fit
    refitter.on_tick(T0 + 6.5)
    assert len(out) == 2
    assert [o.asset for o in out[0]] == ["BTC"]
    assert out[0][0].fit is not None and out[1][0].ts == T0 + 6.5
    refitter.close()
    refitter.on_tick(T0 + 100.0)
    assert len(out) == 2  # closed: no more fits


def test_refitter_skips_a_tick_while_a_fit_is_in_flight():
    async def main():
        results = []
        done = asyncio.Event()

        def emit(outcomes):
            results.append(outcomes)
            done.set()

        refitter = Refitter(Worker("thread"), emit=emit, interval_s=0.0)
        refitter.on_tickers(chain_batch())
        refitter.on_tick(T0 + 1.0)
        refitter.on_tick(T0 + 1.1)  # the first fit cannot have come back: the loop has not run
        assert refitter.in_flight and refitter.skipped == 1
        await asyncio.wait_for(done.wait(), 60)
        refitter.close()
        return results, refitter

    results, refitter = asyncio.run(main())
    assert len(results) == 1 and results[0][0].fit is not None
    assert not refitter.in_flight


# --------------------------------------------------------------------------- premium quotes


def test_expiry_at_is_the_next_0800_utc_after_the_days():
    assert expiry_at(T0, 7.0) == 1_700_640_000.0  # 2023-11-21 22:13 -> 2023-11-22 08:00 UTC
    day = 1_700_006_400.0  # 2023-11-15 00:00 UTC
    assert expiry_at(day, 0.25) == day + 8 * 3_600.0  # 06:00 -> same day 08:00
    assert expiry_at(day, 1 / 3) == day + 8 * 3_600.0  # exactly 08:00 stays
    assert expiry_at(day, 0.5) == day + 86_400.0 + 8 * 3_600.0  # 12:00 -> next day


def test_premium_node_prices_every_tier_and_expiry_off_each_surface():
    book = OptionBook()
    book.update(chain_batch())
    outcome = fit_chain(book.snapshot("BTC", T0 + 1.0), "", 20)
    config = PremiumConfig()
    node = PremiumNode(config, expiry_days=[7.0, 30.0], amount_coin=2.0)
    surfaces = Stream()
    quotes = surfaces.map(node.on_surfaces).filter(len).sink_to_list()
    surfaces.emit([outcome])
    (batch,) = quotes
    assert len(batch) == 2 * len(config.tiers)
    assert {q.tier for q in batch} == {t.name for t in config.tiers}
    for q in batch:
        parts = (q.intrinsic_usd + q.time_value_usd + q.volatility_usd + q.skew_usd + q.jump_usd
                 + q.margin_usd + q.rounding_usd)
        assert q.premium_usd == pytest.approx(parts, rel=1e-12, abs=1e-9)
        assert q.premium_usd > 0.0 and q.amount_coin == 2.0 and q.spot_usd == SPOT
        # No realized volatility yet: the reference is the surface's ATM vol.
        assert q.vol_reference_annual == pytest.approx(q.vol_atm_annual, rel=1e-9)
    # A ready realized volatility becomes the reference.
    from models.records import VolatilityEstimate

    node.on_volatility([VolatilityEstimate("BTC", T0, 86_400.0, 1_000, 0.3, 0.3, True)])
    surfaces.emit([outcome])
    assert {q.vol_reference_annual for q in quotes[1]} == {0.3}
    # Later expiries cost more, tier for tier.
    by = {(q.tier, round((q.expiry_utc - T0) / 86_400.0)): q.premium_usd for q in quotes[1]}
    for tier in config.tiers:
        short = [v for (t, d), v in by.items() if t == tier.name and d < 20]
        long = [v for (t, d), v in by.items() if t == tier.name and d > 20]
        assert long[0] > short[0]


def test_premium_node_skips_outcomes_without_a_surface():
    node = PremiumNode(PremiumConfig(), expiry_days=[7.0])
    from dataflows.analytics import FitOutcome

    assert node.on_surfaces([FitOutcome("BTC", T0, SPOT, None, None, "no options")]) == []


def test_build_analytics_follows_the_section():
    cfg = analytics_config(surface_interval_s=2.0, worker="inline", surface_enabled=False)
    analytics = build_analytics(cfg)
    assert analytics.refitter.interval_s == 2.0 and not analytics.refitter.enabled
    assert analytics.refitter.worker.kind == "inline"
    assert analytics.volatility.vol_config.bar_s == cfg.volatility_bar_s
    analytics.close()


def test_premiums_are_priced_on_the_surfaces_forward_when_the_market_has_carry():
    carry = 0.10  # a 10 % basis: BTC futures well above spot
    book = OptionBook()
    book.update(chain_batch(carry_annual=carry))
    outcome = fit_chain(book.snapshot("BTC", T0 + 1.0), "", 20)
    node = PremiumNode(PremiumConfig(), expiry_days=[30.0, 90.0])
    quotes = node.on_surfaces([outcome])
    assert len(quotes) == 2 * len(PremiumConfig().tiers)
    for q in quotes:
        years = (q.expiry_utc - q.ts) / (365 * 86_400.0)
        assert q.forward_usd == pytest.approx(SPOT * math.exp(carry * years), rel=2e-3)
        # The vol comes from the smile at ln(K / F), where the chain put the strike, not ln(K / S).
        truth = implied_vol_surface(math.log(q.strike_usd / q.forward_usd), years, BTC_SURFACE)
        assert q.vol_strike_annual == pytest.approx(truth, abs=0.01)
        assert q.premium_usd == pytest.approx(sum(getattr(q, f) for f in BREAKDOWN_FIELDS), abs=1e-9)
    # Against the same surface priced as if the forward were spot: a put on a forward 10 % a
    # year above spot is worth less.
    on_spot = PremiumNode(PremiumConfig(), expiry_days=[90.0])
    on_forward = {q.tier: q for q in quotes if q.expiry_utc == expiry_at(T0 + 1.0, 90.0)}
    from dataflows.analytics import FitOutcome

    zero_carry = dataclasses.replace(outcome.fit, forward_usd=np.full_like(outcome.fit.forward_usd, SPOT))
    for q in on_spot.on_surfaces([FitOutcome("BTC", outcome.ts, SPOT, zero_carry, outcome.record)]):
        assert on_forward[q.tier].premium_usd < q.premium_usd


def test_a_broken_realized_volatility_is_not_a_reference_and_a_refused_surface_does_not_stop_the_node():
    from models.records import VolatilityEstimate

    book = OptionBook()
    book.update(chain_batch())
    outcome = fit_chain(book.snapshot("BTC", T0 + 1.0), "", 20)
    node = PremiumNode(PremiumConfig(), expiry_days=[7.0])
    node.on_volatility([VolatilityEstimate("BTC", T0, 86_400.0, 1_000, 18.0, 18.0, True)])  # 1,800 %
    assert node.reference_vol == {}
    from dataflows.analytics import FitOutcome

    # A fit whose forward is broken (NaN) cannot be priced: logged, counted, the others go on.
    broken = dataclasses.replace(outcome.fit, forward_usd=np.full_like(outcome.fit.forward_usd, np.nan))
    quotes = node.on_surfaces([FitOutcome("ETH", outcome.ts, SPOT, broken, outcome.record), outcome])
    assert node.refused == 1 and {q.asset for q in quotes} == {"BTC"}
