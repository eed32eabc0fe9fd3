"""models.orders: the shared order types: structural checks of an order, a fill that refuses to
be malformed, signs and notionals."""

from __future__ import annotations

import dataclasses
import math

import pytest

from models.orders import Fill, Order, Rejection, order_problems, side_sign


def _order(**kw) -> Order:
    base = dict(ts_s=1_700_000_000.0, asset="BTC", kind="perp", side="buy", quantity_coin=0.5,
                reason="rebalance")
    base.update(kw)
    return Order(**base)


def test_contract_fields_and_defaults():
    names = [f.name for f in dataclasses.fields(Order)]
    assert names == ["ts_s", "asset", "kind", "side", "quantity_coin", "reason", "venue",
                     "limit_price_usd", "reduce_only", "order_id"]
    o = _order()
    assert o.venue == "" and math.isnan(o.limit_price_usd) and not o.reduce_only and o.order_id == ""
    assert o.is_market and not _order(limit_price_usd=60_000.0).is_market
    assert [f.name for f in dataclasses.fields(Fill)] == [
        "ts_s", "order_id", "asset", "kind", "side", "venue", "quantity_coin", "price_usd", "fee_usd",
        "liquidity"]
    assert [f.name for f in dataclasses.fields(Rejection)] == ["ts_s", "order", "rule", "detail"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.quantity_coin = 2.0


def test_well_formed_order_has_no_problems():
    assert order_problems(_order()) == ()
    assert order_problems(_order(kind="put", side="sell", limit_price_usd=1200.0)) == ()


@pytest.mark.parametrize("kw, fragment", [
    (dict(side="long"), "side"),
    (dict(kind="option"), "kind"),
    (dict(quantity_coin=0.0), "quantity_coin"),
    (dict(quantity_coin=-1.0), "quantity_coin"),
    (dict(quantity_coin=math.inf), "quantity_coin"),
    (dict(quantity_coin=math.nan), "quantity_coin"),
    (dict(limit_price_usd=0.0), "limit_price_usd"),
    (dict(limit_price_usd=-5.0), "limit_price_usd"),
    (dict(limit_price_usd=math.inf), "limit_price_usd"),
    (dict(ts_s=math.nan), "ts_s"),
    (dict(asset=""), "asset"),
])
def test_each_structural_problem_is_named(kw, fragment):
    problems = order_problems(_order(**kw))
    assert len(problems) == 1 and fragment in problems[0]


def test_signed_quantities_and_notional():
    assert side_sign("buy") == 1 and side_sign("sell") == -1
    with pytest.raises(ValueError):
        side_sign("short")
    assert _order(side="sell", quantity_coin=0.25).signed_quantity_coin == -0.25
    f = Fill(1.0, "a-1", "BTC", "perp", "sell", "bybit", 0.4, 60_000.0, 12.0, "taker")
    assert f.signed_quantity_coin == -0.4
    assert f.notional_usd == pytest.approx(24_000.0)


@pytest.mark.parametrize("kw", [
    dict(side="hold"), dict(liquidity="retail"), dict(quantity_coin=0.0), dict(price_usd=0.0),
    dict(price_usd=math.nan), dict(fee_usd=math.inf),
])
def test_malformed_fill_is_refused(kw):
    base = dict(ts_s=1.0, order_id="a-1", asset="BTC", kind="perp", side="buy", venue="bybit",
                quantity_coin=0.4, price_usd=60_000.0, fee_usd=12.0, liquidity="taker")
    base.update(kw)
    with pytest.raises(ValueError):
        Fill(**base)


def test_maker_rebate_is_a_negative_fee():
    f = Fill(1.0, "a-1", "BTC", "perp", "buy", "x", 1.0, 100.0, -0.01, "maker")
    assert f.fee_usd < 0
