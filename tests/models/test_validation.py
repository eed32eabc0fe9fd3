"""Tests of models.validation: the tick rules, their reasons and their order."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.records import QuoteBatch, TradeBatch
from models.validation import quote_rejections, trade_rejections
from tests.conftest import make_quotes, make_trades

BID = "bid price not positive and finite"
ASK = "ask price not positive and finite"
BID_SIZE = "bid size not positive and finite"
ASK_SIZE = "ask size not positive and finite"
CROSSED = "crossed or locked book: bid >= ask"
QUOTE_TIME = "event time not a plausible UTC time (2009-2100)"

T_PRICE = "trade price not positive and finite"
T_SIZE = "trade size not positive and finite"
T_SIDE = "trade side is not buy or sell"
T_ID = "trade id missing"
T_TIME = "event time not a plausible UTC time (2009-2100)"

NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------------------------ quotes


def test_valid_quotes_pass_with_empty_reason():
    r = quote_rejections(make_quotes({}, {"bid": 0.3521, "ask": 0.3526, "bid_size_coin": 672.0}))
    assert r.tolist() == ["", ""]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"bid": 0.0}, BID),
        ({"bid": -1.0}, BID),
        ({"bid": NAN}, BID),
        ({"bid": INF}, BID),
        ({"ask": 0.0}, ASK),
        ({"ask": -101.0}, ASK),
        ({"ask": NAN}, ASK),
        ({"ask": INF}, ASK),
        ({"bid_size_coin": 0.0}, BID_SIZE),
        ({"bid_size_coin": -1.0}, BID_SIZE),
        ({"ask_size_coin": 0.0}, ASK_SIZE),
        ({"ask_size_coin": INF}, ASK_SIZE),
        ({"ask_size_coin": -INF}, ASK_SIZE),
        ({"bid": 102.0, "ask": 101.0}, CROSSED),
        ({"bid": 101.0, "ask": 101.0}, CROSSED),  # locked
        ({"event_ts": NAN}, QUOTE_TIME),
        ({"event_ts": INF}, QUOTE_TIME),
    ],
)
def test_each_quote_rule_and_its_reason(row, reason):
    assert quote_rejections(make_quotes(row)).tolist() == [reason]


@pytest.mark.parametrize(
    "row, reason",
    [
        # every rule broken at once: the first listed wins
        ({"bid": -1.0, "ask": -2.0, "bid_size_coin": 0.0, "ask_size_coin": 0.0, "event_ts": NAN}, BID),
        ({"ask": NAN, "bid_size_coin": -1.0, "ask_size_coin": -1.0}, ASK),
        ({"bid_size_coin": 0.0, "ask_size_coin": 0.0, "bid": 200.0}, BID_SIZE),
        ({"ask_size_coin": -1.0, "bid": 200.0, "event_ts": INF}, ASK_SIZE),
        ({"bid": 200.0, "event_ts": NAN}, CROSSED),
    ],
)
def test_quote_rule_order_first_failure_wins(row, reason):
    assert quote_rejections(make_quotes(row)).tolist() == [reason]


def test_quote_reasons_are_per_row_in_a_mixed_batch():
    b = make_quotes({}, {"bid": 105.0}, {"ask_size_coin": 0.0}, {}, {"bid": -1.0, "ask": 200.0})
    assert quote_rejections(b).tolist() == ["", CROSSED, ASK_SIZE, "", BID]


def test_empty_batches_have_no_reasons():
    assert quote_rejections(QuoteBatch.empty()).tolist() == []
    assert trade_rejections(TradeBatch.empty()).tolist() == []


# ------------------------------------------------------------------------------------ trades


def test_valid_trades_pass():
    b = make_trades({"side": "buy"}, {"side": "sell", "price": 0.3528, "size_coin": 58.0})
    assert trade_rejections(b).tolist() == ["", ""]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"price": 0.0}, T_PRICE),
        ({"price": -5.0}, T_PRICE),
        ({"price": NAN}, T_PRICE),
        ({"price": INF}, T_PRICE),
        ({"size_coin": 0.0}, T_SIZE),
        ({"size_coin": -0.1}, T_SIZE),
        ({"size_coin": NAN}, T_SIZE),
        ({"size_coin": INF}, T_SIZE),
        ({"side": "BUY"}, T_SIDE),
        ({"side": ""}, T_SIDE),
        ({"side": "short"}, T_SIDE),
        ({"trade_id": ""}, T_ID),
        ({"event_ts": NAN}, T_TIME),
        ({"event_ts": -INF}, T_TIME),
    ],
)
def test_each_trade_rule_and_its_reason(row, reason):
    assert trade_rejections(make_trades(row)).tolist() == [reason]


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"price": NAN, "size_coin": -1.0, "side": "x", "trade_id": "", "event_ts": NAN}, T_PRICE),
        ({"size_coin": 0.0, "side": "x", "trade_id": ""}, T_SIZE),
        ({"side": "x", "trade_id": "", "event_ts": INF}, T_SIDE),
        ({"trade_id": "", "event_ts": NAN}, T_ID),
    ],
)
def test_trade_rule_order_first_failure_wins(row, reason):
    assert trade_rejections(make_trades(row)).tolist() == [reason]


def test_sizes_not_given_are_allowed_but_given_ones_are_checked():
    # Old Coinbase tickers carry no sizes (NaN): the quote is still a quote.
    assert quote_rejections(make_quotes({"bid_size_coin": NAN, "ask_size_coin": NAN})).tolist() == [""]
    assert quote_rejections(make_quotes({"bid_size_coin": NAN, "ask_size_coin": 0.0})).tolist() == [ASK_SIZE]


def test_repeated_trade_ids_are_not_the_row_rules_business():
    # The validator refuses repeats, remembering across batches and skipping refused messages;
    # a row rule could not tell a repeat of a refused message from a real repeat.
    b = make_trades({"trade_id": "7"}, {"trade_id": "7"})
    assert trade_rejections(b).tolist() == ["", ""]


def test_same_trade_id_on_different_instruments_is_not_a_duplicate():
    b = make_trades(
        {"trade_id": "1", "instrument": "BTCUSDT"}, {"trade_id": "1", "instrument": "ETHUSDT"}
    )
    assert trade_rejections(b).tolist() == ["", ""]




def test_duplicate_ids_in_separate_batches_are_not_rejected_here():
    assert trade_rejections(make_trades({"trade_id": "1"})).tolist() == [""]
    assert trade_rejections(make_trades({"trade_id": "1"})).tolist() == [""]


# -------------------------------------------------------------------------------- properties

positive_finite = st.floats(min_value=1e-9, max_value=1e12, allow_nan=False, allow_infinity=False)
bad_number = st.one_of(
    st.just(0.0), st.just(-0.0), st.just(NAN), st.just(INF), st.just(-INF),
    st.floats(max_value=-1e-12, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(bid=positive_finite, spread=positive_finite, bid_size=positive_finite,
       ask_size=positive_finite, ts=st.floats(1_230_940_800.0, 4_102_444_799.0))
def test_property_positive_finite_uncrossed_quote_passes(bid, spread, bid_size, ask_size, ts):
    ask = bid + spread
    if not (math.isfinite(ask) and bid < ask):  # the sum rounded back onto bid
        ask = np.nextafter(bid, np.inf)
    b = make_quotes({"bid": bid, "ask": ask, "bid_size_coin": bid_size,
                     "ask_size_coin": ask_size, "event_ts": ts})
    assert quote_rejections(b).tolist() == [""]


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["bid", "ask", "bid_size_coin", "ask_size_coin"]), value=bad_number)
def test_property_any_non_positive_or_non_finite_quote_field_fails(field, value):
    if field.endswith("size_coin") and math.isnan(value):
        value = -1.0  # a NaN size means "not given", which is allowed
    reasons = quote_rejections(make_quotes({field: value}))
    assert reasons[0] != ""
    assert reasons[0] == {"bid": BID, "ask": ASK, "bid_size_coin": BID_SIZE,
                          "ask_size_coin": ASK_SIZE}[field]


@settings(max_examples=200, deadline=None)
@given(price=positive_finite, size=positive_finite, side=st.sampled_from(["buy", "sell"]),
       trade_id=st.text(min_size=1, max_size=12))
def test_property_positive_finite_trade_passes(price, size, side, trade_id):
    b = make_trades({"price": price, "size_coin": size, "side": side, "trade_id": trade_id})
    assert trade_rejections(b).tolist() == [""]


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["price", "size_coin"]), value=bad_number)
def test_property_any_non_positive_or_non_finite_trade_field_fails(field, value):
    reasons = trade_rejections(make_trades({field: value}))
    assert reasons[0] == {"price": T_PRICE, "size_coin": T_SIZE}[field]


@pytest.mark.parametrize("ts", [0.0, 1e12, 1.7e15, -1.0, 4_102_444_800.0])
def test_implausible_event_times_are_refused(ts):
    # Milliseconds or nanoseconds read as seconds, or a zero time, are unit mistakes.
    assert quote_rejections(make_quotes({"event_ts": ts})).tolist() == [QUOTE_TIME]
    assert trade_rejections(make_trades({"event_ts": ts})).tolist() == [T_TIME]
