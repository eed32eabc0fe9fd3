"""Tests of dataflows.adapters.base: the batch builder's accounting, the strict field readers, the
feed protocol's defaults, and the adapter set's dispatch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dataflows.adapters import ADAPTER_FACTORIES, AdapterSet, normalize
from dataflows.adapters.base import (
    BatchBuilder,
    FeedProtocol,
    Malformed,
    field,
    integer,
    iso_to_epoch,
    level,
    levels,
    num,
    opt_num,
    parse_levels,
    text,
)
from dataflows.adapters.binance import BinanceAdapter
from models.records import DATA_BATCHES, Gap, NormalizedBatch, QuarantineRecord
from tests.conftest import make_raw

T0 = 1_700_000_000.0


def quote_row(**kw) -> dict:
    row = dict(instrument="BTCUSDT", asset="BTC", quote_ccy="USDT", event_ts=T0,
               bid=100.0, bid_size_coin=1.0, ask=101.0, ask_size_coin=2.0)
    row.update(kw)
    return row


def trade_row(**kw) -> dict:
    row = dict(instrument="BTCUSDT", asset="BTC", quote_ccy="USDT", event_ts=T0, trade_id="1",
               price=100.0, size_coin=0.5, side="buy")
    row.update(kw)
    return row


def book_row(**kw) -> dict:
    row = dict(instrument="BTCUSDT", asset="BTC", event_ts=T0, side="bid", price=100.0,
               size_coin=1.0, is_snapshot=False, sequence=7)
    row.update(kw)
    return row


def accounted(nb: NormalizedBatch) -> int:
    return nb.data_messages + nb.n_control + nb.n_ignored + len(nb.quarantine)


# ----------------------------------------------------------------------------- BatchBuilder


def test_an_empty_builder_builds_an_empty_batch():
    nb = BatchBuilder("acme").build()
    assert (nb.exchange, nb.n_messages, nb.n_control, nb.n_ignored) == ("acme", 0, 0, 0)
    assert nb.quarantine == () and nb.gaps == () and nb.data() == {}
    for name, cls in DATA_BATCHES.items():
        assert isinstance(getattr(nb, name), cls) and len(getattr(nb, name)) == 0


def test_verdicts_are_counted_once_per_message():
    b = BatchBuilder("acme")
    with b.message(T0, "quote"):
        b.add("quotes", **quote_row())
    with b.message(T0 + 1, "ack"):
        b.control()
    with b.message(T0 + 2, "candle"):
        b.ignored()
    with b.message(T0 + 3, "junk"):
        raise Malformed("invalid JSON: junk")
    with b.message(T0 + 4, "two trades"):
        b.add("trades", **trade_row(trade_id="1"))
        b.add("trades", **trade_row(trade_id="2"))
    with b.message(T0 + 5, "heartbeat"):
        b.control()
    nb = b.build()
    assert (nb.n_messages, nb.n_control, nb.n_ignored, len(nb.quarantine)) == (6, 2, 1, 1)
    assert nb.data_messages == 2  # rows are counted per table, messages per verdict
    assert (len(nb.quotes), len(nb.trades)) == (1, 2)
    assert accounted(nb) == nb.n_messages
    assert nb.quarantine == (QuarantineRecord("acme", T0 + 3, "acme invalid JSON: junk", "junk"),)


def test_add_fills_exchange_receive_time_raw_and_message_index():
    b = BatchBuilder("acme")
    with b.message(T0, "first"):
        b.control()
    with b.message(T0 + 0.5, "second"):
        b.add("quotes", **quote_row())
        b.add("book_updates", **book_row())
        b.add("book_updates", **book_row(side="ask", price=101.0))
    with b.message(T0 + 0.75, "third"):
        b.add("quotes", **quote_row(bid=99.0), receive_ts=T0 + 0.7)  # an adapter may say otherwise
    nb = b.build()
    q, bu = nb.quotes, nb.book_updates
    assert q.exchange.tolist() == ["acme", "acme"]
    assert q.raw.tolist() == ["second", "third"]
    assert q.receive_ts.tolist() == [T0 + 0.5, T0 + 0.7]
    # msg_index numbers the message within the batch, counting every message
    assert q.msg_index.tolist() == [1, 2]
    assert bu.msg_index.tolist() == [1, 1]
    assert bu.raw.tolist() == ["second", "second"]
    assert bu.side.tolist() == ["bid", "ask"]
    assert bu.sequence.dtype == np.int64 and bu.is_snapshot.dtype == bool


def test_a_message_that_raises_is_rolled_back_in_every_table():
    b = BatchBuilder("acme")
    with b.message(T0, "good before"):
        b.add("quotes", **quote_row(bid=1.0, ask=2.0))
        b.gap("BTCUSDT", "sequence", T0, T0, 3, "kept")
    with b.message(T0 + 1, "half built"):
        b.add("quotes", **quote_row(bid=3.0, ask=4.0))
        b.add("trades", **trade_row(trade_id="lost"))
        b.add("book_updates", **book_row())
        b.gap("BTCUSDT", "sequence", T0 + 1, T0 + 1, 5, "rolled back")
        raise Malformed("depthUpdate: a book level is not [price, size]: 'x'")
    with b.message(T0 + 2, "good after"):
        b.add("quotes", **quote_row(bid=5.0, ask=6.0))
    nb = b.build()
    assert nb.quotes.bid.tolist() == [1.0, 5.0]
    assert nb.quotes.raw.tolist() == ["good before", "good after"]
    assert nb.quotes.msg_index.tolist() == [0, 2]
    assert len(nb.trades) == 0 and len(nb.book_updates) == 0
    assert [g.detail for g in nb.gaps] == ["kept"]
    assert nb.quarantine == (QuarantineRecord(
        "acme", T0 + 1, "acme depthUpdate: a book level is not [price, size]: 'x'", "half built"),)
    assert (nb.n_messages, nb.data_messages) == (3, 2)
    # every column of every table is still aligned
    for batch in nb.data().values():
        assert len({len(getattr(batch, c)) for c in type(batch).COLUMNS}) == 1


def test_a_verdict_given_before_the_error_is_rolled_back_too():
    b = BatchBuilder("acme")
    with b.message(T0, "ack then error"):
        b.control()
        raise Malformed("control: bad")
    with b.message(T0, "ignored then error"):
        b.ignored()
        raise ValueError("boom")
    nb = b.build()
    assert (nb.n_messages, nb.n_control, nb.n_ignored, len(nb.quarantine)) == (2, 0, 0, 2)
    assert accounted(nb) == 2


def test_an_error_that_is_not_malformed_is_an_adapter_error_and_nothing_escapes():
    b = BatchBuilder("acme")
    with b.message(T0, "a"):
        b.add("trades", **trade_row())
        raise KeyError("px")
    with b.message(T0 + 1, "b"):
        _ = 1 / 0
    nb = b.build()
    assert [r.reason for r in nb.quarantine] == [
        "acme adapter error: KeyError('px')",
        "acme adapter error: ZeroDivisionError('division by zero')",
    ]
    assert [r.raw for r in nb.quarantine] == ["a", "b"]
    assert len(nb.trades) == 0


def test_interrupts_and_cancellation_are_not_swallowed():
    import asyncio

    b = BatchBuilder("acme")
    for exc in (KeyboardInterrupt, asyncio.CancelledError, SystemExit):
        with pytest.raises(exc):
            with b.message(T0, "m"):
                raise exc()
    assert b.build().quarantine == ()


def test_add_refuses_missing_and_unknown_columns_naming_them():
    b = BatchBuilder("acme")
    row = quote_row()
    del row["ask"]
    with pytest.raises(TypeError, match=r"quotes row: missing \['ask'\], unknown \[\]"):
        b.add("quotes", **row)
    with pytest.raises(TypeError, match=r"unknown \['colour'\]"):
        b.add("quotes", **quote_row(), colour="red")
    with pytest.raises(KeyError):
        b.add("no_such_table", **quote_row())
    # inside a message the TypeError quarantines it, like any other adapter error
    with b.message(T0, "missing a column"):
        b.add("funding", instrument="BTCUSDT", asset="BTC", event_ts=T0, mark_usd=1.0)
    nb = b.build()
    assert len(nb.quarantine) == 1
    assert nb.quarantine[0].reason.startswith("acme adapter error: TypeError(")
    assert "funding row: missing ['funding_rate', 'index_usd', 'next_funding_ts']" in nb.quarantine[0].reason
    assert len(nb.funding) == 0 and len(nb.quotes) == 0


def test_a_misnamed_column_inside_a_message_leaves_no_partial_row():
    # one column missing and one unknown: the counts match, the names do not
    b = BatchBuilder("acme")
    row = quote_row()
    row["bidd"] = row.pop("bid")
    with b.message(T0, "typo"):
        b.add("quotes", **row)
    with b.message(T0 + 1, "fine"):
        b.add("quotes", **quote_row())
    nb = b.build()
    assert len(nb.quarantine) == 1 and nb.quarantine[0].raw == "typo"
    assert nb.quarantine[0].reason.startswith("acme adapter error: TypeError(")
    assert "quotes row: missing ['bid'], unknown ['bidd']" in nb.quarantine[0].reason
    assert nb.quotes.raw.tolist() == ["fine"] and nb.quotes.bid.tolist() == [100.0]


def test_add_many_shares_scalars_and_checks_lengths():
    b = BatchBuilder("acme")
    with b.message(T0, "book"):
        b.add_many("book_updates", 3, instrument="BTCUSDT", asset="BTC", event_ts=T0,
                   side=["bid", "bid", "ask"], price=[99.0, 98.0, 101.0], size_coin=[1.0, 0.0, 2.0],
                   is_snapshot=True, sequence=42)
    with b.message(T0 + 1, "wrong length"):
        b.add_many("book_updates", 2, instrument="BTCUSDT", asset="BTC", event_ts=T0,
                   side=["bid"], price=[1.0, 2.0], size_coin=[1.0, 1.0], is_snapshot=False, sequence=1)
    with b.message(T0 + 2, "no levels"):
        b.add_many("book_updates", 0)
    nb = b.build()
    bu = nb.book_updates
    assert bu.price.tolist() == [99.0, 98.0, 101.0]
    assert bu.side.tolist() == ["bid", "bid", "ask"]
    assert bu.sequence.tolist() == [42, 42, 42] and bu.is_snapshot.tolist() == [True] * 3
    assert bu.msg_index.tolist() == [0, 0, 0] and bu.raw.tolist() == ["book"] * 3
    assert bu.exchange.tolist() == ["acme"] * 3 and bu.receive_ts.tolist() == [T0] * 3
    assert [r.raw for r in nb.quarantine] == ["wrong length"]
    assert "column side has 1 values, not 2" in nb.quarantine[0].reason
    assert nb.data_messages == 2  # a message with no rows is still data


def test_gaps_carry_the_exchange():
    b = BatchBuilder("acme")
    with b.message(T0, "m"):
        b.gap("BTCUSDT", "sequence", T0 - 1, T0, 4, "ids 10..13 missing")
    assert b.build().gaps == (Gap("acme", "BTCUSDT", "sequence", T0 - 1, T0, 4, "ids 10..13 missing"),)


# --------------------------------------------------------------------------- field readers


def test_field_and_text():
    assert field({"a": 0}, "a", "k") == 0
    with pytest.raises(Malformed, match="k: missing field 'b'"):
        field({"a": 0}, "b", "k")
    with pytest.raises(Malformed, match="missing field 'a'"):
        field([1, 2], "a", "k")  # not an object
    assert text({"s": "BTCUSDT"}, "s", "k") == "BTCUSDT"
    for bad in ("", 5, None, ["x"]):
        with pytest.raises(Malformed, match="field 's' is not a non-empty string"):
            text({"s": bad}, "s", "k")


@pytest.mark.parametrize("value, expected", [
    ("0.35210000", 0.3521), (5, 5.0), (2.5, 2.5), ("-1", -1.0), ("1e3", 1000.0),
])
def test_num_accepts_numbers_and_decimal_strings(value, expected):
    assert num({"p": value}, "p", "k") == expected


def test_num_keeps_nan_and_infinity_for_validation_to_judge():
    assert math.isnan(num({"p": "nan"}, "p", "k"))
    assert num({"p": "inf"}, "p", "k") == math.inf


@pytest.mark.parametrize("value", [True, False, None, "abc", "", [1], {"x": 1}])
def test_num_refuses_what_is_not_a_number(value):
    with pytest.raises(Malformed, match="k: field 'p' is not a number"):
        num({"p": value}, "p", "k")


def test_num_of_an_integer_too_large_for_a_float_is_malformed():
    with pytest.raises(Malformed, match="not a number"):
        num({"p": 10**400}, "p", "k")


def test_opt_num():
    assert math.isnan(opt_num({}, "p", "k"))
    assert math.isnan(opt_num({"p": None}, "p", "k"))
    assert math.isnan(opt_num({"p": ""}, "p", "k"))
    assert math.isnan(opt_num(None, "p", "k"))
    assert opt_num({"p": "1.5"}, "p", "k") == 1.5
    with pytest.raises(Malformed, match="not a number"):
        opt_num({"p": "x"}, "p", "k")


def test_integer():
    assert integer({"u": 499869752}, "u", "k") == 499869752
    assert integer({"u": "42"}, "u", "k") == 42
    assert integer({"u": -(2**63)}, "u", "k") == -(2**63)
    assert integer({"u": str(2**63 - 1)}, "u", "k") == 2**63 - 1
    for bad in (True, 1.5, "1.5", "x", None, [1]):
        with pytest.raises(Malformed, match="field 'u' is not an integer"):
            integer({"u": bad}, "u", "k")


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, str(2**63), 10**30])
def test_integer_outside_int64_is_malformed(value):
    # ids are stored as BIGINT: a larger one must be refused here, not overflow the batch later
    with pytest.raises(Malformed, match="k: field 'u' is out of the 64-bit integer range"):
        integer({"u": value}, "u", "k")


def test_levels_and_level():
    assert levels({"b": [["1", "2"]]}, "b", "k") == [["1", "2"]]
    with pytest.raises(Malformed, match="field 'b' is not a list of levels"):
        levels({"b": "x"}, "b", "k")
    assert level(["0.35130000", "6195.00000000"], "k") == (0.3513, 6195.0)
    assert level([1, 2, "extra"], "k") == (1.0, 2.0)  # [price, size, ...]
    for bad in (["1"], "12", None, [True, 1], ["a", "1"], [[1], 2], {"p": 1}):
        with pytest.raises(Malformed, match="a book level is not"):
            level(bad, "k")


def test_parse_levels():
    assert parse_levels([], "k") == ([], [])
    assert parse_levels([["0.3513", "6195"], [1, 0], ["2", "3", "x"]], "k") == (
        [0.3513, 1.0, 2.0], [6195.0, 0.0, 3.0])
    for bad in ("x", None, {"a": 1}):
        with pytest.raises(Malformed, match="book levels are not a list"):
            parse_levels(bad, "k")
    for bad in ([["1"]], [[True, "1"]], [["1", False]], [["a", "1"]], [None], [["1", "2"], [[1], 2]]):
        with pytest.raises(Malformed, match="a book level is not"):
            parse_levels(bad, "k")


def test_parse_levels_refuses_a_level_given_as_a_string():
    with pytest.raises(Malformed):
        parse_levels(["12"], "k")


def test_iso_to_epoch():
    assert iso_to_epoch("2021-04-17T02:30:10Z", "k") == 1618626610.0
    assert iso_to_epoch("2021-04-17T02:30:10.123456Z", "k") == pytest.approx(1618626610.123456, abs=1e-6)
    assert iso_to_epoch("2021-04-17T02:30:10.123456789Z", "k") == pytest.approx(1618626610.123457, abs=1e-6)
    for bad in (None, 1618626610, "2021-04-17", "2021-04-17T02:30:10.12a456Z", "not a time at all, no"):
        with pytest.raises(Malformed, match="time is not an ISO-8601 string"):
            iso_to_epoch(bad, "k")


# --------------------------------------------------------------------------- FeedProtocol


def test_feed_protocol_defaults_send_nothing():
    p = FeedProtocol("ws://127.0.0.1:1/stream")
    assert p.url() == "ws://127.0.0.1:1/stream"
    assert p.on_open() == [] and p.on_message('{"x": 1}') == [] and p.outgoing() == []
    assert p.ping_interval_s is None
    with pytest.raises(NotImplementedError, match="FeedProtocol"):
        p.ping_message()


def test_feed_protocol_queue_is_sent_once_in_order():
    p = FeedProtocol("ws://x")
    p.queue("a")
    p.queue("b")
    assert p.outgoing() == ["a", "b"]
    assert p.outgoing() == []


# --------------------------------------------------------------------------- AdapterSet


def test_adapter_set_makes_its_own_stateful_adapters():
    a, b = AdapterSet(), AdapterSet()
    assert isinstance(a["binance"], BinanceAdapter)
    assert a["binance"] is not b["binance"]
    assert "binance" in ADAPTER_FACTORIES
    with pytest.raises(KeyError):
        a["acme"]


def test_unknown_exchange_has_every_message_quarantined_naming_the_known_ones():
    raw = make_raw("acme", [(1.0, '{"x": 1}'), (2.0, "junk"), (3.0, "")])
    nb = AdapterSet().normalize(raw)
    known = ", ".join(sorted(ADAPTER_FACTORIES))
    assert (nb.exchange, nb.n_messages, nb.n_control, nb.n_ignored) == ("acme", 3, 0, 0)
    assert nb.data() == {} and nb.gaps == ()
    assert nb.quarantine == tuple(
        QuarantineRecord("acme", ts, f"acme no adapter for this exchange (known: {known})", text)
        for ts, text in [(1.0, '{"x": 1}'), (2.0, "junk"), (3.0, "")]
    )
    # the module-level normalize uses a fresh set, with the same verdicts
    fresh = normalize(raw)
    assert (fresh.n_messages, fresh.quarantine) == (3, nb.quarantine)
