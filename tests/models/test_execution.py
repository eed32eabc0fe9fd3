"""models.execution: book walking (VWAP, fees, slippage, partial fills) against hand computations
and a plain loop; latency, time in force and maker fills of the paper venue; funding times and
signs; balance identities and cash conservation; routing against hand cases and a linear
program (scipy) as the independent optimum."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from models.execution import (
    BINANCE_USDM,
    BYBIT,
    DEFAULT_VENUES,
    DERIBIT,
    SPOT_VENUE,
    Book,
    CrossVenueBalance,
    DepthModel,
    ExecutionOptimizer,
    PaperVenue,
    Venue,
    VenueConfig,
    fee_per_coin_usd,
    fee_usd,
    fill_curve,
    funding_payment_usd,
    funding_times,
    is_funding_time,
    settle_funding,
    slippage_bps,
    walk_book,
)
from models.orders import Order, Rejection

T0 = 1_700_006_400.0  # 2023-11-15 00:00:00 UTC, a funding time
HOUR = 3600.0


def _order(side="buy", qty=1.0, kind="perp", ts=T0, **kw) -> Order:
    return Order(ts_s=ts, asset="BTC", kind=kind, side=side, quantity_coin=qty, reason="test", **kw)


def _book(mid=100.0) -> Book:
    # mid 100: asks 101 x1, 102 x2, 104 x3; bids 99 x1, 98 x2, 96 x3
    return Book.from_levels([(mid - 1, 1.0), (mid - 2, 2.0), (mid - 4, 3.0)],
                            [(mid + 1, 1.0), (mid + 2, 2.0), (mid + 4, 3.0)])


def _venue(name="v", maker=2.0, taker=5.0, latency=0.0, **kw) -> VenueConfig:
    return VenueConfig(name, maker_fee_bps=maker, taker_fee_bps=taker, latency_s=latency, **kw)


def _loop_walk(prices, sizes, qty, side, worst=math.nan):
    """The plain reference: take level after level."""
    filled = notional = 0.0
    for p, s in zip(prices, sizes):
        if not math.isnan(worst) and ((side == "buy" and p > worst) or (side == "sell" and p < worst)):
            break
        take = min(s, qty - filled)
        filled += take
        notional += take * p
        if filled >= qty:
            break
    return filled, notional


# --------------------------------------------------------------------------- books

def test_book_validation():
    with pytest.raises(ValueError, match="crossed"):
        Book.from_levels([(101.0, 1.0)], [(100.0, 1.0)])
    with pytest.raises(ValueError, match="descending"):
        Book(np.array([99.0, 99.5]), np.array([1.0, 1.0]), np.array([101.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="ascending"):
        Book(np.array([99.0]), np.array([1.0]), np.array([101.0, 100.5]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError):
        Book(np.array([99.0]), np.array([-1.0]), np.array([101.0]), np.array([1.0]))
    with pytest.raises(ValueError):
        Book(np.array([99.0]), np.array([1.0, 2.0]), np.array([101.0]), np.array([1.0]))
    b = _book()
    assert b.mid_usd == 100.0 and b.best_bid_usd == 99.0 and b.best_ask_usd == 101.0
    assert math.isnan(Book.from_levels([], [(101.0, 1.0)]).mid_usd)
    with pytest.raises(ValueError):
        b.ask_sizes_coin[0] = 5.0  # read-only: a book is a value


def test_depth_model_book():
    d = DepthModel(half_spread_bps=0.5, level_spacing_bps=1.0, level_notional_usd=200_000.0,
                   n_levels=5)
    b = d.book(50_000.0)
    assert b.mid_usd == pytest.approx(50_000.0)
    assert b.best_ask_usd == pytest.approx(50_000.0 * (1 + 0.5e-4))
    assert b.ask_prices_usd[-1] == pytest.approx(50_000.0 * (1 + 4.5e-4))
    np.testing.assert_allclose(b.ask_prices_usd * b.ask_sizes_coin, 200_000.0)
    np.testing.assert_allclose(b.bid_prices_usd * b.bid_sizes_coin, 200_000.0)
    with pytest.raises(ValueError):
        d.book(math.nan)
    with pytest.raises(ValueError):
        DepthModel(half_spread_bps=0.0)


# --------------------------------------------------------------------------- VWAP, fees, slippage

def test_vwap_by_hand():
    b = _book()
    # buy 2.5: 1 @ 101 + 1.5 @ 102 = 254 -> 101.6
    assert walk_book(*b.side_for("buy"), 2.5, "buy") == pytest.approx((2.5, 101.6))
    # sell 4: 1 @ 99 + 2 @ 98 + 1 @ 96 = 391 -> 97.75
    assert walk_book(*b.side_for("sell"), 4.0, "sell") == pytest.approx((4.0, 97.75))
    # exactly one level
    assert walk_book(*b.side_for("buy"), 1.0, "buy") == pytest.approx((1.0, 101.0))
    # more than the book: partial, 6 coins, (101 + 204 + 312) / 6
    assert walk_book(*b.side_for("buy"), 10.0, "buy") == pytest.approx((6.0, 617.0 / 6.0))
    # a limit at 102 stops before the 104 level: 3 coins, (101 + 204) / 3
    assert walk_book(*b.side_for("buy"), 5.0, "buy", 102.0) == pytest.approx((3.0, 305.0 / 3.0))
    assert walk_book(*b.side_for("sell"), 5.0, "sell", 98.5) == pytest.approx((1.0, 99.0))
    filled, vwap = walk_book(*b.side_for("buy"), 1.0, "buy", 100.5)
    assert filled == 0.0 and math.isnan(vwap)


def test_slippage_and_fees_by_hand():
    assert slippage_bps("buy", 101.6, 100.0) == pytest.approx(160.0)
    assert slippage_bps("sell", 97.75, 100.0) == pytest.approx(225.0)
    assert slippage_bps("sell", 100.5, 100.0) == pytest.approx(-50.0)  # price improvement
    cfg = _venue(maker=2.0, taker=5.0)
    assert fee_usd(cfg, "perp", 2.5, 101.6, "taker") == pytest.approx(2.5 * 101.6 * 0.0005)
    assert fee_usd(cfg, "perp", 2.5, 101.6, "maker") == pytest.approx(2.5 * 101.6 * 0.0002)
    rebate = _venue(maker=-1.0, taker=5.0)
    assert fee_usd(rebate, "perp", 1.0, 100.0, "maker") == pytest.approx(-0.01)
    # Deribit options: 0.03 % of the index per coin, capped at 12.5 % of the premium
    assert fee_usd(DERIBIT, "put", 2.0, 500.0, "taker", index_usd=60_000.0) == pytest.approx(2 * 18.0)
    assert fee_usd(DERIBIT, "put", 2.0, 100.0, "taker", index_usd=60_000.0) == pytest.approx(2 * 12.5)
    assert fee_usd(DERIBIT, "put", 1.0, 500.0, "maker") == pytest.approx(62.5)  # index unknown: cap
    with pytest.raises(ValueError):
        fee_per_coin_usd(cfg, "perp", 100.0, "both")


def test_fill_curve_matches_the_plain_loop():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        asks = 100.0 + np.cumsum(rng.uniform(0.01, 1.0, n))
        sizes = rng.uniform(0.0, 3.0, n) * (rng.random(n) > 0.2)  # some empty levels
        qty = rng.uniform(0.0, 1.2 * sizes.sum() + 0.1, 8)
        worst = float(rng.choice([math.nan, float(rng.uniform(100, asks[-1] + 1))]))
        filled, notional = fill_curve(asks, sizes, qty, "buy", worst)
        for q, f, x in zip(qty, filled, notional):
            ref_f, ref_x = _loop_walk(asks, sizes, q, "buy", worst)
            assert f == pytest.approx(ref_f, rel=1e-12, abs=1e-12)
            assert x == pytest.approx(ref_x, rel=1e-12, abs=1e-9)
        bids = 100.0 - np.cumsum(rng.uniform(0.01, 1.0, n))
        filled, notional = fill_curve(bids, sizes, qty, "sell", worst - 1.0)
        for q, f, x in zip(qty, filled, notional):
            assert (f, x) == pytest.approx(_loop_walk(bids, sizes, q, "sell", worst - 1.0))


# sizes are empty or at least a realistic lot (denormal sizes lose the product size * price)
_levels = st.lists(st.tuples(st.floats(0.01, 5.0), st.one_of(st.just(0.0), st.floats(1e-8, 10.0))),
                   min_size=1, max_size=15)


@settings(max_examples=150, deadline=None)
@given(levels=_levels, side=st.sampled_from(["buy", "sell"]),
       q1=st.floats(1e-6, 60.0), q2=st.floats(1e-6, 60.0))
def test_slippage_is_monotone_in_size(levels, side, q1, q2):
    steps = np.array([lv[0] for lv in levels])
    sizes = np.array([lv[1] for lv in levels])
    mid = 1000.0
    sign = 1.0 if side == "buy" else -1.0
    prices = mid + sign * (0.5 + np.cumsum(steps))
    small, large = sorted((q1, q2))
    filled, notional = fill_curve(prices, sizes, np.array([small, large]), side)
    assert filled[0] <= filled[1]
    if filled[0] > 0:
        slips = slippage_bps(side, notional / filled, mid)
        assert slips[0] <= slips[1] + 1e-9
        # the VWAP lies between the best level and the worst level taken
        vwap = notional[1] / filled[1]
        assert sign * vwap >= sign * prices[sizes > 0][0] - 1e-9
        assert sign * vwap <= sign * prices[-1] + 1e-9


# --------------------------------------------------------------------------- paper venue

def test_latency_fills_at_the_later_market():
    v = PaperVenue(_venue(latency=0.25))
    accepted = v.submit(_order(qty=0.5, order_id="o-1"))
    assert isinstance(accepted, Order) and accepted.venue == "v"
    assert v.on_market(T0 + 0.1, "BTC", "perp", _book(100.0)) == []  # not arrived yet
    fills = v.on_market(T0 + 0.3, "BTC", "perp", _book(110.0))
    assert len(fills) == 1
    f = fills[0]
    assert f.ts_s == T0 + 0.3 and f.price_usd == pytest.approx(111.0) and f.liquidity == "taker"
    assert f.fee_usd == pytest.approx(0.5 * 111.0 * 5e-4)
    rep = v.report("o-1")
    assert rep.status == "filled" and rep.arrival_ts_s == pytest.approx(T0 + 0.25)
    assert rep.mid_usd == 110.0 and rep.slippage_bps == pytest.approx(1.0 / 110.0 * 1e4)
    # another instrument's market does not match it
    v.submit(_order(qty=0.5, order_id="o-2"))
    assert v.on_market(T0 + 1.0, "ETH", "perp", _book(100.0)) == []
    assert v.on_market(T0 + 1.0, "BTC", "perp", math.nan) == []  # unknown price: it waits
    assert v.on_market(T0 + 1.0, "BTC", "perp", 100.0)  # a mid alone: the depth model
    assert v.execute(_order(qty=0.5), math.nan, T0 + 2) == []
    assert v.rejections[-1].rule == "venue_no_price"


def test_market_order_partial_fill_rest_cancelled_or_kept():
    v = PaperVenue(_venue())
    fills = v.execute(_order(qty=10.0, order_id="ioc"), _book(), T0)
    assert sum(f.quantity_coin for f in fills) == pytest.approx(6.0)
    rep = v.report("ioc")
    assert rep.status == "cancelled" and rep.filled_coin == pytest.approx(6.0)
    assert rep.avg_price_usd == pytest.approx(617.0 / 6.0)
    assert v.open_orders == ()
    # GTC: the rest waits and walks the next book as taker
    fills = v.execute(_order(qty=10.0, order_id="gtc"), _book(), T0, time_in_force="GTC")
    assert fills[0].quantity_coin == pytest.approx(6.0)
    assert [o.order_id for o in v.open_orders] == ["gtc"]
    fills = v.on_market(T0 + 1, "BTC", "perp", _book(100.0))
    assert fills[0].quantity_coin == pytest.approx(4.0) and fills[0].liquidity == "taker"
    assert fills[0].price_usd == pytest.approx((101 + 2 * 102 + 104) / 4.0)  # 1@101, 2@102, 1@104
    assert v.report("gtc").status == "filled"


def test_limit_order_taker_then_resting_maker():
    cfg = _venue(maker=1.0, taker=5.0)
    v = PaperVenue(cfg)
    # buy 4 limit 102: takes 1 @ 101 and 2 @ 102 now as taker, 1 rests at 102
    fills = v.execute(_order(qty=4.0, limit_price_usd=102.0, order_id="lim"), _book(), T0)
    assert len(fills) == 1 and fills[0].quantity_coin == pytest.approx(3.0)
    assert fills[0].price_usd == pytest.approx(305.0 / 3.0) and fills[0].liquidity == "taker"
    assert v.report("lim").status == "open"
    # a book that does not trade through 102: nothing
    assert v.on_market(T0 + 1, "BTC", "perp", _book(101.5)) == []  # best ask 102.5
    # the market falls: best ask 100 <= 102, the rest fills as maker AT the limit
    fills = v.on_market(T0 + 2, "BTC", "perp", _book(99.0))
    assert len(fills) == 1
    f = fills[0]
    assert f.quantity_coin == pytest.approx(1.0) and f.price_usd == 102.0 and f.liquidity == "maker"
    assert f.fee_usd == pytest.approx(102.0 * 1e-4)
    rep = v.report("lim")
    assert rep.status == "filled" and rep.fees_usd == pytest.approx(305.0 * 5e-4 + 102.0 * 1e-4)
    # an IOC limit order that is not marketable is cancelled untouched
    assert v.execute(_order(qty=1.0, limit_price_usd=90.0, order_id="ioc-lim"), _book(), T0,
                     time_in_force="IOC") == []
    assert v.report("ioc-lim").status == "cancelled"


def test_orders_on_one_book_share_its_depth():
    v = PaperVenue(_venue())
    v.submit(_order(qty=2.0, order_id="first"))
    v.submit(_order(qty=2.0, order_id="second", ts=T0 + 0.01))
    fills = v.on_market(T0 + 1, "BTC", "perp", _book())
    assert [f.order_id for f in fills] == ["first", "second"]
    assert fills[0].price_usd == pytest.approx((101 + 102) / 2.0)  # 1 @ 101, 1 @ 102
    # what the first left: 1 @ 102, then 1 @ 104
    assert fills[1].price_usd == pytest.approx((102 + 104) / 2.0)


def test_venue_rejections_name_their_rule():
    v = PaperVenue(SPOT_VENUE, wallet_usd=1_000.0, enforce_balance=True)
    cases = {
        "venue_invalid_order": _order(kind="spot", qty=-1.0),
        "venue_unsupported_kind": _order(kind="perp"),
        "venue_mismatch": _order(kind="spot", venue="bybit"),
        "venue_no_price": _order(kind="spot", qty=0.001),
        "venue_insufficient_balance": _order(kind="spot", qty=100.0, limit_price_usd=101.0),
    }
    for rule, order in cases.items():
        r = v.submit(order)
        assert isinstance(r, Rejection) and r.rule == rule, (rule, r)
    assert [r.rule for r in v.rejections] == list(cases)
    assert v.execute(_order(kind="spot", qty=1.0, side="sell"), _book(), T0) == []  # no coins
    assert v.rejections[-1].rule == "venue_insufficient_balance"
    ok = v.submit(_order(kind="spot", qty=1.0, limit_price_usd=50.0, order_id="dup"))
    assert isinstance(ok, Order)
    assert v.submit(_order(kind="spot", qty=1.0, limit_price_usd=50.0, order_id="dup")).rule == \
        "venue_duplicate_order_id"


def test_reduce_only_never_opens_or_flips():
    v = PaperVenue(_venue())
    v.execute(_order(qty=1.0), _book(), T0)
    fills = v.execute(_order(side="sell", qty=3.0, reduce_only=True), _book(), T0 + 1)
    assert fills[0].quantity_coin == pytest.approx(1.0)
    assert v.account.position_coin("BTC", "perp") == 0.0
    assert v.execute(_order(side="sell", qty=1.0, reduce_only=True), _book(), T0 + 2) == []


def test_marks_move_unrealized_pnl_and_margin():
    v = PaperVenue(_venue(leverage=4.0), wallet_usd=1_000.0)
    v.execute(_order(qty=2.0), Book.from_levels([(99.0, 5.0)], [(100.0, 5.0)]), T0)  # long 2 @ 100
    wallet = v.account.wallet_usd
    assert v.on_market(T0 + 60, "BTC", "perp", 110.0) == []  # a mid, nothing open
    b = v.balance()
    assert b.unrealized_pnl_usd == pytest.approx(2 * (110.0 - 100.0))
    assert b.total_usd == pytest.approx(wallet + 20.0)
    assert b.locked_usd == pytest.approx(2 * 110.0 / 4.0)
    v.on_market(T0 + 120, "BTC", "perp", _book(90.0))  # a book: its mid
    assert v.balance().unrealized_pnl_usd == pytest.approx(2 * (90.0 - 100.0))


def test_finished_reports_are_bounded():
    v = PaperVenue(_venue(), max_reports=3)
    for i in range(5):
        v.execute(_order(qty=0.1, order_id=f"o-{i}"), _book(), T0 + i)
    assert v.report("o-0") is None and v.report("o-1") is None
    assert [v.report(f"o-{i}").status for i in (2, 3, 4)] == ["filled"] * 3


def test_venue_implements_the_protocol():
    assert isinstance(PaperVenue(BINANCE_USDM), Venue)


def test_venue_config_validation():
    with pytest.raises(ValueError):
        _venue(name="")
    with pytest.raises(ValueError):
        _venue(taker=-1.0)
    with pytest.raises(ValueError):
        _venue(maker=-6.0, taker=5.0)  # rebate above the taker fee
    with pytest.raises(ValueError):
        _venue(latency=-0.1)
    with pytest.raises(ValueError):
        _venue(kinds=("swap",))
    with pytest.raises(ValueError):
        _venue(funding_offset_h=8.0)
    with pytest.raises(ValueError):
        _venue(leverage=0.5)
    assert all(c.taker_fee_bps >= c.maker_fee_bps for c in DEFAULT_VENUES)
    assert SPOT_VENUE.taker_fee_bps == 10.0 and 4.0 <= BINANCE_USDM.taker_fee_bps <= 5.5


# --------------------------------------------------------------------------- funding

def test_funding_times_are_00_08_16_utc():
    start = T0 - 1.0  # 23:59:59 the day before
    times = funding_times(start, start + 2 * 86_400)
    hours = [datetime.fromtimestamp(t, tz=timezone.utc).hour for t in times]
    assert hours == [0, 8, 16, 0, 8, 16]
    assert all(datetime.fromtimestamp(t, tz=timezone.utc).minute == 0 for t in times)
    # (start, end]: a start on a funding time excludes it, an end on one includes it
    assert list(funding_times(T0, T0 + 8 * HOUR)) == [T0 + 8 * HOUR]
    assert len(funding_times(T0 + 1, T0 + 8 * HOUR - 1)) == 0
    hourly = funding_times(T0, T0 + 24 * HOUR, interval_h=1.0)
    assert len(hourly) == 24
    offset = funding_times(T0, T0 + 24 * HOUR, interval_h=8.0, offset_h=4.0)
    assert [datetime.fromtimestamp(t, tz=timezone.utc).hour for t in offset] == [4, 12, 20]
    assert is_funding_time(T0 + 16 * HOUR) and not is_funding_time(T0 + 15 * HOUR)


def test_funding_sign_conventions():
    # a long pays positive funding, a short receives it; negative funding reverses both
    assert funding_payment_usd(2.0, 60_000.0, 1e-4) == pytest.approx(-12.0)
    assert funding_payment_usd(-2.0, 60_000.0, 1e-4) == pytest.approx(12.0)
    assert funding_payment_usd(2.0, 60_000.0, -3e-4) == pytest.approx(36.0)
    np.testing.assert_allclose(funding_payment_usd(np.array([1.0, -1.0, 0.0]), 100.0, 0.01),
                               [-1.0, 1.0, 0.0])
    s = settle_funding(0.5, 40_000.0, 2e-4, T0 + 8 * HOUR, venue="v", asset="BTC")
    assert s.payment_usd == pytest.approx(-4.0) and s.position_coin == 0.5
    with pytest.raises(ValueError, match="not a funding time"):
        settle_funding(0.5, 40_000.0, 2e-4, T0 + HOUR)
    with pytest.raises(ValueError):
        settle_funding(0.5, math.nan, 2e-4, T0)


def test_venue_settles_funding_on_mark_notional():
    v = PaperVenue(_venue(), wallet_usd=10_000.0)
    v.execute(_order(qty=2.0), _book(100.0), T0 - 60)  # long 2 @ 101.5 (1@101, 1@102)
    wallet = v.account.wallet_usd
    # mark 120, not the entry: pays 2 * 120 * 1e-3 = 0.24
    s = v.settle_funding("BTC", 120.0, 1e-3, T0)
    assert s.payment_usd == pytest.approx(-0.24)
    assert v.account.wallet_usd == pytest.approx(wallet - 0.24)
    assert v.account.funding_received_usd == pytest.approx(-0.24)
    with pytest.raises(ValueError, match="already settled"):
        v.settle_funding("BTC", 120.0, 1e-3, T0)
    with pytest.raises(ValueError):
        v.settle_funding("BTC", 120.0, 1e-3, T0 + 9 * HOUR)  # off schedule
    v.execute(_order(side="sell", qty=4.0), _book(100.0), T0 + HOUR)  # now short about 2 (book has 6)
    short = v.account.position_coin("BTC", "perp")
    assert short == pytest.approx(-2.0)
    settled = v.settle_funding_between("BTC", 100.0, 1e-3, T0, T0 + 24 * HOUR)
    assert [s.ts_s for s in settled] == [T0 + 8 * HOUR, T0 + 16 * HOUR, T0 + 24 * HOUR]
    assert all(s.payment_usd == pytest.approx(0.2) for s in settled)  # the short receives
    assert v.account.cash_identity_error_usd() == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- balances

def test_round_trip_conserves_cash_plus_fees():
    v = PaperVenue(_venue(), wallet_usd=5_000.0)
    b = _book()
    buy = v.execute(_order(qty=2.5), b, T0)
    sell = v.execute(_order(side="sell", qty=2.5), b, T0 + 1)
    fees = sum(f.fee_usd for f in buy + sell)
    pnl = 2.5 * (sell[0].price_usd - buy[0].price_usd)  # 2.5 * (98.4 - 101.6) = -8
    assert pnl == pytest.approx(-8.0)
    acct = v.account
    assert acct.wallet_usd == pytest.approx(5_000.0 + pnl - fees)
    assert acct.wallet_usd + acct.fees_paid_usd - acct.realized_pnl_usd == pytest.approx(5_000.0)
    bal = v.balance()
    assert bal.locked_usd == 0.0 and bal.total_usd == pytest.approx(bal.available_usd)
    # at an unchanged price (a one-level book deep enough), only the fees are lost
    flat = Book.from_levels([(99.0, 100.0)], [(101.0, 100.0)])
    w = PaperVenue(_venue(taker=0.0), wallet_usd=1_000.0)
    w.execute(_order(qty=3.0), flat, T0)
    w.execute(_order(qty=3.0, side="sell"), Book.from_levels([(101.0, 100.0)], [(103.0, 100.0)]),
              T0 + 1)
    assert w.account.wallet_usd == pytest.approx(1_000.0)


def test_spot_round_trip_moves_cash_and_coins():
    v = PaperVenue(SPOT_VENUE, wallet_usd=1_000.0, enforce_balance=True)
    flat = Book.from_levels([(99.0, 50.0)], [(100.0, 50.0)])
    [buy] = v.execute(_order(kind="spot", qty=2.0), flat, T0)
    assert buy.fee_usd == pytest.approx(2 * 100.0 * 1e-3)
    assert v.account.wallet_usd == pytest.approx(1_000.0 - 200.0 - 0.2)
    assert v.balance().coin("BTC").total_coin == pytest.approx(2.0)
    # a resting sell locks its coins
    v.submit(_order(kind="spot", side="sell", qty=1.5, limit_price_usd=120.0, order_id="ask"))
    v.on_market(T0 + 1, "BTC", "spot", flat)
    c = v.balance().coin("BTC")
    assert (c.locked_coin, c.available_coin) == pytest.approx((1.5, 0.5))
    assert v.cancel("ask") and not v.cancel("ask")
    assert v.balance().coin("BTC").locked_coin == 0.0
    v.execute(_order(kind="spot", side="sell", qty=2.0), flat, T0 + 2)
    assert v.account.wallet_usd == pytest.approx(1_000.0 - 200.2 + 198.0 - 0.198)
    assert v.account.cash_identity_error_usd() == pytest.approx(0.0, abs=1e-9)


def test_coin_deposit_seeds_spot_holdings():
    v = PaperVenue(SPOT_VENUE, wallet_usd=100.0, enforce_balance=True)
    v.account.deposit_coin("BTC", 0.27, mark_usd=60_000.0)
    b = v.balance()
    assert b.coin("BTC").total_coin == pytest.approx(0.27) and b.wallet_usd == 100.0
    assert b.equity_usd == pytest.approx(100.0 + 0.27 * 60_000.0)
    assert v.account.cash_identity_error_usd() == 0.0
    flat = Book.from_levels([(59_990.0, 5.0)], [(60_010.0, 5.0)])
    [f] = v.execute(_order(kind="spot", side="sell", qty=0.27), flat, T0)  # the coins can be sold
    assert v.account.wallet_usd == pytest.approx(100.0 + 0.27 * 59_990.0 * (1 - 1e-3))
    with pytest.raises(ValueError):
        v.account.deposit_coin("BTC", 0.0)


_actions = st.lists(st.tuples(st.sampled_from(["buy", "sell"]), st.floats(0.05, 4.0),
                              st.sampled_from(["market", "limit", "cancel"]),
                              st.floats(95.0, 105.0)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(actions=_actions)
def test_balance_identities_hold_through_any_sequence(actions):
    v = PaperVenue(_venue(leverage=5.0), wallet_usd=10_000.0)
    for i, (side, qty, what, mid) in enumerate(actions):
        ts = T0 + i
        if what == "cancel" and v.open_orders:
            v.cancel(v.open_orders[0].order_id)
        elif what == "limit":
            v.submit(_order(side=side, qty=qty, ts=ts, limit_price_usd=mid))
        else:
            v.submit(_order(side=side, qty=qty, ts=ts))
        v.on_market(ts + 0.5, "BTC", "perp", _book(mid))
        b = v.balance()
        assert b.total_usd == pytest.approx(b.available_usd + b.locked_usd, abs=1e-9)
        assert b.locked_usd >= -1e-12
        assert v.account.cash_identity_error_usd() == pytest.approx(0.0, abs=1e-7)
        pos = v.account.position_coin("BTC", "perp")
        assert b.locked_usd >= abs(pos) * mid / 5.0 - 1e-9  # at least the initial margin
    v.cancel_all()
    b = v.balance()
    pos = v.account.position_coin("BTC", "perp")
    # with no order open, only the position's margin stays locked
    assert b.locked_usd == pytest.approx(abs(pos) * actions[-1][3] / 5.0, abs=1e-9)


def test_cross_venue_balance_combines_and_transfers():
    a = PaperVenue(_venue("a"), wallet_usd=3_000.0)
    b = PaperVenue(_venue("b"), wallet_usd=1_000.0)
    s = PaperVenue(SPOT_VENUE, wallet_usd=500.0)
    cross = CrossVenueBalance([a, b, s])
    a.execute(_order(qty=2.0, venue="a"), _book(), T0)
    s.execute(_order(kind="spot", qty=1.0), _book(), T0)
    a.submit(_order(qty=1.0, venue="a", limit_price_usd=90.0, order_id="rest"))
    rows = cross.by_venue()
    combined = cross.combined()
    for field in ("available_usd", "locked_usd", "total_usd", "equity_usd"):
        assert getattr(combined, field) == pytest.approx(sum(getattr(r, field) for r in rows.values()))
    assert combined.total_usd == pytest.approx(combined.available_usd + combined.locked_usd)
    assert combined.coin("BTC").total_coin == pytest.approx(1.0)
    # the resting order locks 90 / 10 + fee; the position 2 * mark 100 / 10
    assert rows["a"].locked_usd == pytest.approx(2 * 100 / 10 + 90 / 10 + 90 * 5e-4)
    before = combined.total_usd
    cross.transfer_usd("a", "b", 1_000.0)
    assert cross.combined().total_usd == pytest.approx(before)
    assert cross.by_venue()["b"].total_usd == pytest.approx(2_000.0)
    assert cross.transfer_needed_usd("b", 2_500.0) == pytest.approx(500.0)
    assert cross.transfer_needed_usd("b", 100.0) == 0.0
    with pytest.raises(ValueError):
        cross.transfer_usd("b", "a", 10_000.0)
    assert cross.inconsistencies() == []
    a.account.wallet_usd += 1.0  # cash moved outside the counted paths
    assert any("cash off" in p for p in cross.inconsistencies())
    with pytest.raises(ValueError):
        CrossVenueBalance([a, PaperVenue(_venue("a"))])


# --------------------------------------------------------------------------- routing

def test_router_picks_the_cheaper_venue():
    cheap, dear = _venue("cheap", taker=2.0), _venue("dear", taker=8.0)
    router = ExecutionOptimizer([cheap, dear])
    plan = router.plan(_order(qty=0.5, order_id="r-1"), {"cheap": _book(), "dear": _book()})
    assert [c.venue for c in plan.children] == ["cheap"]
    assert plan.children[0].quantity_coin == 0.5 and plan.children[0].order_id == "r-1"
    assert plan.expected_price_usd == pytest.approx(101.0)
    assert plan.expected_fee_usd == pytest.approx(0.5 * 101.0 * 2e-4) and plan.unfilled_coin == 0.0
    # a better price beats a lower fee: 'dear' quotes 1 lower (1 % >> 6 bps)
    plan = router.plan(_order(qty=0.5), {"cheap": _book(), "dear": _book(99.0)})
    assert [c.venue for c in plan.children] == ["dear"]
    # sells go where the bid is higher
    plan = router.plan(_order(side="sell", qty=0.5), {"cheap": _book(), "dear": _book(99.0)})
    assert [c.venue for c in plan.children] == ["cheap"]


def test_router_splits_when_depth_is_insufficient():
    a, b = _venue("a", taker=0.0), _venue("b", taker=0.0)
    router = ExecutionOptimizer([a, b])
    thin = Book.from_levels([(99.0, 1.0)], [(100.5, 1.0)])
    plan = router.plan(_order(qty=2.0), {"a": thin, "b": _book()})
    by_venue = {c.venue: c.quantity_coin for c in plan.children}
    # 1 @ 100.5 on a, then 1 @ 101 on b
    assert by_venue == pytest.approx({"a": 1.0, "b": 1.0})
    assert plan.expected_price_usd == pytest.approx(100.75)
    assert {c.order_id for c in plan.children} == {"test@a", "test@b"}
    assert sum(c.quantity_coin for c in plan.children) == pytest.approx(2.0)
    # more than both books: the rest is reported unfilled
    plan = router.plan(_order(qty=20.0), {"a": thin, "b": _book()})
    assert plan.unfilled_coin == pytest.approx(20.0 - 7.0)
    # split off: one venue, the one that fills most
    plan = router.plan(_order(qty=2.0), {"a": thin, "b": _book()}, split=False)
    assert [c.venue for c in plan.children] == ["b"]


def test_router_limits_and_filters():
    spot, perp = SPOT_VENUE, _venue("perp_venue")
    router = ExecutionOptimizer([spot, perp], max_slippage_bps=150.0)
    books = {"spot": _book(), "perp_venue": _book()}
    plan = router.plan(_order(kind="spot", qty=1.0), books)
    assert [c.venue for c in plan.children] == ["spot"]  # the only venue trading spot
    # 150 bps from mid 100 allows the 101 level only
    plan = router.plan(_order(qty=3.0), books)
    assert sum(c.quantity_coin for c in plan.children) == pytest.approx(1.0)
    assert plan.unfilled_coin == pytest.approx(2.0)
    # the order's limit applies too
    plan = ExecutionOptimizer([perp]).plan(_order(qty=5.0, limit_price_usd=102.0), books)
    assert plan.children[0].quantity_coin == pytest.approx(3.0)
    # a fixed venue passes through; an unknown one routes nothing
    plan = router.plan(_order(qty=1.0, venue="perp_venue", order_id="f"), books)
    assert [(c.venue, c.order_id) for c in plan.children] == [("perp_venue", "f")]
    plan = router.plan(_order(qty=1.0, venue="nowhere"), books)
    assert plan.children == () and plan.unfilled_coin == 1.0
    assert router.plan(_order(kind="put", qty=1.0), books).children == ()
    assert router.plan(_order(qty=-1.0), books).children == ()


def test_router_drops_dust_children():
    a, b = _venue("a", taker=0.0), _venue("b", taker=0.0)
    tiny = Book.from_levels([(99.0, 0.01)], [(100.5, 0.01)])
    plan = ExecutionOptimizer([a, b], min_child_coin=0.1).plan(_order(qty=0.5), {"a": tiny, "b": _book()})
    assert [c.venue for c in plan.children] == ["b"]
    assert any("dropped" in r for r in plan.reasoning)
    # but not when dropping it would leave part of the order unfilled
    plan = ExecutionOptimizer([a, b], min_child_coin=0.1).plan(_order(qty=6.005),
                                                               {"a": tiny, "b": _book()})
    assert {c.venue for c in plan.children} == {"a", "b"}


def test_router_split_is_the_linear_program_optimum():
    rng = np.random.default_rng(3)
    configs = [_venue(f"v{i}", taker=float(rng.uniform(0, 10))) for i in range(3)]
    router = ExecutionOptimizer(configs)
    for _ in range(20):
        books = {c.name: DepthModel(half_spread_bps=float(rng.uniform(0.1, 3)),
                                    level_spacing_bps=float(rng.uniform(0.2, 3)),
                                    level_notional_usd=float(rng.uniform(5e4, 5e5)),
                                    n_levels=10).book(float(60_000 * (1 + rng.normal(0, 2e-4))))
                 for c in configs}
        side = str(rng.choice(["buy", "sell"]))
        qty = float(rng.uniform(1, 30))
        plan = router.plan(_order(side=side, qty=qty), books)
        # the LP: take x_l <= size_l from each level, sum x = filled, minimize the all-in cost
        sign = 1.0 if side == "buy" else -1.0
        costs, caps = [], []
        for c in configs:
            p, s = books[c.name].side_for(side)
            costs.append(sign * (p + sign * p * c.taker_fee_bps * 1e-4))
            caps.append(s)
        costs, caps = np.concatenate(costs), np.concatenate(caps)
        filled = min(qty, caps.sum())
        lp = linprog(costs, A_eq=np.ones((1, len(costs))), b_eq=[filled],
                     bounds=list(zip(np.zeros_like(caps), caps)), method="highs")
        assert lp.status == 0
        plan_cost = sign * (plan.expected_price_usd * (qty - plan.unfilled_coin)
                            + sign * plan.expected_fee_usd)
        assert qty - plan.unfilled_coin == pytest.approx(filled)
        assert plan_cost == pytest.approx(lp.fun, rel=1e-10)


def test_routed_children_fill_at_the_planned_prices():
    venues = {c.name: PaperVenue(c) for c in (BINANCE_USDM, BYBIT, DERIBIT)}
    mids = {"binance_usdm": 60_000.0, "bybit": 59_995.0, "deribit": 60_010.0}
    books = {n: venues[n].config.depth.book(m) for n, m in mids.items()}
    plan = ExecutionOptimizer(list(c.config for c in venues.values())).plan(
        _order(qty=250.0, order_id="big"), books)
    assert len(plan.children) >= 2
    fills = [f for c in plan.children for f in venues[c.venue].execute(c, books[c.venue], T0)]
    assert sum(f.quantity_coin for f in fills) == pytest.approx(250.0)
    vwap = sum(f.notional_usd for f in fills) / 250.0
    assert vwap == pytest.approx(plan.expected_price_usd, rel=1e-12)
    assert sum(f.fee_usd for f in fills) == pytest.approx(plan.expected_fee_usd, rel=1e-12)
