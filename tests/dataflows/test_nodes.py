"""Tests of dataflows.nodes.validate: invalid rows move to quarantine with their raw text."""

from __future__ import annotations

import json

from dataflows.adapters import binance
from dataflows.nodes import validate
from models.records import NormalizedBatch, QuarantineRecord, QuoteBatch, TradeBatch
from tests.conftest import make_quotes, make_raw, make_trades


def normalized(quotes=None, trades=None, quarantine=(), n_control=0, n_ignored=0) -> NormalizedBatch:
    quotes = QuoteBatch.empty() if quotes is None else quotes
    trades = TradeBatch.empty() if trades is None else trades
    return NormalizedBatch(
        exchange="binance",
        n_messages=len(quotes) + len(trades) + len(quarantine) + n_control + n_ignored,
        trades=trades, quotes=quotes, quarantine=tuple(quarantine),
        n_control=n_control, n_ignored=n_ignored,
    )


def test_valid_batch_passes_unchanged():
    nb = normalized(make_quotes({}, {}), make_trades({}))
    out = validate(nb)
    assert len(out.quotes) == 2 and len(out.trades) == 1 and out.quarantine == ()


def test_crossed_quote_and_negative_sizes_move_to_quarantine():
    quotes = make_quotes(
        {"bid": 100.0, "ask": 101.0, "raw": "good quote", "receive_ts": 10.0},
        {"bid": 102.0, "ask": 101.0, "raw": "crossed quote", "receive_ts": 11.0},
        {"bid_size_coin": -3.0, "raw": "negative bid size", "receive_ts": 12.0},
        {"bid": 200.0, "ask": 201.0, "raw": "good quote 2", "receive_ts": 13.0},
    )
    trades = make_trades(
        {"size_coin": -1.0, "raw": "negative trade size", "receive_ts": 14.0},
        {"price": 50.0, "raw": "good trade", "receive_ts": 15.0},
    )
    earlier = QuarantineRecord("binance", 9.0, "binance invalid JSON: x", "{")
    nb = normalized(quotes, trades, quarantine=[earlier], n_control=2)
    out = validate(nb)

    assert out.quotes.raw.tolist() == ["good quote", "good quote 2"]
    assert out.quotes.bid.tolist() == [100.0, 200.0]
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
    assert len(out.quotes) + len(out.trades) + len(out.quarantine) + out.n_control == out.n_messages


def test_validate_after_the_adapter_keeps_the_wire_text():
    crossed = json.dumps({"stream": "btcusdt@bookTicker", "data": {
        "u": 1, "s": "BTCUSDT", "b": "101", "B": "1", "a": "100", "A": "1"}})
    negative = json.dumps({"stream": "btcusdt@aggTrade", "data": {
        "e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 7, "p": "100", "q": "-2", "T": 1000, "m": False}})
    nb = binance.normalize(make_raw("binance", [(5.0, crossed), (6.0, negative)]))
    assert len(nb.quotes) == 1 and len(nb.trades) == 1  # the adapter does not judge values
    out = validate(nb)
    assert len(out.quotes) == 0 and len(out.trades) == 0
    assert [(r.reason, r.raw, r.receive_ts) for r in out.quarantine] == [
        ("invalid: crossed or locked book: bid >= ask", crossed, 5.0),
        ("invalid: trade size not positive and finite", negative, 6.0),
    ]
