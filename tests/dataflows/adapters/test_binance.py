"""Tests of the Binance adapter against recorded real traffic and hand-made wire messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.adapters import normalize
from dataflows.adapters.binance import BinanceAdapter
from dataflows.replay import read_capture
from models.records import DATA_BATCHES, Gap, NormalizedBatch, RawBatch
from tests.conftest import BINANCE_CAPTURE, make_raw

BOOK = {"u": 499869768, "s": "NKNUSDT", "b": "0.35210000", "B": "672.00000000",
        "a": "0.35260000", "A": "3199.00000000"}
AGG = {"e": "aggTrade", "E": 1633998523963, "s": "NKNUSDT", "a": 15683430, "p": "0.35280000",
       "q": "58.00000000", "f": 19862790, "l": 19862790, "T": 1633998523963, "m": False, "M": True}
TRADE = {"e": "trade", "E": 1633998523963, "s": "BTCUSDT", "t": 12345, "p": "57000.10",
         "q": "0.002", "b": 88, "a": 50, "T": 1633998523960, "m": True, "M": True}
DEPTH = {"e": "depthUpdate", "E": 1633998512068, "s": "NKNUSDT", "U": 1, "u": 2,
         "b": [["0.35130000", "6195.00000000"]], "a": []}
# USD-M futures mark price and funding (developers.binance.com, "Mark Price Stream")
MARK = {"e": "markPriceUpdate", "E": 1562305380000, "s": "BTCUSDT", "p": "11794.15000000",
        "i": "11784.62659091", "P": "11784.25641265", "r": "0.00038167", "T": 1562306400000}


def combined(stream: str, data) -> str:
    return json.dumps({"stream": stream, "data": data})


def depth(U: int, u: int, symbol: str = "NKNUSDT", bids=(("0.35130000", "6195.00000000"),), asks=(),
          E: int = 1633998512068) -> str:
    data = {**DEPTH, "s": symbol, "U": U, "u": u, "E": E, "b": [list(x) for x in bids], "a": [list(x) for x in asks]}
    return combined(f"{symbol.lower()}@depth@100ms", data)


def run(*messages: str, t0: float = 1633998513.0, adapter: BinanceAdapter | None = None) -> NormalizedBatch:
    adapter = adapter or BinanceAdapter()
    return adapter.normalize(make_raw("binance", [(t0 + i * 0.01, m) for i, m in enumerate(messages)]))


def rows(nb: NormalizedBatch) -> int:
    return sum(len(b) for b in nb.data().values())


def check_accounting(nb: NormalizedBatch, raw: RawBatch) -> None:
    """Every message has one verdict, and every row points back at the message it came from."""
    assert nb.n_messages == len(raw)
    assert nb.data_messages >= 0
    assert nb.data_messages + nb.n_control + nb.n_ignored + len(nb.quarantine) == nb.n_messages
    row_messages = set()
    for name, batch in nb.data().items():
        cols = {len(getattr(batch, c)) for c in DATA_BATCHES[name].COLUMNS}
        assert len(cols) == 1, f"{name} columns misaligned"
        for i, m in enumerate(batch.msg_index.tolist()):
            assert 0 <= m < len(raw)
            assert batch.raw[i] == raw.messages[m]
            assert batch.receive_ts[i] == raw.receive_ts[m]
            row_messages.add(m)
    # only data messages make rows
    assert len(row_messages) <= nb.data_messages
    quarantined = [r.raw for r in nb.quarantine]
    for text in quarantined:
        assert text in raw.messages


# ------------------------------------------------------------------------ recorded traffic


@pytest.fixture(scope="module")
def recorded() -> NormalizedBatch:
    lines = list(read_capture(BINANCE_CAPTURE))
    assert len(lines) == 265
    return normalize(recorded_raw())


def recorded_raw() -> RawBatch:
    lines = list(read_capture(BINANCE_CAPTURE))
    return RawBatch("binance", np.array([l.receive_ts for l in lines]), [l.message for l in lines])


def test_recorded_capture_classification(recorded):
    assert recorded.exchange == "binance"
    assert recorded.n_messages == 265
    assert len(recorded.trades) == 2
    assert len(recorded.quotes) == 84
    assert len(recorded.book_updates) == 422
    assert len(set(recorded.book_updates.msg_index.tolist())) == 177  # every depth@100ms message
    assert len(recorded.funding) == len(recorded.option_tickers) == len(recorded.index_prices) == 0
    assert recorded.n_ignored == 2  # kline_1m
    assert recorded.n_control == 0
    assert recorded.quarantine == ()
    assert recorded.gaps == ()  # the depth update ids follow on, U = previous u + 1
    assert recorded.data_messages == 84 + 2 + 177
    check_accounting(recorded, recorded_raw())


def test_recorded_depth_updates(recorded):
    bu = recorded.book_updates
    # the first depth message: three bid levels, no asks
    first = bu.take(bu.msg_index == 0)
    assert first.instrument.tolist() == ["NKNUSDT"] * 3
    assert first.asset.tolist() == ["NKN"] * 3
    assert first.side.tolist() == ["bid"] * 3
    assert first.price.tolist() == [0.3513, 0.3475, 0.3464]
    assert first.size_coin.tolist() == [6195.0, 5548.0, 6222.0]
    assert first.sequence.tolist() == [499869752] * 3  # the message's last update id, u
    assert first.event_ts.tolist() == pytest.approx([1633998512.068] * 3, abs=1e-6)
    assert first.receive_ts.tolist() == [1633998512.0633569] * 3
    assert first.raw[0].startswith('{"stream":"nknusdt@depth@100ms"') and '"u":499869752' in first.raw[0]
    assert not bu.is_snapshot.any()  # diffs, never snapshots
    assert dict(zip(*np.unique(bu.instrument.astype(str), return_counts=True))) == {
        "BLZETH": 12, "LRCBTC": 27, "NKNUSDT": 379, "RUNEEUR": 4}
    assert ((bu.side == "bid").sum(), (bu.side == "ask").sum()) == (216, 206)
    assert (bu.size_coin == 0).sum() == 35  # level deletions are kept, as size 0
    assert (bu.price > 0).all() and (bu.size_coin >= 0).all()
    # per instrument the update ids only go up
    for sym in set(bu.instrument.tolist()):
        seq = bu.sequence[bu.instrument == sym]
        assert (np.diff(seq) >= 0).all(), sym


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


def test_futures_bookticker_uses_its_event_time():
    nb = run(combined("btcusdt@bookTicker", {**BOOK, "s": "BTCUSDT", "E": 1700000000123}), t0=1700000000.5)
    assert len(nb.quotes) == 1 and nb.quarantine == ()
    assert nb.quotes.event_ts[0] == pytest.approx(1700000000.123, abs=1e-6)
    assert nb.quotes.receive_ts[0] == 1700000000.5


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
        json.dumps({"code": 0, "msg": "Unknown property", "id": 4}),
    )
    assert nb.n_control == 4
    assert nb.quarantine == () and rows(nb) == 0 and nb.n_ignored == 0
    assert nb.data_messages == 0


def test_klines_and_tickers_are_ignored_in_both_stream_forms():
    nb = run(
        combined("nknusdt@kline_1m", {"e": "kline", "E": 1, "s": "NKNUSDT", "k": {}}),
        json.dumps({"e": "kline", "E": 1, "s": "NKNUSDT", "k": {}}),
        combined("btcusdt@ticker", {"e": "24hrTicker"}),
        combined("btcusdt@miniTicker", {"e": "24hrMiniTicker"}),
        json.dumps({"e": "24hrTicker", "s": "BTCUSDT"}),
        combined("btcusdt@avgPrice", {"e": "avgPrice"}),
    )
    assert nb.n_ignored == 6
    assert nb.quarantine == () and rows(nb) == 0 and nb.n_control == 0


# ------------------------------------------------------------------------ depth diffs


def test_depth_diff_becomes_one_book_row_per_level_in_both_stream_forms():
    levels = dict(bids=[("0.35130000", "6195.00000000"), ("0.35120000", "0.00000000")],
                  asks=[("0.35260000", "3199.00000000")])
    for text in (depth(1, 2, **levels), json.loads(depth(1, 2, **levels))["data"]):
        nb = run(text if isinstance(text, str) else json.dumps(text), t0=1633998512.1)
        assert nb.quarantine == () and nb.gaps == () and nb.n_ignored == 0
        bu = nb.book_updates
        assert len(bu) == 3 and rows(nb) == 3 and nb.data_messages == 1
        assert bu.exchange.tolist() == ["binance"] * 3
        assert bu.instrument.tolist() == ["NKNUSDT"] * 3 and bu.asset.tolist() == ["NKN"] * 3
        assert bu.side.tolist() == ["bid", "bid", "ask"]
        assert bu.price.tolist() == [0.3513, 0.3512, 0.3526]
        assert bu.size_coin.tolist() == [6195.0, 0.0, 3199.0]  # 0 removes the level
        assert bu.is_snapshot.tolist() == [False] * 3
        assert bu.sequence.tolist() == [2, 2, 2]
        assert bu.event_ts.tolist() == pytest.approx([1633998512.068] * 3, abs=1e-6)
        assert bu.receive_ts.tolist() == [1633998512.1] * 3
        assert bu.msg_index.tolist() == [0, 0, 0]


def test_depth_diff_with_no_levels_is_data_without_rows():
    nb = run(depth(1, 2, bids=()))
    assert (nb.n_messages, nb.data_messages, rows(nb), len(nb.quarantine)) == (1, 1, 0, 0)


def test_consecutive_depth_ids_are_ok_and_a_skip_is_a_sequence_gap():
    nb = run(
        depth(100, 105),
        depth(106, 106),
        depth(110, 112, E=1633998513000),  # 107, 108, 109 never arrived
        depth(113, 120),
    )
    assert nb.quarantine == ()
    assert nb.data_messages == 4  # the message after the gap is still data
    assert nb.book_updates.sequence.tolist() == [105, 106, 112, 120]
    assert nb.gaps == (Gap("binance", "NKNUSDT", "sequence", 1633998513.0, 1633998513.0, 3,
                           "depth update ids 107..109 missing"),)


def test_a_stale_depth_update_is_quarantined_and_does_not_move_the_sequence():
    repeat = depth(1, 2, bids=[("0.30000000", "1.00000000")])
    older = depth(1, 1)
    nb = run(depth(1, 2), depth(3, 4), repeat, older, depth(5, 6), t0=1700000000.0)
    assert [r.raw for r in nb.quarantine] == [repeat, older]
    assert nb.quarantine[0].reason == "binance depthUpdate: stale update ids 1..2 (expected 5)"
    assert nb.quarantine[1].reason.startswith("binance depthUpdate: stale update ids 1..1")
    assert nb.quarantine[0].receive_ts == 1700000000.0 + 2 * 0.01
    assert nb.gaps == ()  # 5..6 follows 3..4: the stale ones changed nothing
    assert nb.book_updates.sequence.tolist() == [2, 4, 6]
    assert 0.3 not in nb.book_updates.price.tolist()


def test_depth_sequences_are_per_symbol():
    nb = run(depth(1, 2), depth(50, 51, symbol="BTCUSDT"), depth(3, 3), depth(52, 60, symbol="BTCUSDT"))
    assert nb.gaps == () and nb.quarantine == ()
    nb = run(depth(1, 2), depth(50, 51, symbol="BTCUSDT"), depth(60, 61, symbol="BTCUSDT"), depth(3, 3))
    assert [(g.instrument, g.missing) for g in nb.gaps] == [("BTCUSDT", 8)]


def test_the_adapter_remembers_depth_ids_across_batches():
    adapter = BinanceAdapter()
    assert run(depth(1, 10), adapter=adapter).gaps == ()
    nb = run(depth(15, 20), adapter=adapter)
    assert [(g.instrument, g.missing, g.detail) for g in nb.gaps] == [
        ("NKNUSDT", 4, "depth update ids 11..14 missing")]
    stale = run(depth(15, 20), adapter=adapter)
    assert len(stale.quarantine) == 1 and "stale" in stale.quarantine[0].reason
    # a fresh adapter (and the module-level normalize) starts over: the first update is never a gap
    assert run(depth(15, 20)).gaps == ()
    assert normalize(make_raw("binance", [(1.0, depth(15, 20))])).quarantine == ()


def test_a_malformed_depth_update_does_not_move_the_sequence():
    bad = depth(3, 4, bids=[("0.35", "x")])
    nb = run(depth(1, 2), bad, depth(3, 4))
    assert [r.raw for r in nb.quarantine] == [bad]
    assert "depthUpdate: a book level is not [price, size]" in nb.quarantine[0].reason
    assert nb.gaps == () and nb.book_updates.sequence.tolist() == [2, 4]


@pytest.mark.parametrize("u", [2**63, 2**64 - 1, "99999999999999999999"])
def test_an_update_id_too_large_for_int64_is_quarantined_not_raised(u):
    # the tables store sequence numbers as BIGINT: a larger id must not reach the batch
    huge = combined("nknusdt@depth@100ms", {**DEPTH, "U": 1, "u": u})
    nb = run(combined("nknusdt@bookTicker", BOOK), huge, depth(1, 2))
    assert [r.raw for r in nb.quarantine] == [huge]
    assert "depthUpdate: field 'u' is out of the 64-bit integer range" in nb.quarantine[0].reason
    assert len(nb.quotes) == 1 and nb.book_updates.sequence.tolist() == [2]


# ------------------------------------------------------------------------ mark price, funding


def test_mark_price_becomes_a_funding_row_in_both_stream_forms():
    for text in (combined("btcusdt@markPrice", MARK), combined("btcusdt@markPrice@1s", MARK), json.dumps(MARK)):
        nb = run(text, t0=1562305380.25)
        assert nb.quarantine == () and rows(nb) == 1, nb.quarantine
        f = nb.funding
        assert (f.exchange[0], f.instrument[0], f.asset[0]) == ("binance", "BTCUSDT", "BTC")
        assert f.event_ts[0] == pytest.approx(1562305380.0, abs=1e-6)
        assert f.receive_ts[0] == 1562305380.25
        assert (f.mark_usd[0], f.index_usd[0]) == (11794.15, 11784.62659091)
        assert f.funding_rate[0] == 0.00038167
        assert f.next_funding_ts[0] == pytest.approx(1562306400.0, abs=1e-6)
        assert f.raw[0] == text


@pytest.mark.parametrize("missing", ["p", "i", "r", "T", "E", "s"])
def test_mark_price_missing_a_field_is_quarantined(missing):
    nb = run(combined("btcusdt@markPrice", {k: v for k, v in MARK.items() if k != missing}))
    assert len(nb.quarantine) == 1 and rows(nb) == 0
    assert nb.quarantine[0].reason == f"binance markPriceUpdate: missing field '{missing}'"


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
        (combined("nknusdt@somethingNew", {"x": 1}), ["binance", "unknown stream 'nknusdt@somethingNew'"]),
        (combined("btcusdt@depth@100ms", {**DEPTH, "U": "one"}), ["binance", "depthUpdate", "field 'U' is not an integer"]),
        (combined("btcusdt@depth@100ms", {k: v for k, v in DEPTH.items() if k != "u"}),
         ["binance", "depthUpdate", "missing field 'u'"]),
        (combined("btcusdt@depth@100ms", {**DEPTH, "b": "0.35"}), ["binance", "depthUpdate", "not a list"]),
        (combined("btcusdt@depth@100ms", {**DEPTH, "a": [["0.35", True]]}),
         ["binance", "depthUpdate", "a book level is not [price, size]"]),
        (combined("btcusdt@markPrice", {**MARK, "r": "high"}),
         ["binance", "markPriceUpdate", "field 'r' is not a number", "'high'"]),
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
    assert rec.reason.startswith("binance ")
    assert rows(nb) == nb.n_control == nb.n_ignored == 0 and nb.gaps == ()


def test_a_bad_message_does_not_spoil_its_neighbours():
    messages = [
        combined("nknusdt@bookTicker", BOOK),
        "not json",
        combined("nknusdt@aggTrade", {**AGG, "q": "x"}),
        combined("nknusdt@aggTrade", AGG),
        '{"result":null,"id":1}',
        combined("nknusdt@depth@100ms", DEPTH),
        combined("nknusdt@depth@100ms", {**DEPTH, "U": 3, "u": 4, "a": [["0.36", "1"], ["bad"]]}),
        combined("nknusdt@kline_1m", {"e": "kline"}),
    ]
    nb = run(*messages)
    assert (len(nb.quotes), len(nb.trades), len(nb.book_updates)) == (1, 1, 1)
    assert (len(nb.quarantine), nb.n_control, nb.n_ignored, nb.data_messages) == (3, 1, 1, 3)
    assert [r.raw for r in nb.quarantine] == [messages[1], messages[2], messages[6]]
    # the rows' columns stay aligned: the trade row is the good aggTrade, the book row the good depth
    assert nb.trades.size_coin.tolist() == [58.0]
    assert nb.trades.receive_ts.tolist() == [1633998513.0 + 3 * 0.01]
    assert nb.trades.msg_index.tolist() == [3]
    assert nb.book_updates.msg_index.tolist() == [5] and nb.book_updates.price.tolist() == [0.3513]
    assert nb.quotes.msg_index.tolist() == [0]


def test_empty_batch():
    nb = BinanceAdapter().normalize(RawBatch("binance", np.array([]), []))
    assert nb.n_messages == 0 and rows(nb) == 0 and nb.quarantine == () and nb.gaps == ()


def test_unknown_exchange_is_quarantined_naming_the_exchange():
    raw = make_raw("acme", [(1.0, combined("nknusdt@bookTicker", BOOK)), (2.0, "[]"), (3.0, "junk")])
    nb = normalize(raw)
    assert nb.exchange == "acme"
    assert nb.n_messages == 3
    assert len(nb.quarantine) == 3
    assert rows(nb) == nb.n_control == nb.n_ignored == 0
    for rec, (ts, text) in zip(nb.quarantine, [(1.0, raw.messages[0]), (2.0, "[]"), (3.0, "junk")]):
        assert rec.reason.startswith("acme no adapter for this exchange (known: ")
        assert "binance" in rec.reason
        assert (rec.exchange, rec.receive_ts, rec.raw) == ("acme", ts, text)


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
    depth(3, 4),
    depth(9, 12, asks=[("0.36", "0")]),
    json.dumps(MARK),
    combined("btcusdt@markPrice@1s", MARK),
    combined("nknusdt@kline_1m", {"e": "kline"}),
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
    depth(1, 2, bids=[("1", "2", "3"), ("x", "1")]),
    combined("btcusdt@markPrice", {**MARK, "p": None}),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)
# payloads with Binance's keys but arbitrary values
fuzzed_payload = st.fixed_dictionaries(
    {}, optional={k: json_values | st.text(max_size=6)
                  for k in ("e", "s", "u", "U", "b", "B", "a", "A", "p", "q", "T", "t", "m", "E", "i", "r")}
)
# depth updates with plausible ids in a random order: repeats, skips and stale ones
depth_updates = st.builds(
    lambda first, n, side: depth(first, first + n, bids=[side] if side else ()),
    st.integers(1, 30), st.integers(0, 3),
    st.none() | st.tuples(st.sampled_from(["0.35", "1", "0", "-1", "nan"]), st.sampled_from(["1", "0", "2.5"])),
)
fuzzed = st.one_of(
    st.sampled_from(_GOOD),
    st.sampled_from(_BAD),
    st.text(max_size=30),
    json_values.map(json.dumps),
    fuzzed_payload.map(json.dumps),
    st.tuples(st.sampled_from(["x@bookTicker", "x@aggTrade", "x@trade", "x@depth", "x@depth@100ms",
                               "x@markPrice", "x@kline_1m", "x@zzz"]), fuzzed_payload)
    .map(lambda sp: combined(*sp)),
    depth_updates,
)


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(fuzzed, max_size=25))
def test_property_every_message_is_accounted_for_and_nothing_raises(messages):
    t0 = 1633998513.0
    raw = make_raw("binance", [(t0 + i * 0.01, m) for i, m in enumerate(messages)])
    nb = BinanceAdapter().normalize(raw)
    check_accounting(nb, raw)
    for r in nb.quarantine:
        assert r.reason.startswith("binance "), r.reason
        assert r.exchange == "binance"
    for g in nb.gaps:
        assert (g.exchange, g.kind) == ("binance", "sequence") and g.missing > 0


@settings(max_examples=200, deadline=None)
@given(order=st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_property_depth_ids_in_any_order_gaps_and_stale_match_the_sequence(order):
    """Single-id depth updates in a random order: each is data, a gap or stale, as the ids say."""
    nb = run(*(depth(i, i) for i in order))
    expected_stale, expected_gaps, last = [], [], None
    for i in order:
        if last is not None and i <= last:
            expected_stale.append(depth(i, i))
            continue
        if last is not None and i > last + 1:
            expected_gaps.append((i - last - 1, f"depth update ids {last + 1}..{i - 1} missing"))
        last = i
    assert [r.raw for r in nb.quarantine] == expected_stale
    assert [(g.missing, g.detail) for g in nb.gaps] == expected_gaps
    assert nb.data_messages == len(order) - len(expected_stale)
