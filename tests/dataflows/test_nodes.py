"""Tests of dataflows.nodes.Validator: a message that breaks a rule, or repeats a trade, moves to
quarantine whole, with its raw text; the rest pass untouched."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from dataflows.adapters import normalize
from dataflows.nodes import Validator, validate
from models.records import (
    DATA_BATCHES,
    BookUpdateBatch,
    FundingBatch,
    Gap,
    IndexPriceBatch,
    NormalizedBatch,
    OptionTickerBatch,
    QuarantineRecord,
)
from tests.conftest import make_quotes, make_raw, make_trades

T0 = 1_700_000_000.0


def msgs(batch, *msg_index: int):
    """``batch`` with its rows assigned to the given messages."""
    assert len(msg_index) == len(batch)
    return dataclasses.replace(batch, msg_index=np.asarray(msg_index, dtype=np.int64))


def _rows(cls, defaults: dict, rows: list[dict]):
    full = [{**defaults, **r} for r in rows]
    for i, r in enumerate(full):
        r.setdefault("raw", f"{cls.__name__} row {i}")
    return cls.from_columns(
        **{c: [r[c] for r in full] for c in cls.COLUMNS if c not in ("msg_index", "out_of_order")}
    )


def books(*rows: dict) -> BookUpdateBatch:
    return _rows(BookUpdateBatch, dict(
        exchange="binance", instrument="BTCUSDT", asset="BTC", event_ts=T0, receive_ts=T0,
        side="bid", price=100.0, size_coin=1.0, is_snapshot=False, sequence=1), list(rows))


def fundings(*rows: dict) -> FundingBatch:
    return _rows(FundingBatch, dict(
        exchange="binance", instrument="BTCUSDT", asset="BTC", event_ts=T0, receive_ts=T0,
        mark_usd=30000.0, index_usd=29990.0, funding_rate=0.0001, next_funding_ts=T0 + 3600), list(rows))


def indexes(*rows: dict) -> IndexPriceBatch:
    return _rows(IndexPriceBatch, dict(
        exchange="binance", index_name="btc_usd", asset="BTC", event_ts=T0, receive_ts=T0,
        price_usd=30000.0), list(rows))


def options(*rows: dict) -> OptionTickerBatch:
    nan = math.nan
    return _rows(OptionTickerBatch, dict(
        exchange="binance", instrument="BTC-27DEC24-50000-C", asset="BTC", event_ts=T0, receive_ts=T0,
        expiry_utc=T0 + 86400 * 30, strike_usd=50000.0, is_call=True, bid_coin=0.01, bid_size=1.0,
        ask_coin=0.012, ask_size=2.0, mark_coin=0.011, mark_iv=0.55, bid_iv=0.54, ask_iv=0.56,
        underlying_usd=30000.0, index_usd=30000.0, open_interest=nan, delta=0.1, gamma=nan,
        vega=nan, theta=nan, rho=nan), list(rows))


def normalized(n_messages: int, quarantine=(), n_control=0, n_ignored=0, gaps=(), **tables) -> NormalizedBatch:
    full = {name: tables.get(name, cls.empty()) for name, cls in DATA_BATCHES.items()}
    return NormalizedBatch(exchange="binance", n_messages=n_messages, quarantine=tuple(quarantine),
                           n_control=n_control, n_ignored=n_ignored, gaps=tuple(gaps), **full)


def assert_same_rows(a, b) -> None:
    assert type(a) is type(b)
    for c in type(a).COLUMNS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c), err_msg=c)


def aggtrade(trade_id: int, price: str = "100", qty: str = "1", symbol: str = "BTCUSDT") -> str:
    return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": {
        "e": "aggTrade", "E": 1, "s": symbol, "a": trade_id, "p": price, "q": qty,
        "T": int(T0 * 1000), "m": False}})


def book_ticker(bid: str, ask: str, u: int = 1, B: str = "1") -> str:
    return json.dumps({"stream": "btcusdt@bookTicker", "data": {
        "u": u, "s": "BTCUSDT", "b": bid, "B": B, "a": ask, "A": "1"}})


# ------------------------------------------------------------------------------ rules


def test_valid_batch_passes_unchanged():
    gap = Gap("binance", "BTCUSDT", "sequence", T0, T0, 2, "ids 3..4 missing")
    nb = normalized(
        5, gaps=[gap], n_control=1,
        quotes=msgs(make_quotes({}, {}), 0, 1), trades=msgs(make_trades({}), 2),
        book_updates=msgs(books({}, {"side": "ask", "price": 101.0, "size_coin": 0.0}), 3, 3),
    )
    out = validate(nb)
    assert out.quarantine == () and out.gaps == (gap,)
    for name in DATA_BATCHES:
        assert_same_rows(getattr(out, name), getattr(nb, name))
    assert (out.n_messages, out.n_control, out.data_messages) == (5, 1, 4)


def test_crossed_quote_and_negative_sizes_move_to_quarantine():
    # messages: 0 quarantined by the adapter, 1-2 control, 3-6 quotes, 7-8 trades
    quotes = msgs(make_quotes(
        {"bid": 100.0, "ask": 101.0, "raw": "good quote", "receive_ts": 10.0},
        {"bid": 102.0, "ask": 101.0, "raw": "crossed quote", "receive_ts": 11.0},
        {"bid_size_coin": -3.0, "raw": "negative bid size", "receive_ts": 12.0},
        {"bid": 200.0, "ask": 201.0, "raw": "good quote 2", "receive_ts": 13.0},
    ), 3, 4, 5, 6)
    trades = msgs(make_trades(
        {"size_coin": -1.0, "raw": "negative trade size", "receive_ts": 14.0},
        {"price": 50.0, "raw": "good trade", "receive_ts": 15.0},
    ), 7, 8)
    earlier = QuarantineRecord("binance", 9.0, "binance invalid JSON: x", "{")
    nb = normalized(9, quotes=quotes, trades=trades, quarantine=[earlier], n_control=2)
    out = validate(nb)

    assert out.quotes.raw.tolist() == ["good quote", "good quote 2"]
    assert out.quotes.bid.tolist() == [100.0, 200.0]
    assert out.quotes.msg_index.tolist() == [3, 6]
    assert out.trades.raw.tolist() == ["good trade"]
    assert out.quarantine[0] == earlier  # adapter's records kept, first
    got = [(r.exchange, r.receive_ts, r.reason, r.raw) for r in out.quarantine[1:]]
    assert got == [
        ("binance", 11.0, "invalid: crossed or locked book: bid >= ask", "crossed quote"),
        ("binance", 12.0, "invalid: bid size not positive and finite", "negative bid size"),
        ("binance", 14.0, "invalid: trade size not positive and finite", "negative trade size"),
    ]
    assert all(isinstance(r.receive_ts, float) for r in out.quarantine)
    # counts are untouched, and every message is still somewhere
    assert (out.n_messages, out.n_control, out.n_ignored) == (nb.n_messages, 2, 0)
    assert out.data_messages == 3
    assert out.data_messages + len(out.quarantine) + out.n_control + out.n_ignored == out.n_messages


def test_quote_sizes_may_be_missing_but_not_wrong():
    quotes = msgs(make_quotes(
        {"bid_size_coin": math.nan, "ask_size_coin": math.nan, "raw": "no sizes"},
        {"ask_size_coin": 0.0, "raw": "zero ask size"},
    ), 0, 1)
    out = validate(normalized(2, quotes=quotes))
    assert out.quotes.raw.tolist() == ["no sizes"]
    assert [(r.reason, r.raw) for r in out.quarantine] == [
        ("invalid: ask size not positive and finite", "zero ask size")]


@pytest.mark.parametrize("event_ts", [T0 * 1000, 1.0, 4_102_444_800.0, math.nan, math.inf])
def test_implausible_event_times_are_refused(event_ts):
    out = validate(normalized(1, trades=make_trades({"event_ts": event_ts, "raw": "t"})))
    assert len(out.trades) == 0
    assert [(r.reason, r.raw) for r in out.quarantine] == [
        ("invalid: event time not a plausible UTC time (2009-2100)", "t")]


def test_first_and_last_plausible_event_times_pass():
    out = validate(normalized(2, trades=make_trades({"event_ts": 1_230_940_800.0}, {"event_ts": 4_102_444_799.0})))
    assert len(out.trades) == 2 and out.quarantine == ()


@pytest.mark.parametrize(
    "table, batch, reason",
    [
        ("book_updates", books({"size_coin": -1.0}), "book size negative or not finite"),
        ("book_updates", books({"side": "buy"}), "book side is not bid or ask"),
        ("funding", fundings({"funding_rate": 5.0}), "funding rate not finite or beyond ±100% per interval"),
        ("funding", fundings({"mark_usd": 0.0}), "mark price not positive and finite"),
        ("index_prices", indexes({"price_usd": -1.0}), "index price not positive and finite"),
        ("option_tickers", options({"bid_coin": 0.02, "ask_coin": 0.01}), "crossed option book: bid > ask"),
        ("option_tickers", options({"strike_usd": math.nan}), "strike not positive and finite"),
    ],
)
def test_every_table_is_validated(table, batch, reason):
    good = {
        "book_updates": books, "funding": fundings, "index_prices": indexes, "option_tickers": options,
    }[table]({"raw": "good"})
    both = type(batch).concat([good, dataclasses.replace(batch, msg_index=np.array([1]))])
    out = validate(normalized(2, **{table: both}))
    assert getattr(out, table).raw.tolist() == ["good"]
    assert [r.reason for r in out.quarantine] == [f"invalid: {reason}"]


def test_missing_option_values_pass():
    nan = math.nan
    out = validate(normalized(1, option_tickers=options(
        {"bid_coin": nan, "bid_size": nan, "bid_iv": nan, "ask_iv": nan, "mark_iv": nan})))
    assert len(out.option_tickers) == 1 and out.quarantine == ()


# ---------------------------------------------------------------- message-level verdicts


def test_one_bad_row_quarantines_the_whole_message_in_every_table_once():
    # message 0: a good quote and two book levels, one negative → all of message 0 goes
    # message 1: a good quote and a good book level → kept
    # message 2: a bad trade and a crossed quote → one quarantine record, the first reason
    quotes = msgs(make_quotes(
        {"raw": "m0", "receive_ts": 1.0}, {"raw": "m1", "receive_ts": 2.0},
        {"bid": 200.0, "raw": "m2", "receive_ts": 3.0},
    ), 0, 1, 2)
    book = msgs(books(
        {"raw": "m0", "receive_ts": 1.0}, {"price": -5.0, "raw": "m0", "receive_ts": 1.0},
        {"raw": "m1", "receive_ts": 2.0},
    ), 0, 0, 1)
    trades = msgs(make_trades({"side": "hold", "raw": "m2", "receive_ts": 3.0}), 2)
    out = validate(normalized(3, quotes=quotes, book_updates=book, trades=trades))
    assert out.quotes.raw.tolist() == ["m1"] and out.quotes.msg_index.tolist() == [1]
    assert out.book_updates.raw.tolist() == ["m1"]
    assert len(out.trades) == 0
    assert out.quarantine == (
        QuarantineRecord("binance", 1.0, "invalid: book price not positive and finite", "m0"),
        # trades are judged before quotes: a message's first reason follows the table order
        QuarantineRecord("binance", 3.0, "invalid: trade side is not buy or sell", "m2"),
    )
    assert out.data_messages == 1


def test_a_bad_level_in_a_real_depth_message_refuses_all_its_levels():
    good = json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": int(T0 * 1000), "s": "BTCUSDT", "U": 1, "u": 2,
        "b": [["30000", "1"]], "a": [["30001", "2"]]}})
    bad = json.dumps({"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": int(T0 * 1000), "s": "BTCUSDT", "U": 3, "u": 4,
        "b": [["30000", "1"], ["29999", "-1"]], "a": [["30001", "2"]]}})
    nb = normalize(make_raw("binance", [(T0, good), (T0 + 0.1, bad)]))
    assert len(nb.book_updates) == 5
    out = validate(nb)
    assert out.book_updates.raw.tolist() == [good, good]
    assert [(r.reason, r.raw, r.receive_ts) for r in out.quarantine] == [
        ("invalid: book size negative or not finite", bad, T0 + 0.1)]


def test_validate_after_the_adapter_keeps_the_wire_text():
    crossed = json.dumps({"stream": "btcusdt@bookTicker", "data": {
        "u": 1, "s": "BTCUSDT", "b": "101", "B": "1", "a": "100", "A": "1"}})
    negative = json.dumps({"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 7, "p": "100", "q": "-2", "T": 1000, "m": False}})
    nb = normalize(make_raw("binance", [(5.0, crossed), (6.0, negative)]))
    assert len(nb.quotes) == 1 and len(nb.trades) == 1  # the adapter does not judge values
    out = validate(nb)
    assert len(out.quotes) == 0 and len(out.trades) == 0
    assert [(r.reason, r.raw, r.receive_ts) for r in out.quarantine] == [
        ("invalid: crossed or locked book: bid >= ask", crossed, 5.0),
        ("invalid: trade size not positive and finite", negative, 6.0),
    ]
    assert out.data_messages == 0


def test_two_identical_quote_messages_count_as_two():
    q = book_ticker("100", "101")
    out = validate(normalize(make_raw("binance", [(T0, q), (T0 + 0.1, q)])))
    assert len(out.quotes) == 2 and out.quotes.msg_index.tolist() == [0, 1]
    assert out.quarantine == () and out.data_messages == 2


# ------------------------------------------------------------------------ duplicate trades


def test_a_trade_repeated_in_a_later_batch_is_refused_by_the_same_validator():
    v = Validator()
    first = v(normalize(make_raw("binance", [(T0, aggtrade(7)), (T0 + 0.1, aggtrade(8))])))
    assert first.trades.trade_id.tolist() == ["7", "8"] and first.quarantine == ()
    again = aggtrade(7)
    out = v(normalize(make_raw("binance", [(T0 + 1, again), (T0 + 1.1, aggtrade(9))])))
    assert out.trades.trade_id.tolist() == ["9"]
    assert out.quarantine == (QuarantineRecord("binance", T0 + 1, "duplicate trade: already received", again),)
    assert out.data_messages == 1
    # a fresh validator (validate) has no memory of earlier batches
    assert validate(normalize(make_raw("binance", [(T0 + 2, again)]))).quarantine == ()


def test_two_identical_trade_messages_in_one_batch_count_as_two_and_the_second_is_a_duplicate():
    t = aggtrade(7)
    out = Validator()(normalize(make_raw("binance", [(T0, t), (T0 + 0.1, t)])))
    assert out.trades.trade_id.tolist() == ["7"] and out.trades.msg_index.tolist() == [0]
    assert len(out.quarantine) == 1
    rec = out.quarantine[0]
    assert (rec.receive_ts, rec.raw) == (T0 + 0.1, t)
    assert "duplicate trade" in rec.reason
    assert out.n_messages == 2 and out.data_messages == 1


def test_duplicates_are_per_exchange_and_instrument():
    v = Validator()
    v(normalize(make_raw("binance", [(T0, aggtrade(7))])))
    out = v(normalize(make_raw("binance", [(T0 + 1, aggtrade(7, symbol="ETHUSDT"))])))
    assert out.trades.trade_id.tolist() == ["7"] and out.quarantine == ()
    other_exchange = normalized(1, trades=make_trades({"exchange": "kraken", "trade_id": "7"}))
    other_exchange = dataclasses.replace(other_exchange, exchange="kraken")
    assert v(other_exchange).quarantine == ()


def test_a_trade_of_a_refused_message_is_not_remembered():
    v = Validator()
    bad = aggtrade(7, price="-1")
    out = v(normalize(make_raw("binance", [(T0, bad)])))
    assert [r.reason for r in out.quarantine] == ["invalid: trade price not positive and finite"]
    # the same trade id arriving well formed later is new: the refused one was never stored
    out = v(normalize(make_raw("binance", [(T0 + 1, aggtrade(7))])))
    assert out.trades.trade_id.tolist() == ["7"] and out.quarantine == ()


def test_a_message_with_a_repeated_trade_is_refused_whole():
    # a Deribit-style message with two trades, one of which was already received
    v = Validator()
    v(normalized(1, trades=make_trades({"trade_id": "1"})))
    two = msgs(make_trades({"trade_id": "1", "raw": "pair"}, {"trade_id": "2", "raw": "pair"}), 0, 0)
    out = v(normalized(1, trades=two))
    assert len(out.trades) == 0
    assert [(r.reason, r.raw) for r in out.quarantine] == [("duplicate trade: already received", "pair")]
    # its new trade was not stored, so it is not remembered either
    assert v(normalized(1, trades=make_trades({"trade_id": "2"}))).quarantine == ()


def test_dedup_memory_is_bounded():
    v = Validator(dedup_capacity=2)
    for i in (1, 2, 3):
        assert v(normalized(1, trades=make_trades({"trade_id": str(i)}))).quarantine == ()
    # 1 was forgotten (the database's key is the last defence); 3 is still remembered
    assert v(normalized(1, trades=make_trades({"trade_id": "1"}))).quarantine == ()
    assert len(v(normalized(1, trades=make_trades({"trade_id": "3"}))).quarantine) == 1


def test_a_valid_trade_after_a_refused_copy_in_the_same_batch_is_kept():
    bad, good = aggtrade(7, price="-1"), aggtrade(7)
    out = Validator()(normalize(make_raw("binance", [(T0, bad), (T0 + 0.1, good)])))
    assert out.trades.raw.tolist() == [good]
    assert [r.raw for r in out.quarantine] == [bad]


# ------------------------------------------------------------------------- out-of-order ticks


def _quotes_at(*times: float, instrument: str = "BTCUSDT"):
    return normalized(
        len(times),
        quotes=make_quotes(*({"event_ts": t, "instrument": instrument} for t in times)),
    )


def test_an_older_tick_is_stored_flagged_by_default():
    v = Validator()
    first = v(_quotes_at(1_700_000_010.0, 1_700_000_011.0))
    assert not first.quotes.out_of_order.any()
    # A tick older than the newest one seen, in the next batch, and one in order after it.
    later = v(_quotes_at(1_700_000_009.0, 1_700_000_012.0))
    assert later.quotes.out_of_order.tolist() == [True, False]
    assert later.quarantine == ()


def test_out_of_order_is_per_instrument():
    v = Validator()
    v(_quotes_at(1_700_000_010.0, instrument="BTCUSDT"))
    other = v(_quotes_at(1_700_000_005.0, instrument="ETHUSDT"))
    assert not other.quotes.out_of_order.any()


def test_out_of_order_ticks_can_be_quarantined_instead():
    v = Validator(out_of_order="quarantine")
    v(_quotes_at(1_700_000_010.0))
    out = v(_quotes_at(1_700_000_009.0, 1_700_000_011.0))
    assert len(out.quotes) == 1 and out.quotes.event_ts[0] == 1_700_000_011.0
    assert [q.reason for q in out.quarantine] == [
        "out of order: event time before the instrument's previous tick"
    ]


def test_book_updates_are_not_judged_by_order():
    v = Validator()
    v(normalized(1, book_updates=books({"event_ts": 1_700_000_010.0})))
    out = v(normalized(1, book_updates=books({"event_ts": 1_700_000_001.0})))
    assert not out.book_updates.out_of_order.any()


def test_unknown_out_of_order_policy_is_refused():
    with pytest.raises(ValueError, match="flag"):
        Validator(out_of_order="drop")
