"""models.hedge: plan 001's hedge engine. Every rule and threshold at its boundary (hedge-ratio
ladder and hysteresis, hourly recompute, minimum order, lot, cooldown, profit target and trailing
stop, funding multiplier and cost, migration with hysteresis, the 45 % options trigger), the state
machine's paths, fail-closed steps, the put's Greeks against closed forms (mpmath), fill
accounting against cash flows, and the property that the fills of the proposed orders bring the
delta within one minimum order of its target."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone

import mpmath as mp
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from models.hedge import (
    LONG_BIASED,
    NEUTRAL,
    REBALANCE,
    SECONDS_PER_YEAR,
    SHORT_BIASED,
    TAKE_PROFIT,
    HedgeConfig,
    HedgeEngine,
    MarketState,
    PositionState,
    PutContract,
    book_risk,
    carry_cost_apr,
    daily_vol_fraction,
    front_quarterly_expiry_ts,
    funding_apr,
    funding_multiplier,
    hedge_on_quarterly,
    hedge_ratio_for_daily_vol,
    hedge_ratio_with_hysteresis,
    profit_exit,
    profit_target_usd,
    protective_put_contract,
    quarterly_price_usd,
)
from models.orders import Fill, Order, Rejection
from models.pricing import bs_price_greeks

T0 = 1_795_000_000.0  # 2026-11-18 09:46:40 UTC
SPOT = 100_000.0
SQRT365 = math.sqrt(365.0)
BAND = HedgeConfig().hysteresis_daily


def market(ts: float = T0, spot: float = SPOT, *, perp: float | None = None, rate: float = 0.0,
           interval_h: float = 8.0, basis: float = math.nan, vol_daily: float = 0.015,
           iv: float = math.nan, ok: bool = True) -> MarketState:
    """A market whose 24 h vol is ``vol_daily`` a day (annualized for the state)."""
    return MarketState(ts, "BTC", spot, spot if perp is None else perp, rate, interval_h, basis,
                       vol_daily * SQRT365, iv, ok)


def hedged(**changes) -> PositionState:
    """0.27 BTC spot hedged at h = 0.2: 0.054 BTC short perp entered at 100,000."""
    base = dict(spot_coin=0.27, short_perp_coin=0.054, short_perp_entry_usd=SPOT, hedge_ratio=0.2)
    return PositionState(**{**base, **changes})


def price_for(order: Order, m: MarketState) -> float:
    if order.kind == "perp":
        return m.perp_mark_usd
    if order.kind == "quarterly":
        return quarterly_price_usd(m.spot_usd, m.quarterly_basis_apr, m.ts_s)
    return order.limit_price_usd


def fill(order: Order, price: float, fee: float = 0.0, qty: float | None = None) -> Fill:
    return Fill(order.ts_s, order.order_id, order.asset, order.kind, order.side, "paper",
                order.quantity_coin if qty is None else qty, price, fee, "taker")


def fill_all(engine: HedgeEngine, step, m: MarketState, fee: float = 0.0) -> None:
    for order in step.orders:
        engine.on_fill(fill(order, price_for(order, m), fee))


def summary(step) -> list[tuple[str, str, float, str, bool]]:
    return [(o.kind, o.side, round(o.quantity_coin, 9), o.reason, o.reduce_only) for o in step.orders]


# --------------------------------------------------------------------------- contracts and state


def test_market_state_is_the_shared_contract():
    names = [(f.name, f.default) for f in dataclasses.fields(MarketState)]
    assert [n for n, _ in names] == [
        "ts_s", "asset", "spot_usd", "perp_mark_usd", "funding_rate_per_interval", "funding_interval_h",
        "quarterly_basis_apr", "vol_24h_annual", "implied_vol_annual", "oracle_ok"]
    m = MarketState(T0, "BTC", 1.0, 1.0)
    assert math.isnan(m.funding_rate_per_interval) and m.funding_interval_h == 8.0
    assert math.isnan(m.quarterly_basis_apr) and math.isnan(m.vol_24h_annual)
    assert math.isnan(m.implied_vol_annual) and m.oracle_ok is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.spot_usd = 2.0  # type: ignore[misc]
    assert not hasattr(m, "__dict__")  # slots


def test_position_state_defaults_follow_plan_001():
    s = PositionState()
    assert (s.spot_coin, s.long_perp_coin, s.short_perp_coin) == (0.27, 0.0, 0.0)
    assert (s.leverage, s.hedge_ratio) == (25.0, 1.0)
    assert s.delta_coin == 0.27


@settings(max_examples=60, deadline=None)
@given(q_b=st.floats(0, 10), q_l=st.floats(0, 5), q_s=st.floats(0, 5), q_q=st.floats(-5, 5),
       puts=st.floats(0, 5), put_delta=st.floats(-1, 0))
def test_delta_identity(q_b, q_l, q_s, q_q, puts, put_delta):
    s = PositionState(spot_coin=q_b, long_perp_coin=q_l, short_perp_coin=q_s, quarterly_coin=q_q,
                      put_coin=puts, put_strike_usd=90_000.0, put_expiry_ts_s=T0 + 86400)
    assert s.delta_coin == pytest.approx(q_b + q_l - q_s + q_q, abs=1e-12)
    assert s.perp_net_coin == pytest.approx(q_l - q_s, abs=1e-12)
    assert s.delta_with_options_coin(put_delta) == pytest.approx(s.delta_coin + puts * put_delta, abs=1e-12)
    risk = book_risk(s, SPOT, SPOT, T0, quarterly_mark_usd=SPOT, vol_annual=0.5)
    put_row = next((r for r in risk.positions if r.kind == "put"), None)
    per_put = put_row.delta_coin / puts if put_row is not None else 0.0
    assert risk.delta_coin == pytest.approx(s.delta_with_options_coin(per_put), abs=1e-9)


@pytest.mark.parametrize("changes", [
    dict(spot_coin=-0.1), dict(short_perp_coin=-1.0), dict(long_perp_coin=math.nan),
    dict(quarterly_coin=math.inf),
    dict(leverage=0.0), dict(hedge_ratio=1.2), dict(put_coin=0.1), dict(short_perp_entry_usd=-5.0),
])
def test_position_state_rejects_malformed_books(changes):
    with pytest.raises(ValueError):
        PositionState(**changes)


@pytest.mark.parametrize("changes", [
    dict(vol_thresholds_daily=(0.04, 0.02)), dict(hedge_ratios=(0.2, 0.4)),
    dict(hedge_ratios=(0.4, 0.2, 0.6)),
    dict(hysteresis_daily=0.011), dict(lot_size_coin=0.01), dict(min_order_coin=0.0),
    dict(trailing_giveback_fraction=1.0), dict(funding_multiplier_min=1.2), dict(profit_target_k=math.nan),
    dict(order_timeout_s=0.0),
])
def test_config_rejects_inconsistent_thresholds(changes):
    with pytest.raises(ValueError):
        HedgeConfig(**changes)


def test_units_daily_vol_and_funding_apr():
    assert daily_vol_fraction(0.02 * SQRT365) == pytest.approx(0.02, rel=1e-15)
    assert daily_vol_fraction(0.382) == pytest.approx(0.0199949, rel=1e-5)  # issue 7: 2 % daily = 0.382
    assert funding_apr(0.0001, 8.0) == pytest.approx(0.1095, rel=1e-12)  # 0.01 % per 8 h
    assert funding_apr(0.0001, 1.0) == pytest.approx(0.876, rel=1e-12)
    assert carry_cost_apr(-1, 0.1095) == -0.1095 and carry_cost_apr(+1, 0.05) == 0.05


# --------------------------------------------------------------------------- hedge ratio


@pytest.mark.parametrize("vol, ratio", [
    (0.0, 0.20), (math.nextafter(0.02, 0.0), 0.20), (0.02, 0.40), (math.nextafter(0.04, 0.0), 0.40),
    (0.04, 0.60), (0.5, 0.60),
])
def test_plan_ladder_at_its_boundaries(vol, ratio):
    assert hedge_ratio_for_daily_vol(vol) == ratio
    assert math.isnan(hedge_ratio_for_daily_vol(math.nan))


@pytest.mark.parametrize("current, vol, expected", [
    (0.20, 0.02, 0.20),  # at the plan's threshold: inside the band, stays
    (0.20, math.nextafter(0.02 + BAND, 0.0), 0.20),
    (0.20, 0.02 + BAND, 0.40),  # up once vol reaches threshold + band
    (0.40, 0.02 - BAND, 0.40),  # down only strictly below threshold - band
    (0.40, math.nextafter(0.02 - BAND, 0.0), 0.20),
    (0.40, 0.04, 0.40),
    (0.40, 0.04 + BAND, 0.60),
    (0.60, 0.04 - BAND, 0.60),
    (0.60, math.nextafter(0.04 - BAND, 0.0), 0.40),
    (0.20, 0.05, 0.60),  # jumps two steps
    (0.60, 0.01, 0.20),
    (1.00, 0.0199, 0.20),  # not on the ladder: the plain ladder
    (0.40, math.nan, 0.40),
])
def test_hysteresis_boundaries(current, vol, expected):
    assert hedge_ratio_with_hysteresis(vol, current, BAND) == expected


@settings(max_examples=100, deadline=None)
@given(vol=st.floats(0, 0.2), current=st.sampled_from([0.2, 0.4, 0.6]))
def test_hysteresis_without_band_is_the_plan_ladder(vol, current):
    assert hedge_ratio_with_hysteresis(vol, current, 0.0) == hedge_ratio_for_daily_vol(vol)
    banded, plain = hedge_ratio_with_hysteresis(vol, current, BAND), hedge_ratio_for_daily_vol(vol)
    # with a band the ratio moves toward the plan's, never past it, and reaches it away from
    # the thresholds
    assert min(current, plain) <= banded <= max(current, plain)
    if all(abs(vol - t) > BAND for t in (0.02, 0.04)):
        assert banded == plain


def _ratio_path(config: HedgeConfig, vols: list[float]) -> list[float]:
    engine = HedgeEngine(config, hedged(hedge_ratio=1.0))
    return [engine.step(market(T0 + 3600.0 * i, vol_daily=v)).hedge_ratio for i, v in enumerate(vols)]


def test_hysteresis_stops_flapping_around_two_percent():
    vols = [0.0195, 0.0205] * 12  # hourly readings oscillating around the 2 % threshold
    with_band = _ratio_path(HedgeConfig(), vols)
    without = _ratio_path(HedgeConfig(hysteresis_daily=0.0), vols)
    assert with_band == [0.2] * len(vols)
    assert without == [0.2, 0.4] * 12
    changes = sum(a != b for a, b in zip(without, without[1:]))
    assert changes == len(vols) - 1


def test_hedge_ratio_is_recomputed_hourly_only():
    engine = HedgeEngine(HedgeConfig(), hedged())
    assert engine.step(market(T0, vol_daily=0.01)).hedge_ratio == 0.2
    assert engine.step(market(T0 + 1800, vol_daily=0.05)).hedge_ratio == 0.2
    assert engine.step(market(T0 + 3599, vol_daily=0.05)).hedge_ratio == 0.2
    step = engine.step(market(T0 + 3600, vol_daily=0.05))
    assert step.hedge_ratio == 0.6 and "hedge_ratio 0.2->0.6" in step.events


def test_unknown_vol_keeps_the_ratio_and_retries_at_the_next_reading():
    engine = HedgeEngine(HedgeConfig(), hedged())
    assert engine.step(market(T0, vol_daily=math.nan)).hedge_ratio == 0.2
    assert engine.step(market(T0 + 60, vol_daily=0.05)).hedge_ratio == 0.6  # not an hour later


# --------------------------------------------------------------------------- targets and orders


def test_long_bias_sells_and_short_bias_buys_back():
    engine = HedgeEngine(HedgeConfig(), hedged())
    m = market(vol_daily=0.03)  # 3 % a day: h 0.2 -> 0.4, target short 0.108
    up = engine.step(m)
    assert up.mode == LONG_BIASED and "mode NEUTRAL->LONG_BIASED" in up.events
    assert summary(up) == [("perp", "sell", 0.054, "rebalance", False)]
    assert up.target_delta_coin == pytest.approx(0.27 * 0.6)
    fill_all(engine, up, m)
    back = engine.step(market(T0 + 60, vol_daily=0.03))
    assert back.mode == NEUTRAL and back.orders == [] and back.delta_coin == pytest.approx(0.162)
    m2 = market(T0 + 3600, vol_daily=0.01)
    down = engine.step(m2)
    assert down.mode == SHORT_BIASED and summary(down) == [("perp", "buy", 0.054, "rebalance", True)]
    fill_all(engine, down, m2)
    assert engine.step(market(T0 + 3660, vol_daily=0.01)).mode == NEUTRAL
    assert engine.state.short_perp_coin == pytest.approx(0.054)


def test_cooldown_between_rebalances():
    engine = HedgeEngine(HedgeConfig(rebalance_cooldown_s=5400.0), hedged())
    m = market(vol_daily=0.03)
    first = engine.step(m)
    fill_all(engine, first, m)
    assert first.orders
    blocked = engine.step(market(T0 + 3600, vol_daily=0.01))
    assert blocked.mode == SHORT_BIASED and blocked.orders == []
    assert engine.step(market(T0 + 5399, vol_daily=0.01)).orders == []
    due = engine.step(market(T0 + 5400, vol_daily=0.01))
    assert summary(due) == [("perp", "buy", 0.054, "rebalance", True)]


@pytest.mark.parametrize("short, min_order, lot, expected", [
    (0.054, 0.001, 0.001, []),  # at target
    (0.0535, 0.001, 0.001, []),  # 0.0005 off: below the minimum order
    (0.0526, 0.001, 0.001, [("perp", "sell", 0.001, "rebalance", False)]),  # 0.0014 off: one lot
    (0.050, 0.005, 0.001, []),  # 0.004 off, minimum 0.005
    (0.048, 0.005, 0.001, [("perp", "sell", 0.006, "rebalance", False)]),
    (0.048, 0.005, 0.005, [("perp", "sell", 0.005, "rebalance", False)]),  # rounded to the lot
    (0.0488, 0.005, 0.004, [("perp", "sell", 0.008, "rebalance", False)]),  # 0.004 would be too small
])
def test_minimum_order_size_and_lot(short, min_order, lot, expected):
    config = HedgeConfig(min_order_coin=min_order, lot_size_coin=lot)
    engine = HedgeEngine(config, hedged(short_perp_coin=short))
    step = engine.step(market())
    assert summary(step) == expected
    assert step.mode == (NEUTRAL if abs(0.054 - short) < min_order else LONG_BIASED)


def test_outstanding_orders_block_new_ones_until_filled_or_timed_out():
    engine = HedgeEngine(HedgeConfig(rebalance_cooldown_s=0.0), hedged(short_perp_coin=0.0))
    first = engine.step(market())
    assert summary(first) == [("perp", "sell", 0.054, "rebalance", False)]
    assert engine.pending_order_ids == (first.orders[0].order_id,)
    engine.on_fill(fill(first.orders[0], SPOT, qty=0.02))  # partial
    assert engine.step(market(T0 + 30)).orders == []
    late = engine.step(market(T0 + 60))
    assert f"order_timeout {first.orders[0].order_id}" in late.events
    assert summary(late) == [("perp", "sell", 0.034, "rebalance", False)]


def test_a_refused_order_is_retried_after_the_timeout_only():
    engine = HedgeEngine(HedgeConfig(rebalance_cooldown_s=0.0), hedged(short_perp_coin=0.0))
    order = engine.step(market()).orders[0]
    engine.on_rejection(Rejection(T0 + 1, order, "max_position", "too big"))
    assert engine.pending_order_ids == ()
    refused = engine.step(market(T0 + 30))
    assert refused.orders == [] and "rejected rebalance by max_position" in refused.events
    assert engine.step(market(T0 + 60)).orders == []
    assert len(engine.step(market(T0 + 61)).orders) == 1


@pytest.mark.parametrize("m, state", [
    (market(spot=math.nan), hedged()),
    (market(perp=math.nan), hedged()),
    (market(ok=False), hedged()),
    (market(spot=0.0), hedged()),
    (market(basis=math.nan), hedged(short_perp_coin=0.0, quarterly_coin=-0.054)),  # quarterly unmarked
    (market(iv=math.nan), hedged(put_coin=0.1, put_strike_usd=90_000.0, put_expiry_ts_s=T0 + 86400.0)),
])
def test_stale_data_fails_closed(m, state):
    m = dataclasses.replace(m, vol_24h_annual=0.05 * SQRT365)  # would move h to 0.6
    engine = HedgeEngine(HedgeConfig(), state)
    step = engine.step(m)
    assert step.orders == [] and "stale_prices" in step.events
    assert step.mode == NEUTRAL and math.isnan(step.target_delta_coin)
    assert engine.state == state and engine.pending_order_ids == ()


def test_engine_refuses_other_assets():
    engine = HedgeEngine(HedgeConfig(), hedged())
    with pytest.raises(ValueError):
        engine.step(dataclasses.replace(market(), asset="ETH"))
    eth = Fill(T0, "x", "ETH", "perp", "buy", "paper", 1.0, 2000.0, 0.0, "taker")
    with pytest.raises(ValueError):
        engine.on_fill(eth)


# --------------------------------------------------------------------------- profit target, stop


def test_profit_target_formula():
    assert profit_target_usd(0.02, 10_000.0, 1.5) == pytest.approx(300.0)
    engine = HedgeEngine(HedgeConfig(), hedged())
    m = market(spot=99_000.0)
    step = engine.step(m)
    vol_daily = daily_vol_fraction(m.vol_24h_annual)
    assert step.profit_target_usd == pytest.approx(1.5 * vol_daily * 0.054 * 99_000.0)
    assert step.cycle_pnl_usd == pytest.approx(0.054 * 1_000.0)


@pytest.mark.parametrize("pnl, peak, armed, signal, new_armed", [
    (100.0, 100.0, False, "take_profit", False),  # exactly at PT
    (math.nextafter(100.0, 0.0), 0.0, False, "", True),
    (50.0, 0.0, False, "", True),  # reaches 0.5 PT: arms
    (math.nextafter(50.0, 0.0), 0.0, False, "", False),
    (42.0, 60.0, True, "trailing_stop", True),  # 0.7 * 60 = 42: fires
    (42.01, 60.0, True, "", True),
    (10.0, 45.0, False, "", False),  # gave back 78 % but never armed
    (-500.0, 0.0, False, "", False),  # no stop loss on the hedge
    (math.nan, 70.0, True, "", True),
])
def test_profit_exit_boundaries(pnl, peak, armed, signal, new_armed):
    got, new_peak, got_armed = profit_exit(pnl, peak, armed, 100.0, 0.5, 0.30)
    assert (got, got_armed) == (signal, new_armed)
    assert new_peak == (peak if math.isnan(pnl) else max(peak, pnl))


def test_take_profit_cycle_through_the_state_machine():
    engine = HedgeEngine(HedgeConfig(), hedged())
    modes = [engine.step(market(spot=SPOT)).mode]
    m = market(T0 + 60, spot=97_700.0)  # the hedge made 124.2 > PT 118.7
    tp = engine.step(m)
    assert "take_profit" in tp.events and tp.mode == TAKE_PROFIT
    assert summary(tp) == [("perp", "buy", 0.054, "take_profit", True)]
    assert tp.target_delta_coin == pytest.approx(0.27)
    engine.on_fill(fill(tp.orders[0], 97_700.0, fee=2.0))
    m2 = market(T0 + 120, spot=97_700.0)
    closed = engine.step(m2)
    profit = 0.054 * 2_300.0 - 2.0
    assert closed.realized_pnl_usd == pytest.approx(profit)
    assert closed.distributable_profit_usd == pytest.approx(profit)
    assert closed.mode == REBALANCE and summary(closed) == [("perp", "sell", 0.054, "rebalance", False)]
    fill_all(engine, closed, m2)
    reopened = engine.step(market(T0 + 180, spot=97_700.0))
    assert reopened.mode == NEUTRAL and reopened.distributable_profit_usd == 0.0
    assert reopened.cycle_pnl_usd == pytest.approx(0.0) and reopened.peak_pnl_usd == 0.0
    assert engine.state.short_perp_entry_usd == 97_700.0
    modes += [tp.mode, closed.mode, reopened.mode]
    assert modes == [NEUTRAL, TAKE_PROFIT, REBALANCE, NEUTRAL]


def test_trailing_stop_arms_then_fires_at_thirty_percent_giveback():
    engine = HedgeEngine(HedgeConfig(), hedged())
    quiet = engine.step(market(T0, spot=99_200.0))  # 43.2 < 0.5 PT (60.3): not armed
    assert "trailing_stop_armed" not in quiet.events and math.isnan(quiet.trailing_stop_usd)
    assert engine.step(market(T0 + 60, spot=SPOT)).orders == []  # giving it back does nothing
    armed = engine.step(market(T0 + 120, spot=98_700.0))  # 70.2 >= 0.5 PT (59.96)
    assert "trailing_stop_armed" in armed.events
    assert armed.trailing_stop_usd == pytest.approx(0.7 * 0.054 * 1_300.0)
    assert engine.step(market(T0 + 180, spot=99_050.0)).orders == []  # 51.3 > 49.14
    stop = engine.step(market(T0 + 240, spot=99_100.0))  # 48.6 <= 49.14
    assert "trailing_stop" in stop.events and stop.mode == TAKE_PROFIT
    assert summary(stop) == [("perp", "buy", 0.054, "trailing_stop", True)]


def test_no_stop_loss_when_the_collateral_gains():
    engine = HedgeEngine(HedgeConfig(), hedged())
    step = engine.step(market(spot=150_000.0))
    assert step.cycle_pnl_usd == pytest.approx(-0.054 * 50_000.0)
    assert step.orders == [] and step.mode == NEUTRAL


def test_funding_payments_count_in_the_cycle():
    engine = HedgeEngine(HedgeConfig(), hedged())
    engine.on_funding(12.5)
    step = engine.step(market())
    assert step.realized_pnl_usd == 12.5 and step.cycle_pnl_usd == pytest.approx(12.5)


# --------------------------------------------------------------------------- funding


@pytest.mark.parametrize("cost, step, expected", [
    (-0.25, 0.1, 1.5), (0.25, 0.1, 0.5), (0.0, 0.1, 1.0), (-1.0, 0.1, 1.5), (1.0, 0.1, 0.5),
    (-0.1095, 0.1, 1.2), (-0.1095, 0.0, 1.219), (0.1, 0.0, 0.8),
])
def test_funding_multiplier(cost, step, expected):
    assert funding_multiplier(cost, step=step) == pytest.approx(expected, abs=1e-12)
    assert math.isnan(funding_multiplier(math.nan))


def test_shorts_paying_heavy_funding_hold_a_smaller_short():
    rate = -0.25 / funding_apr(1.0, 8.0)  # -25 % APR: shorts pay
    engine = HedgeEngine(HedgeConfig(), hedged(hedge_ratio=0.4, short_perp_coin=0.108))
    step = engine.step(market(rate=rate, vol_daily=0.03))
    assert step.funding_multiplier == 0.5 and "funding_multiplier 1.00->0.50" in step.events
    assert summary(step) == [("perp", "buy", 0.054, "rebalance", True)]  # 0.4 * 0.5 * 0.27 = 0.054
    assert step.target_delta_coin == pytest.approx(0.27 * 0.8)


@pytest.mark.parametrize("long_perp, short_perp, rate, sign", [
    (0.0, 0.1, 1e-4, -1),  # positive rate: the short receives
    (0.1, 0.0, 1e-4, 1),  # the long pays
    (0.0, 0.1, -1e-4, 1),  # negative rate: the short pays
])
def test_funding_cost_sign(long_perp, short_perp, rate, sign):
    s = hedged(long_perp_coin=long_perp, long_perp_entry_usd=SPOT, short_perp_coin=short_perp)
    engine = HedgeEngine(HedgeConfig(), s)
    step = engine.step(market(rate=rate, perp=100_500.0))
    expected = rate * (long_perp - short_perp) * 100_500.0
    assert step.funding_cost_usd_per_interval == pytest.approx(expected)
    assert math.copysign(1, step.funding_cost_usd_per_interval) == sign
    perp_rows = [r for r in engine.risk(market(rate=rate, perp=100_500.0)).positions if r.kind == "perp"]
    assert sum(r.funding_usd_per_interval for r in perp_rows) == pytest.approx(expected)


@pytest.mark.parametrize("perp_cost, q_cost, on_q, expected", [
    (0.02, 0.0, False, False),  # exactly the band: stays
    (0.0200001, 0.0, False, True),
    (0.0, 0.02, True, True),
    (0.0, 0.0200001, True, False),
    (0.05, 0.04, True, True),  # inside the band either way: stays where it is
    (0.05, 0.04, False, False),
    (math.nan, 0.0, False, False),
])
def test_migration_rule_with_hysteresis(perp_cost, q_cost, on_q, expected):
    assert hedge_on_quarterly(perp_cost, q_cost, on_q, 0.02) is expected


def test_for_a_long_position_the_rule_is_the_plan_literal():
    # plan 001: migrate when perp funding APR > quarterly basis APR (a long pays both)
    assert hedge_on_quarterly(carry_cost_apr(+1, 0.10), carry_cost_apr(+1, 0.05), False, 0.02)
    assert not hedge_on_quarterly(carry_cost_apr(+1, 0.05), carry_cost_apr(+1, 0.10), False, 0.02)


def test_short_hedge_migrates_to_quarterly_and_back():
    engine = HedgeEngine(HedgeConfig(), hedged())
    m = market(rate=0.0, basis=0.05)  # the short earns 5 % on the quarterly, 0 on the perp
    go = engine.step(m)
    assert "migrate_to_quarterly" in go.events and engine.hedge_kind == "quarterly"
    # the multiplier now reads the quarterly's carry: the short earns 5 %, 1 + 0.05 / 0.5 = 1.1
    assert "funding_multiplier 1.00->1.10" in go.events
    assert summary(go) == [("perp", "buy", 0.054, "migrate_to_quarterly", True),
                           ("quarterly", "sell", 0.059, "migrate_to_quarterly", False)]
    fill_all(engine, go, m)
    assert engine.state.quarterly_coin == pytest.approx(-0.059) and engine.state.short_perp_coin == 0.0
    assert engine.state.delta_coin == pytest.approx(0.211)
    rate_4 = 0.04 / funding_apr(1.0, 8.0)
    stay = engine.step(market(T0 + 3600, rate=rate_4, basis=0.03))  # 1 % better on the perp: inside the band
    assert engine.hedge_kind == "quarterly" and stay.orders == []
    rate_6 = 0.06 / funding_apr(1.0, 8.0)
    m3 = market(T0 + 7200, rate=rate_6, basis=0.03)
    back = engine.step(m3)
    assert "migrate_to_perp" in back.events
    assert back.funding_multiplier == pytest.approx(1.1)  # 1 + 0.06 / 0.5 = 1.12, in steps of 0.1
    assert summary(back) == [("quarterly", "buy", 0.059, "migrate_to_perp", True),
                             ("perp", "sell", 0.059, "migrate_to_perp", False)]


def test_quarterly_expiry_and_price():
    expiry = front_quarterly_expiry_ts(T0)
    d = datetime.fromtimestamp(expiry, tz=timezone.utc)
    assert d.month in (3, 6, 9, 12) and d.weekday() == 4 and d.hour == 8
    assert (d.day + 7) > 31 - (d.month in (6, 9)) and expiry > T0  # the last Friday of its month
    T = (expiry - T0) / SECONDS_PER_YEAR
    assert quarterly_price_usd(SPOT, 0.08, T0) == pytest.approx(SPOT * (1 + 0.08 * T))
    assert front_quarterly_expiry_ts(expiry + 1.0) > expiry + 80 * 86400


# --------------------------------------------------------------------------- options hedge


def test_options_trigger_at_implied_vol_45_percent():
    at = HedgeEngine(HedgeConfig(), hedged()).step(market(iv=0.45))
    assert all(o.kind != "put" for o in at.orders) and at.put_contract is None
    none = HedgeEngine(HedgeConfig(), hedged()).step(market(iv=math.nan))
    assert none.orders == []
    engine = HedgeEngine(HedgeConfig(), hedged())
    m = market(iv=math.nextafter(0.45, 0.0))
    step = engine.step(m)
    put = [o for o in step.orders if o.kind == "put"]
    assert len(put) == 1 and put[0].side == "buy" and put[0].reason == "options_hedge"
    assert put[0].quantity_coin == pytest.approx(0.135)  # half the spot
    contract = step.put_contract
    assert contract == engine.put_contract(put[0].order_id)
    assert contract.strike_usd == 90_000.0
    d = datetime.fromtimestamp(contract.expiry_ts_s, tz=timezone.utc)
    assert d.weekday() == 4 and d.hour == 8 and 30 * 86400 <= contract.expiry_ts_s - T0 <= 37 * 86400
    T = (contract.expiry_ts_s - T0) / SECONDS_PER_YEAR
    premium, greeks = bs_price_greeks(SPOT, 90_000.0, T, 0.0, m.implied_vol_annual, False)
    assert put[0].limit_price_usd == pytest.approx(float(premium) * 1.1)
    # the puts replace part of the short: the perp buys back the puts' delta
    perp = [o for o in step.orders if o.kind == "perp"]
    assert perp[0].side == "buy" and perp[0].quantity_coin == pytest.approx(
        round(-0.135 * float(greeks.delta) / 0.001) * 0.001)
    assert step.target_delta_coin == pytest.approx(0.8 * 0.27)
    fill_all(engine, step, m)
    assert engine.state.put_coin == pytest.approx(0.135) and engine.state.put_strike_usd == 90_000.0
    again = engine.step(market(T0 + 3600, iv=0.3))
    assert all(o.kind != "put" for o in again.orders)  # one put line at a time


def test_put_expiry_settles_at_intrinsic_value():
    s = hedged(put_coin=0.135, put_strike_usd=95_000.0, put_expiry_ts_s=T0 + 3600.0, put_entry_usd=500.0)
    engine = HedgeEngine(HedgeConfig(), s)
    engine.step(market(T0, iv=0.6))
    step = engine.step(market(T0 + 3600.0, spot=90_000.0, iv=0.6))
    assert step.realized_pnl_usd == pytest.approx(0.135 * (5_000.0 - 500.0))
    assert engine.state.put_coin == 0.0 and any(e.startswith("put_expired") for e in step.events)


def test_protective_put_contract_rounds_to_a_listed_strike():
    assert protective_put_contract(2_530.0, T0, 0.9, 30.0).strike_usd == 2_275.0  # step 25
    c = protective_put_contract(SPOT, T0, 0.9, 7.0)
    assert isinstance(c, PutContract) and c.strike_usd == 90_000.0
    assert 7 * 86400 <= c.expiry_ts_s - T0 < 14 * 86400


# --------------------------------------------------------------------------- greeks and P&L


def _mp_put(S, K, T, r, sigma):
    S, K, T, r, sigma = (mp.mpf(x) for x in (S, K, T, r, sigma))
    d1 = (mp.log(S / K) + (r + sigma ** 2 / 2) * T) / (sigma * mp.sqrt(T))
    d2 = d1 - sigma * mp.sqrt(T)
    n = mp.npdf(d1)
    price = K * mp.exp(-r * T) * mp.ncdf(-d2) - S * mp.ncdf(-d1)
    return dict(price=float(price), delta=float(mp.ncdf(d1) - 1), gamma=float(n / (S * sigma * mp.sqrt(T))),
                vega=float(S * n * mp.sqrt(T)),
                theta=float(-S * n * sigma / (2 * mp.sqrt(T)) + r * K * mp.exp(-r * T) * mp.ncdf(-d2)))


def test_greeks_and_pnl_by_position_against_closed_forms():
    mp.mp.dps = 30
    s = PositionState(spot_coin=0.27, short_perp_coin=0.05, short_perp_entry_usd=101_000.0,
                      quarterly_coin=-0.02, quarterly_entry_usd=102_000.0, put_coin=0.5,
                      put_strike_usd=95_000.0, put_expiry_ts_s=T0 + 30 * 86400.0, put_entry_usd=1_000.0)
    T = 30 / 365
    risk = book_risk(s, SPOT, 100_100.0, T0, quarterly_mark_usd=101_500.0, vol_annual=0.6, rate_annual=0.03,
                     funding_rate_per_interval=1e-4)
    rows = {r.kind: r for r in risk.positions}
    ref = _mp_put(SPOT, 95_000.0, T, 0.03, 0.6)
    put = rows["put"]
    assert put.mark_usd == pytest.approx(ref["price"], rel=1e-10)
    assert put.unrealized_pnl_usd == pytest.approx(0.5 * (ref["price"] - 1_000.0), rel=1e-10)
    for name, got in (("delta", put.delta_coin), ("gamma", put.gamma_coin_per_usd), ("vega", put.vega_usd),
                      ("theta", put.theta_usd_per_year)):
        assert got == pytest.approx(0.5 * ref[name], rel=1e-9), name
    assert rows["perp"].unrealized_pnl_usd == pytest.approx(0.05 * 900.0)
    assert rows["perp"].margin_usd == pytest.approx(0.05 * 100_100.0 / 25.0)
    assert rows["quarterly"].unrealized_pnl_usd == pytest.approx(0.02 * 500.0)
    assert rows["spot"].value_usd == pytest.approx(27_000.0) and math.isnan(rows["spot"].unrealized_pnl_usd)
    assert risk.delta_coin == pytest.approx(0.27 - 0.05 - 0.02 + 0.5 * ref["delta"], rel=1e-12)
    assert risk.unrealized_pnl_usd == pytest.approx(45.0 + 10.0 + 0.5 * (ref["price"] - 1_000.0), rel=1e-10)
    assert risk.vega_usd == put.vega_usd and risk.gamma_coin_per_usd == put.gamma_coin_per_usd

    def value(spot):  # the book's value at another spot, futures marked with it
        r = book_risk(s, spot, spot, T0, quarterly_mark_usd=spot, vol_annual=0.6, rate_annual=0.03)
        return sum(p.value_usd + (0.0 if p.kind in ("spot", "put") else p.unrealized_pnl_usd)
                   for p in r.positions)
    h = 1.0
    assert (value(SPOT + h) - value(SPOT - h)) / (2 * h) == pytest.approx(risk.delta_coin, rel=1e-6)


# --------------------------------------------------------------------------- fill accounting


trades = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.floats(0.001, 2.0),
                            st.floats(50_000.0, 150_000.0), st.floats(0.0, 5.0)), min_size=1, max_size=12)


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from(["perp", "quarterly"]), fills=trades, mark=st.floats(50_000.0, 150_000.0))
def test_realized_plus_unrealized_equals_the_cash_flows(kind, fills, mark):
    engine = HedgeEngine(HedgeConfig(), PositionState(spot_coin=0.27, hedge_ratio=0.2))
    cash = 0.0
    for i, (side, qty, price, fee) in enumerate(fills):
        f = Fill(T0, f"ext-{i}", "BTC", kind, side, "paper", qty, price, fee, "taker")
        engine.on_fill(f)
        cash -= f.signed_quantity_coin * price + fee
    s = engine.state
    position = s.perp_net_coin if kind == "perp" else s.quarterly_coin
    assert position == pytest.approx(sum(q if side == "buy" else -q for side, q, _, _ in fills), abs=1e-9)
    assert s.long_perp_coin * s.short_perp_coin == 0.0  # one-way netting never holds both legs
    m = market(T0 + 1, spot=mark, basis=0.05)
    qmark = quarterly_price_usd(mark, 0.05, m.ts_s)
    step = engine.step(m)
    total = step.realized_pnl_usd + step.unrealized_pnl_usd
    expected = cash + position * (mark if kind == "perp" else qmark)
    assert total == pytest.approx(expected, abs=1e-6 * (1.0 + sum(q * p for _, q, p, _ in fills)))


def test_spot_fills_move_the_collateral_and_cannot_oversell_it():
    engine = HedgeEngine(HedgeConfig(), hedged())
    engine.on_fill(Fill(T0, "desk", "BTC", "spot", "buy", "paper", 0.03, SPOT, 1.0, "taker"))
    assert engine.state.spot_coin == pytest.approx(0.30)
    assert engine.step(market()).realized_pnl_usd == -1.0  # the fee
    with pytest.raises(ValueError):
        engine.on_fill(Fill(T0, "desk", "BTC", "spot", "sell", "paper", 0.5, SPOT, 0.0, "taker"))


def test_a_put_fill_for_an_unknown_contract_is_refused():
    engine = HedgeEngine(HedgeConfig(), hedged())
    with pytest.raises(ValueError):
        engine.on_fill(Fill(T0, "nobody", "BTC", "put", "buy", "deribit", 0.1, 500.0, 0.0, "taker"))


# --------------------------------------------------------------------------- the target property


legs = st.one_of(st.just(0.0), st.floats(0.001, 2.0))


@st.composite
def books(draw):
    put = draw(st.booleans())
    return PositionState(
        spot_coin=draw(st.floats(0.0, 5.0)), long_perp_coin=draw(legs), short_perp_coin=draw(legs),
        quarterly_coin=-draw(legs), hedge_ratio=draw(st.sampled_from([0.2, 0.4, 0.6, 1.0, 0.33])),
        short_perp_entry_usd=draw(st.one_of(st.just(math.nan), st.floats(50_000.0, 150_000.0))),
        put_coin=draw(st.floats(0.01, 3.0)) if put else 0.0,
        put_strike_usd=draw(st.floats(60_000.0, 120_000.0)) if put else math.nan,
        put_expiry_ts_s=T0 + draw(st.floats(-3600.0, 60 * 86400.0)) if put else math.nan,
        put_entry_usd=draw(st.floats(0.0, 5_000.0)) if put else math.nan,
    )


@settings(max_examples=120, deadline=None)
@given(state=books(), spot=st.floats(60_000.0, 140_000.0), premium=st.floats(-0.01, 0.01),
       rate=st.floats(-0.003, 0.003), basis=st.floats(-0.2, 0.3), vol_daily=st.floats(0.0, 0.1),
       iv=st.floats(0.2, 1.2), min_order=st.sampled_from([0.001, 0.01]),
       lot_fraction=st.sampled_from([1.0, 0.5, 0.1]))
def test_fills_of_the_proposed_orders_reach_the_target(state, spot, premium, rate, basis, vol_daily, iv,
                                                        min_order, lot_fraction):
    config = HedgeConfig(min_order_coin=min_order, lot_size_coin=min_order * lot_fraction)
    engine = HedgeEngine(config, state)
    m = market(spot=spot, perp=spot * (1 + premium), rate=rate, basis=basis, vol_daily=vol_daily, iv=iv)
    step = engine.step(m)
    assume(math.isfinite(step.target_delta_coin))
    event(f"mode {step.mode}")
    for kind in sorted({o.kind for o in step.orders}) or ["none"]:
        event(f"orders on {kind}")
    fill_all(engine, step, m)
    delta_after = engine.risk(m).delta_coin
    assert abs(delta_after - step.target_delta_coin) < min_order + 1e-9
    if step.mode == TAKE_PROFIT:
        assert engine.state.futures_flat()
    else:  # the target is the plan's: (1 - h_eff) of the spot, less what the puts already cover
        h_eff = min(step.hedge_ratio * step.funding_multiplier, 1.0)
        puts = delta_after - engine.state.delta_coin
        assert step.target_delta_coin == pytest.approx(
            state.spot_coin + puts - max(h_eff * state.spot_coin + puts, 0.0), abs=1e-9)


# --------------------------------------------------------------------------- random runs


NEXT_MODES = {
    NEUTRAL: {NEUTRAL, LONG_BIASED, SHORT_BIASED, TAKE_PROFIT},
    LONG_BIASED: {NEUTRAL, LONG_BIASED, SHORT_BIASED, TAKE_PROFIT},
    SHORT_BIASED: {NEUTRAL, LONG_BIASED, SHORT_BIASED, TAKE_PROFIT},
    TAKE_PROFIT: {TAKE_PROFIT, REBALANCE},
    REBALANCE: {REBALANCE, NEUTRAL},
}


def _position(state: PositionState, kind: str) -> float:
    return {"perp": state.perp_net_coin, "quarterly": state.quarterly_coin, "put": state.put_coin}[kind]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cooldown=st.sampled_from([0.0, 900.0]))
def test_random_runs_follow_the_state_machine(seed, cooldown):
    """Random markets (stale ticks, funding swings, NaN basis) and random outcomes for each order
    (filled, partly filled, refused, never answered): the modes move only along the machine's
    edges, stale ticks propose nothing, reduce-only orders only reduce, profits are >= 0."""
    import numpy as np

    rng = np.random.default_rng(seed)
    engine = HedgeEngine(HedgeConfig(rebalance_cooldown_s=cooldown), PositionState(hedge_ratio=1.0))
    spot, mode, seen = SPOT, NEUTRAL, set()
    for i in range(240):
        spot *= math.exp(rng.normal(0.0, 0.004))
        ok = rng.random() > 0.05
        m = market(T0 + 60.0 * i, spot, perp=spot * (1 + rng.normal(0, 1e-4)), rate=rng.normal(1e-4, 3e-4),
                   basis=rng.normal(0.05, 0.05) if rng.random() > 0.1 else math.nan,
                   vol_daily=abs(rng.normal(0.025, 0.012)), iv=rng.uniform(0.3, 0.7), ok=ok)
        step = engine.step(m)
        assert step.mode in NEXT_MODES[mode], (mode, step.mode, step.events)
        mode = step.mode
        seen.add(mode)
        assert step.distributable_profit_usd >= 0.0
        if not ok:
            assert step.orders == [] and "stale_prices" in step.events
        for order in step.orders:
            u = rng.random()
            before = _position(engine.state, order.kind)
            if u < 0.7:
                engine.on_fill(fill(order, price_for(order, m), fee=0.05 * order.quantity_coin))
            elif u < 0.8:
                engine.on_fill(fill(order, price_for(order, m), qty=order.quantity_coin / 2))
            elif u < 0.9:
                engine.on_rejection(Rejection(m.ts_s, order, "random", "refused"))
            after = _position(engine.state, order.kind)
            if order.reduce_only:
                assert abs(after) <= abs(before) + 1e-12
    assert {NEUTRAL, LONG_BIASED} <= seen
