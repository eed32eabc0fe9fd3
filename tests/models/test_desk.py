"""models.desk: the engine, the gate, the paper venue and the treasury composed. The accounts must
reconcile to the cent, and the plan's stress scenarios must end as the plan says."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.desk import DeskConfig, HedgeDesk
from models.execution import DepthModel, VenueConfig, funding_times
from models.hedge import MarketState, PositionState

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
SPOT = 100_000.0
VOL = 0.60


def gbm(n: int, seed: int = 1, vol_annual: float = VOL, step_s: float = 60.0, start: float = SPOT):
    rng = np.random.default_rng(seed)
    sd = vol_annual * math.sqrt(step_s / (365 * 86_400))
    return start * np.exp(np.cumsum(sd * rng.standard_normal(n)))


def run(prices, *, step_s=60.0, funding=0.0001, vol=VOL, iv=math.nan, ts=None, desk=None):
    desk = desk or HedgeDesk(DeskConfig(), T0)
    times = T0 + step_s * np.arange(1, len(prices) + 1) if ts is None else ts
    steps = [desk.step(MarketState(float(t), "BTC", float(p), float(p), funding_rate_per_interval=funding,
                                   vol_24h_annual=vol, implied_vol_annual=iv))
             for t, p in zip(times, prices)]
    return desk, steps


def test_the_accounts_reconcile_at_every_step():
    desk, steps = run(gbm(3 * 1_440))
    fills = [f for step in steps for f in step.fills]
    assert fills, "the desk never traded"
    for step in steps:
        assert step.equity_usd == pytest.approx(step.cash_usd + step.position_value_usd + step.reserve_usd - step.loan_usd,
                                              abs=1e-9)
    # Cash moves only by the futures' P&L, fees, funding and what profits paid the lender and reserve.
    distributed = sum(step.distribution.profit_usd - step.distribution.retained_usd
                      for step in steps if step.distribution is not None)
    start_cash = DeskConfig().treasury.loan.principal_usd
    assert desk.cash_usd == pytest.approx(
        start_cash + desk.gross_profit_usd - desk.fees_usd - desk.funding_usd - distributed, abs=1e-6)
    assert desk.fees_usd == pytest.approx(sum(f.fee_usd for f in fills), abs=1e-9)
    # The hedge is short: the book's delta is the unhedged part of the collateral.
    last = steps[-1]
    assert 0.0 < last.delta_coin < DeskConfig().initial_state.spot_coin


def test_unknown_prices_trade_nothing():
    desk = HedgeDesk(DeskConfig(), T0)
    st = desk.step(MarketState(T0 + 60.0, "BTC", math.nan, math.nan, vol_24h_annual=VOL))
    assert st.approved == () and st.fills == ()


def test_a_short_hedge_receives_positive_funding_at_the_funding_times():
    # Funding settles at 00:00, 08:00 and 16:00 UTC: a day of minutes crosses three of them.
    desk, steps = run(np.full(1_440, SPOT), funding=0.001)
    assert desk.state.short_perp_coin > 0.0
    assert desk.funding_usd < 0.0  # negative paid: received, as a short does when longs pay
    settled = [st.funding_paid_usd for st in steps if st.funding_paid_usd]
    assert 1 <= len(settled) <= 3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(1.0, 60_000.0), min_size=3, max_size=25), st.floats(-0.003, 0.003))
@example([28_800.0, 28_800.0, 1.0, 57_599.0, 0.5], 0.001)  # steps on 08:00 and 16:00 exactly
def test_funding_settles_once_for_every_funding_time_since_the_last_step(gaps_s, rate):
    config = DeskConfig(initial_state=PositionState(short_perp_coin=0.1, short_perp_entry_usd=SPOT))
    venue = config.futures_venue
    desk = HedgeDesk(config, T0)
    last = T0
    for t in T0 + np.cumsum(gaps_s):
        position = desk.state.perp_net_coin  # what the step settles on, before it trades
        step = desk.step(MarketState(float(t), "BTC", SPOT, SPOT, funding_rate_per_interval=rate,
                                     vol_24h_annual=VOL))
        expected = 0.0
        for _ in funding_times(last, float(t), venue.funding_interval_h, venue.funding_offset_h):
            expected += position * SPOT * rate
        assert step.funding_paid_usd == expected
        last = float(t)


def test_a_feed_stall_fires_the_dead_mans_switch_and_trading_stops():
    prices = np.full(200, SPOT)
    ts = T0 + 60.0 * np.arange(1, 201)
    ts[100:] += 2 * 3_600.0  # two hours without data
    desk, steps = run(prices, ts=ts)
    fired = [st for st in steps if any("dead_mans_switch" in e for e in st.events)]
    assert fired and fired[0].ts_s == ts[100]
    assert any(a.kind == "safety_dead_mans_switch" for st in fired for a in st.alerts)
    # The switch flattened the futures, and new hedge orders are refused until someone resumes.
    assert desk.state.short_perp_coin == pytest.approx(0.0, abs=1e-9)
    later = [r.rule for st in steps[101:] for r in st.rejections]
    assert later and set(later) == {"dead_mans_switch"}


def test_rapid_ltv_rise_deploys_the_reserve_then_closes_everything():
    # The collateral loses 85 % in ten hours: the reserve pays the loan down by plan 001's formula,
    # and once even that leaves the LTV in EMERGENCY the desk closes every futures position.
    start = DeskConfig().treasury.loan.principal_usd / (0.27 * 0.55)  # LTV 0.55 at the start
    path = np.concatenate([np.full(120, start), np.linspace(start, start * 0.15, 600)])
    desk, steps = run(path)
    bands = [st.band for st in steps]
    assert "MONITOR" in bands and "EMERGENCY" in bands
    deployed = [st.reserve_deployed_usd for st in steps]
    assert deployed[-1] == pytest.approx(10_000.0) and deployed == sorted(deployed)
    emergency = bands.index("EMERGENCY")
    assert any("close all" in e for st in steps[emergency:] for e in st.events)
    assert desk.state.short_perp_coin == pytest.approx(0.0, abs=1e-9)


def test_extreme_funding_stops_the_hedge_from_growing():
    # Shorts paying 0.3 % every 8 h (about 330 % a year): the funding rule refuses the short.
    desk, steps = run(np.full(240, SPOT), funding=-0.003)
    rules = {r.rule for st in steps for r in st.rejections}
    assert "funding_cost" in rules
    assert desk.state.short_perp_coin == 0.0


def test_entering_warning_halves_the_futures_once():
    # LTV 0.60 at the start; the price falls 12 % so the LTV crosses 0.65 (WARNING).
    # A token reserve: the bands act on the LTV itself, not on what a deployment leaves of it.
    from models.loan import ReserveConfig, TreasuryConfig

    config = DeskConfig(treasury=TreasuryConfig(reserve=ReserveConfig(
        capacity_usd=1.0, first_tranche_usd=0.3, second_tranche_usd=0.5)))
    start = config.treasury.loan.principal_usd / (0.27 * 0.60)
    desk, steps = run(np.full(60, start), desk=HedgeDesk(config, T0))
    short = desk.state.short_perp_coin
    assert short > 0.0
    desk, warn = run(np.full(5, start * 0.88), desk=desk, ts=T0 + 60.0 * np.arange(61, 66))
    assert warn[0].band == "WARNING"
    # A stale price in between (an unknown LTV) does not start a new episode.
    desk.step(MarketState(T0 + 60.0 * 66, "BTC", math.nan, math.nan, vol_24h_annual=VOL))
    desk, again = run(np.full(3, start * 0.88), desk=desk, ts=T0 + 60.0 * np.arange(67, 70))
    halved = [o for st in warn + again for o in st.approved if o.reason == "ltv_warning"]
    # Once on entering the band (the engine may then close the rest: the fall is its profit).
    assert len(halved) == 1 and halved[0].quantity_coin == pytest.approx(short / 2)


def test_a_short_past_its_liquidation_price_is_liquidated_with_the_venues_fee():
    desk, steps = run(np.full(60, SPOT))
    s = desk.state
    assert s.short_perp_coin > 0.0
    liquidation = s.short_perp_entry_usd * (1 + 1 / s.leverage - desk.config.maintenance_margin_fraction)
    cash_before = desk.cash_usd
    (st,) = run([liquidation * 1.01], desk=desk, ts=[T0 + 60.0 * 61])[1]
    (fill,) = [f for f in st.fills if f.order_id.startswith("liquidation")]
    assert fill.price_usd == pytest.approx(liquidation) and fill.quantity_coin == pytest.approx(s.short_perp_coin)
    assert fill.fee_usd == pytest.approx(desk.config.liquidation_fee_fraction * fill.notional_usd)
    assert any(a.kind == "liquidation" for a in st.alerts)
    # The short lost (liquidation - entry) per coin and the fee; any order of the same step (the
    # engine re-hedging at once) paid only its fee.
    others = sum(f.fee_usd for f in st.fills if f is not fill)
    loss = s.short_perp_coin * (liquidation - SPOT) + fill.fee_usd + others
    assert cash_before - desk.cash_usd == pytest.approx(loss, rel=1e-9)


def test_a_liquidation_near_miss_with_a_deep_drawdown_panic_closes_first():
    # Leverage 10: liquidation about 9.6 % above entry. The collateral falls 20 % (equity well
    # below its peak) while the perp squeezes to 5 % under the liquidation price: the panic close
    # flattens before the venue would.
    from dataclasses import replace

    from models.desk import replace_leverage

    config = replace_leverage(DeskConfig(), 10.0)
    desk = HedgeDesk(config, T0)
    run(np.full(60, SPOT), desk=desk)
    entry = desk.state.short_perp_entry_usd
    liquidation = entry * (1 + 1 / 10 - config.maintenance_margin_fraction)
    squeeze = liquidation * 0.97  # within 5 % of liquidation
    steps = [desk.step(MarketState(T0 + 60.0 * (61 + i), "BTC", SPOT * 0.8, squeeze,
                                   funding_rate_per_interval=0.0001, vol_24h_annual=VOL))
             for i in range(3)]
    panic = [o for st in steps for o in st.approved if o.reason == "panic_close"]
    assert panic and desk.state.short_perp_coin == pytest.approx(0.0, abs=1e-9)
    assert not any(f.order_id.startswith("liquidation") for st in steps for f in st.fills)
    assert replace(config) == config


def test_high_volatility_sets_the_top_hedge_ratio_and_caps_the_position():
    # 6 % a day (115 % annualized): the ratio is 0.60, and the volatility cap shrinks what the
    # gate lets the desk hold, so the short stays under the cap.
    desk, steps = run(gbm(1_440, vol_annual=1.15), vol=1.15)
    assert steps[-1].hedge_ratio == 0.6
    cap = desk.gate.config.position_cap_coin("BTC")
    assert desk.state.short_perp_coin <= cap + 1e-9


def test_critical_closes_the_losing_futures_leg():
    from models.loan import ReserveConfig, TreasuryConfig

    from models.desk import replace_leverage

    # Leverage 5: the short is far from liquidation, so the panic close stays out of the way.
    config = replace_leverage(DeskConfig(treasury=TreasuryConfig(reserve=ReserveConfig(
        capacity_usd=1.0, first_tranche_usd=0.3, second_tranche_usd=0.5))), 5.0)
    desk = HedgeDesk(config, T0)
    start = config.treasury.loan.principal_usd / (0.27 * 0.60)
    run(np.full(60, start), desk=desk)
    assert desk.state.short_perp_coin > 0.0
    # The spot (collateral) falls 25 % (LTV 0.80: CRITICAL) while the perpetual's mark is above
    # the short's entry: the short is losing, and it is closed.
    st = desk.step(MarketState(T0 + 60.0 * 61, "BTC", start * 0.75, start * 1.01,
                               funding_rate_per_interval=0.0001, vol_24h_annual=VOL))
    assert st.band == "CRITICAL"
    assert any(o.reason == "ltv_critical" for o in st.approved)
    assert desk.state.short_perp_coin == pytest.approx(0.0, abs=1e-9)


def test_a_leverage_with_no_margin_above_maintenance_is_refused():
    from models.desk import replace_leverage

    with pytest.raises(ValueError, match="leaves no margin above the maintenance margin"):
        replace_leverage(DeskConfig(), 300.0)


# --------------------------------------------------------------------------- routing across venues

THIN_A = VenueConfig("thin_a", maker_fee_bps=2.0, taker_fee_bps=5.0, latency_s=0.0,
                     kinds=("perp", "quarterly"),
                     depth=DepthModel(half_spread_bps=0.5, level_spacing_bps=2.0, level_notional_usd=4_000.0))
THIN_B = VenueConfig("thin_b", maker_fee_bps=1.0, taker_fee_bps=4.0, latency_s=0.0,
                     kinds=("perp", "quarterly"),
                     depth=DepthModel(half_spread_bps=0.5, level_spacing_bps=2.0, level_notional_usd=4_000.0))


def _routed_desk(**kwargs) -> HedgeDesk:
    return HedgeDesk(DeskConfig(futures_venue=THIN_A, routing_venues=(THIN_B,), **kwargs), T0)


def test_a_routed_order_splits_across_thin_venues_and_costs_less_than_one_venue():
    routed, steps = run(np.full(3, SPOT), desk=_routed_desk())
    single, single_steps = run(np.full(3, SPOT), desk=HedgeDesk(DeskConfig(futures_venue=THIN_A), T0))
    first = next(st for st in steps if st.fills)
    order = first.approved[0]
    fills = [f for f in first.fills if f.order_id == order.order_id]
    assert {f.venue for f in fills} == {"thin_a", "thin_b"}  # too deep for either book alone
    assert math.fsum(f.quantity_coin for f in fills) == pytest.approx(order.quantity_coin, rel=1e-12)
    for f in fills:
        taker = {"thin_a": THIN_A, "thin_b": THIN_B}[f.venue].taker_fee_bps
        assert f.fee_usd == pytest.approx(taker * 1e-4 * f.quantity_coin * f.price_usd, rel=1e-9)
    # The same order on thin_a alone walks deeper into its book: it pays more, all in.
    single_fills = next(st.fills for st in single_steps if st.fills)
    assert single_fills[0].quantity_coin == pytest.approx(order.quantity_coin)

    def all_in_usd(fs):  # a sell: what it receives, net of fees (more is better)
        return math.fsum(f.quantity_coin * f.price_usd - f.fee_usd for f in fs)

    assert all_in_usd(fills) > all_in_usd(single_fills)
    # Each venue's share of the position adds up to the book's position.
    perp = {v: q for (v, k), q in routed.venue_position_coin.items() if k == "perp"}
    assert set(perp) == {"thin_a", "thin_b"}
    assert math.fsum(perp.values()) == pytest.approx(routed.state.perp_net_coin, abs=1e-12)


def test_the_gate_sees_each_venues_exposure():
    desk, steps = run(np.full(3, SPOT), desk=_routed_desk())
    market = MarketState(T0 + 240.0, "BTC", SPOT, SPOT, vol_24h_annual=VOL)
    exposure = desk._context(market).venue_exposure_usd
    shares = {v: abs(q) * SPOT for (v, k), q in desk.venue_position_coin.items()}
    assert dict(exposure) == pytest.approx(shares)
    assert math.fsum(exposure.values()) == pytest.approx(abs(desk.state.perp_net_coin) * SPOT)


def test_a_liquidation_closes_every_venues_share():
    desk, _ = run(np.full(3, SPOT), desk=_routed_desk())
    short = desk.state.short_perp_coin
    assert short > 0.0
    price = desk._liquidation_price_usd("perp", desk.state)
    st = desk.step(MarketState(T0 + 600.0, "BTC", price * 1.01, price * 1.01, vol_24h_annual=VOL))
    liquidations = [f for f in st.fills if f.order_id.startswith("liquidation")]
    assert {f.venue for f in liquidations} == {"thin_a", "thin_b"}
    assert math.fsum(f.quantity_coin for f in liquidations) == pytest.approx(short, rel=1e-12)
    assert all(f.side == "buy" and f.price_usd == price for f in liquidations)
    assert all(abs(q) < 1e-12 for q in desk.venue_position_coin.values())


def test_routing_venues_must_be_distinct_futures_venues():
    with pytest.raises(ValueError, match="distinct"):
        DeskConfig(futures_venue=THIN_A, routing_venues=(THIN_A,))
    spot_only = VenueConfig("spot_only", 1.0, 1.0, 0.0, kinds=("spot",), leverage=1.0)
    with pytest.raises(ValueError, match="does not trade perps"):
        DeskConfig(routing_venues=(spot_only,))
    with pytest.raises(ValueError, match="max_slippage_bps"):
        DeskConfig(max_slippage_bps=0.0)
