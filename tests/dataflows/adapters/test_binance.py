"""Tests of the Binance adapter against recorded real traffic and hand-made wire messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.adapters import binance, normalize
from dataflows.replay import read_capture
from models.records import NormalizedBatch, RawBatch
from tests.conftest import BINANCE_CAPTURE, make_raw

BOOK = {"u": 499869768, "s": "NKNUSDT", "b": "0.35210000", "B": "672.00000000",
        "a": "0.35260000", "A": "3199.00000000"}
AGG = {"e": "aggTrade", "E": 1633998523963, "s": "NKNUSDT", "a": 15683430, "p": "0.35280000",
       "q": "58.00000000", "f": 19862790, "l": 19862790, "T": 1633998523963, "m": False, "M": True}
TRADE = {"e": "trade", "E": 1633998523963, "s": "BTCUSDT", "t": 12345, "p": "57000.10",
         "q": "0.002", "b": 88, "a": 50, "T": 1633998523960, "m": True, "M": True}
DEPTH = {"e": "depthUpdate", "E": 1633998512068, "s": "NKNUSDT", "U": 1, "u": 2,
         "b": [["0.35130000", "6195.00000000"]], "a": []}


def combined(stream: str, data) -> str:
    return json.dumps({"stream": stream, "data": data})


def run(*messages: str, t0: float = 1633998513.0) -> NormalizedBatch:
    return binance.normalize(make_raw("binance", [(t0 + i * 0.01, m) for i, m in enumerate(messages)]))


def accounted(nb: NormalizedBatch) -> int:
    return len(nb.trades) + len(nb.quotes) + nb.n_control + nb.n_ignored + len(nb.quarantine)


# ------------------------------------------------------------------------ recorded traffic


@pytest.fixture(scope="module")
def recorded() -> NormalizedBatch:
    lines = list(read_capture(BINANCE_CAPTURE))
    assert len(lines) == 265
    return normalize(RawBatch("binance", np.array([l.receive_ts for l in lines]), [l.message for l in lines]))


def test_recorded_capture_classification(recorded):
    assert recorded.exchange == "binance"
    assert recorded.n_messages == 265
    assert len(recorded.trades) == 2
    assert len(recorded.quotes) == 84
    assert recorded.n_ignored == 179  # 177 depth@100ms + 2 kline_1m
    assert recorded.n_control == 0
    assert recorded.quarantine == ()
    assert recorded.data_messages == 86
    assert accounted(recorded) == 265


def test_recorded_first_aggtrade_fields(recorded):
    t = recorded.trades
    assert t.exchange[0] == "binance"
    assert t.instrument[0] == "NKNUSDT"
    assert (t.asset[0], t.quote_ccy[0]) == ("NKN", "USDT")
    assert t.price[0] == 0.3528
    assert t.size_coin[0] == 58.0
    assert t.side[0] == "buy"  # m=false: the buyer was the taker
    assert t.trade_id[0] == "15683430"
    assert t.event_ts[0] == pytest.approx(1633998523.963, abs=1e-6)
    assert t.receive_ts[0] == 1633998523.957215
    assert '"a":15683430' in t.raw[0]
    assert (t.instrument[1], t.asset[1], t.quote_ccy[1]) == ("LRCBTC", "LRC", "BTC")
    assert t.price[1] == 0.00000638


def test_recorded_quotes(recorded):
    q = recorded.quotes
    assert sorted(set(q.instrument.tolist())) == ["BLZETH", "LRCBTC", "NKNUSDT"]
    assert (q.instrument == "NKNUSDT").sum() == 74
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0], q.ask_size_coin[0]) == (0.3521, 672.0, 0.3526, 3199.0)
    # spot bookTicker has no event time: the receive time stands in
    np.testing.assert_array_equal(q.event_ts, q.receive_ts)
    assert q.receive_ts[0] == 1633998513.377805
    assert all(isinstance(r, str) and r.startswith('{"stream"') for r in q.raw)


# ------------------------------------------------------------------------ hand-made messages


def test_combined_bookticker():
    nb = run(combined("nknusdt@bookTicker", BOOK))
    q = nb.quotes
    assert len(q) == 1 and len(nb.trades) == 0
    assert (q.exchange[0], q.instrument[0], q.asset[0], q.quote_ccy[0]) == ("binance", "NKNUSDT", "NKN", "USDT")
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0], q.ask_size_coin[0]) == (0.3521, 672.0, 0.3526, 3199.0)


def test_raw_stream_bookticker():
    nb = run(json.dumps(BOOK), t0=1700000000.25)
    assert len(nb.quotes) == 1 and nb.quarantine == ()
    assert nb.quotes.bid[0] == 0.3521
    assert nb.quotes.event_ts[0] == nb.quotes.receive_ts[0] == 1700000000.25


def test_raw_stream_aggtrade():
    nb = run(json.dumps({**AGG, "m": True}))
    t = nb.trades
    assert len(t) == 1 and nb.quarantine == ()
    assert t.side[0] == "sell"  # m=true: the buyer rested, the taker sold
    assert t.trade_id[0] == "15683430"
    assert t.price[0] == 0.3528 and t.size_coin[0] == 58.0
    assert t.event_ts[0] == pytest.approx(1633998523.963, abs=1e-6)


def test_trade_channel_uses_t_as_trade_id():
    for text in (json.dumps(TRADE), combined("btcusdt@trade", TRADE)):
        nb = run(text)
        t = nb.trades
        assert len(t) == 1, nb.quarantine
        assert t.trade_id[0] == "12345"  # not the "a" (seller order id) field
        assert t.side[0] == "sell"
        assert (t.asset[0], t.quote_ccy[0]) == ("BTC", "USDT")
        assert t.price[0] == 57000.10 and t.size_coin[0] == 0.002
        assert t.event_ts[0] == pytest.approx(1633998523.960, abs=1e-6)


def test_control_acks_and_errors():
    nb = run(
        '{"result":null,"id":1}',
        '{"result":["btcusdt@bookTicker"],"id":3}',
        json.dumps({"error": {"code": 2, "msg": "Invalid request: unknown variant"}, "id": 2}),
    )
    assert nb.n_control == 3
    assert nb.quarantine == () and len(nb.quotes) == len(nb.trades) == nb.n_ignored == 0
    assert nb.data_messages == 0


def test_depth_and_kline_are_ignored_in_both_stream_forms():
    nb = run(
        combined("nknusdt@depth@100ms", DEPTH),
        json.dumps(DEPTH),
        combined("nknusdt@kline_1m", {"e": "kline", "E": 1, "s": "NKNUSDT", "k": {}}),
        json.dumps({"e": "kline", "E": 1, "s": "NKNUSDT", "k": {}}),
        combined("btcusdt@ticker", {"e": "24hrTicker"}),
    )
    assert nb.n_ignored == 5
    assert nb.quarantine == ()


@pytest.mark.parametrize(
    "text, reason_parts",
    [
        ('{"stream": "nknusdt@bookTicker", "data": {', ["binance", "invalid JSON"]),
        ("", ["binance", "invalid JSON"]),
        ("[1, 2, 3]", ["binance", "expected a JSON object", "list"]),
        ('"hello"', ["binance", "expected a JSON object", "str"]),
        (combined("nknusdt@bookTicker", {k: v for k, v in BOOK.items() if k != "A"}),
         ["binance", "bookTicker", "missing field 'A'"]),
        (combined("nknusdt@aggTrade", {k: v for k, v in AGG.items() if k != "p"}),
         ["binance", "aggTrade", "missing field 'p'"]),
        (combined("nknusdt@aggTrade", {k: v for k, v in AGG.items() if k != "s"}),
         ["binance", "aggTrade", "missing field 's'"]),
        (combined("nknusdt@aggTrade", {**AGG, "p": "abc"}),
         ["binance", "aggTrade", "field 'p' is not a number", "'abc'"]),
        (combined("nknusdt@bookTicker", {**BOOK, "b": "abc"}),
         ["binance", "bookTicker", "field 'b' is not a number", "'abc'"]),
        (combined("nknusdt@bookTicker", {**BOOK, "B": None}),
         ["binance", "bookTicker", "field 'B' is not a number"]),
        (combined("nknusdt@aggTrade", {**AGG, "q": True}),
         ["binance", "aggTrade", "field 'q' is not a number"]),
        (combined("nknusdt@aggTrade", {**AGG, "m": "false"}),
         ["binance", "aggTrade", "field 'm' is not a boolean", "'false'"]),
        (combined("nknusdt@aggTrade", {**AGG, "m": 0}),
         ["binance", "aggTrade", "field 'm' is not a boolean"]),
        (json.dumps({"e": "executionReport", "s": "BTCUSDT"}), ["binance", "unrecognized message"]),
        (combined("nknusdt@somethingNew", {"x": 1}), ["binance", "unrecognized message"]),
        ('{"stream": "nknusdt@bookTicker", "data": [1]}', ["binance", "data object"]),
        ("{}", ["binance", "unrecognized message"]),
    ],
)
def test_malformed_messages_are_quarantined_with_clear_reasons(text, reason_parts):
    nb = run(text, t0=1700000001.5)
    assert nb.n_messages == 1
    assert len(nb.quarantine) == 1, (nb.quotes, nb.trades)
    rec = nb.quarantine[0]
    for part in reason_parts:
        assert part in rec.reason, rec.reason
    assert rec.raw == text
    assert rec.exchange == "binance"
    assert rec.receive_ts == 1700000001.5
    assert len(nb.quotes) == len(nb.trades) == nb.n_control == nb.n_ignored == 0


def test_a_bad_message_does_not_spoil_its_neighbours():
    nb = run(
        combined("nknusdt@bookTicker", BOOK),
        "not json",
        combined("nknusdt@aggTrade", {**AGG, "q": "x"}),
        combined("nknusdt@aggTrade", AGG),
        '{"result":null,"id":1}',
        combined("nknusdt@depth@100ms", DEPTH),
    )
    assert (len(nb.quotes), len(nb.trades), len(nb.quarantine), nb.n_control, nb.n_ignored) == (1, 1, 2, 1, 1)
    # the rows' columns stay aligned: the trade row is the good aggTrade
    assert nb.trades.size_coin.tolist() == [58.0]
    assert nb.trades.receive_ts.tolist() == [1633998513.0 + 3 * 0.01]


def test_empty_batch():
    nb = binance.normalize(RawBatch("binance", np.array([]), []))
    assert nb.n_messages == 0 and len(nb.quotes) == len(nb.trades) == 0 and nb.quarantine == ()


def test_unknown_exchange_is_quarantined_naming_the_exchange():
    raw = make_raw("kraken", [(1.0, combined("nknusdt@bookTicker", BOOK)), (2.0, "[]"), (3.0, "junk")])
    nb = normalize(raw)
    assert nb.exchange == "kraken"
    assert nb.n_messages == 3
    assert len(nb.quarantine) == 3
    assert len(nb.quotes) == len(nb.trades) == nb.n_control == nb.n_ignored == 0
    for rec, (ts, text) in zip(nb.quarantine, [(1.0, raw.messages[0]), (2.0, "[]"), (3.0, "junk")]):
        assert "kraken" in rec.reason
        assert "no adapter" in rec.reason
        assert (rec.exchange, rec.receive_ts, rec.raw) == ("kraken", ts, text)


def test_dispatch_to_binance():
    nb = normalize(make_raw("binance", [(1.0, combined("nknusdt@bookTicker", BOOK))]))
    assert len(nb.quotes) == 1


# ------------------------------------------------------------------------------- property

_GOOD = [
    combined("nknusdt@bookTicker", BOOK),
    json.dumps(BOOK),
    combined("nknusdt@aggTrade", AGG),
    json.dumps(TRADE),
    '{"result":null,"id":1}',
    combined("nknusdt@depth@100ms", DEPTH),
]
_BAD = [
    "", "[", "[]", "null", "42", '"x"', "{}", '{"e": "nope"}',
    combined("nknusdt@aggTrade", {**AGG, "m": "yes"}),
    combined("nknusdt@bookTicker", {**BOOK, "b": [1]}),
    combined("nknusdt@bookTicker", {**BOOK, "a": {"x": 1}}),
    combined("nknusdt@aggTrade", {**AGG, "T": "soon"}),
    '{"stream": 5, "data": {}}',
    '{"stream": "x@bookTicker", "data": null}',
    combined("nknusdt@aggTrade", {**AGG, "q": {"n": 1}}),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)
# payloads with Binance's keys but arbitrary values
fuzzed_payload = st.fixed_dictionaries(
    {}, optional={k: json_values | st.text(max_size=6) for k in ("e", "s", "u", "b", "B", "a", "A", "p", "q", "T", "t", "m", "E")}
)
fuzzed = st.one_of(
    st.sampled_from(_GOOD),
    st.sampled_from(_BAD),
    st.text(max_size=30),
    json_values.map(json.dumps),
    fuzzed_payload.map(json.dumps),
    st.tuples(st.sampled_from(["x@bookTicker", "x@aggTrade", "x@trade", "x@depth", "x@kline_1m", "x@zzz"]), fuzzed_payload)
    .map(lambda sp: combined(*sp)),
)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(fuzzed, max_size=25))
def test_property_every_message_is_accounted_for_and_nothing_raises(messages):
    nb = run(*messages)
    assert nb.n_messages == len(messages)
    assert accounted(nb) == len(messages)
    assert len(nb.quotes.raw) == len(nb.quotes.bid)
    assert len(nb.trades.raw) == len(nb.trades.price)
    quarantined_raw = [r.raw for r in nb.quarantine]
    for text in quarantined_raw:
        assert text in messages
    for r in nb.quarantine:
        assert r.reason.startswith("binance "), r.reason
