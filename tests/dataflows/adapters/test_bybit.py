"""Tests of the Bybit v5 adapter and protocol with wire messages from Bybit's documentation.

There is no recorded Bybit traffic in ../shared/data/recorded, so every message here is either
copied from Bybit's v5 documentation (marked "docs", pages cited in dataflows/adapters/bybit.py)
or written by hand in the documented shape (deltas: the docs give none, only the rule "if a
response param is not found in the message, then its value has not changed").
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.adapters import ADAPTER_FACTORIES, normalize
from dataflows.adapters.base import FeedProtocol
from dataflows.adapters.bybit import (
    LINEAR_URL,
    SPOT_URL,
    TICKER_FIELDS,
    BybitAdapter,
    BybitProtocol,
    subscribe_message,
)
from models.records import NormalizedBatch, RawBatch
from tests.conftest import make_raw

# --------------------------------------------------------------- messages from Bybit's docs

# docs/v5/websocket/public/ticker, "Linear" response example
LINEAR_SNAPSHOT = {
    "topic": "tickers.BTCUSDT",
    "type": "snapshot",
    "data": {
        "symbol": "BTCUSDT",
        "tickDirection": "PlusTick",
        "price24hPcnt": "0.017103",
        "lastPrice": "17216.00",
        "prevPrice24h": "16926.50",
        "highPrice24h": "17281.50",
        "lowPrice24h": "16915.00",
        "prevPrice1h": "17238.00",
        "markPrice": "17217.33",
        "indexPrice": "17227.36",
        "openInterest": "68744.761",
        "openInterestValue": "1183601235.91",
        "turnover24h": "1570383121.943499",
        "volume24h": "91705.276",
        "nextFundingTime": "1673280000000",
        "fundingRate": "-0.000212",
        "bid1Price": "17215.50",
        "bid1Size": "84.489",
        "ask1Price": "17216.00",
        "ask1Size": "83.020",
    },
    "cs": 24987956059,
    "ts": 1673272861686,
}
# docs/v5/websocket/public/ticker, "Spot" response example (snapshot only, no bid/ask)
SPOT_TICKER = {
    "topic": "tickers.BTCUSDT",
    "ts": 1673853746003,
    "type": "snapshot",
    "cs": 2588407389,
    "data": {
        "symbol": "BTCUSDT",
        "lastPrice": "21109.77",
        "highPrice24h": "21426.99",
        "lowPrice24h": "20575",
        "prevPrice24h": "20704.93",
        "volume24h": "6780.866843",
        "turnover24h": "141946527.22907118",
        "price24hPcnt": "0.0196",
        "usdIndexPrice": "21120.2400136",
    },
}
# docs/v5/websocket/public/trade, response example
TRADE = {
    "topic": "publicTrade.BTCUSDT",
    "type": "snapshot",
    "ts": 1672304486868,
    "data": [
        {
            "T": 1672304486865,
            "s": "BTCUSDT",
            "S": "Buy",
            "v": "0.001",
            "p": "16578.50",
            "L": "PlusTick",
            "i": "20f43950-d8dd-5b31-9112-a178eb6023af",
            "BT": False,
        }
    ],
}
# docs/v5/websocket/public/orderbook, response example (the levels the page shows; it elides more)
BOOK_SNAPSHOT = {
    "topic": "orderbook.50.BTCUSDT",
    "type": "snapshot",
    "ts": 1672304484978,
    "data": {
        "s": "BTCUSDT",
        "b": [["16493.50", "0.006"], ["16493.00", "0.100"]],
        "a": [["16611.00", "0.029"], ["16612.00", "0.213"]],
        "u": 18521288,
        "seq": 7961638724,
    },
}
# docs/v5/websocket/public/kline and all-liquidation response examples
KLINE = {
    "topic": "kline.5.BTCUSDT",
    "data": [{"start": 1672324800000, "end": 1672325099999, "interval": "5", "open": "16649.5",
              "close": "16677", "high": "16677", "low": "16608", "volume": "2.081",
              "turnover": "34666.4005", "confirm": False, "timestamp": 1672324988882}],
    "ts": 1672324988882,
    "type": "snapshot",
}
LIQUIDATION = {
    "topic": "allLiquidation.ROSEUSDT", "type": "snapshot", "ts": 1739502303204,
    "data": [{"T": 1739502302929, "s": "ROSEUSDT", "S": "Sell", "v": "20000", "p": "0.04499"}],
}
# docs/v5/ws/connect: subscription answer, public pong, private-channel pong
SUBSCRIBED = {"success": True, "ret_msg": "", "op": "subscribe", "conn_id": "cejreassvfrsfvb9v1a0-2m"}
PONG = {"success": True, "ret_msg": "pong", "conn_id": "0970e817-426e-429a-a679-ff7f55e0b16a", "op": "ping"}
PONG_OP = {"req_id": "test", "op": "pong", "args": ["1675418560633"], "conn_id": "cfcb4ocsvfriu23r3er0-1b"}
# hand-written in the documented shape
SUBSCRIBE_REFUSED = {"success": False, "ret_msg": "error:handler not found,topic:tickers.NOPEUSDT",
                     "conn_id": "cejreassvfrsfvb9v1a0-2m", "req_id": "sub-1", "op": "subscribe"}
UNSUBSCRIBED = {"success": True, "ret_msg": "", "op": "unsubscribe", "conn_id": "x", "req_id": "u1"}

T0 = 1673272861.9


def j(obj) -> str:
    return json.dumps(obj)


def delta(ts_ms: int, **fields) -> str:
    """A linear tickers delta for BTCUSDT carrying only ``fields`` (the documented delta rule)."""
    return j({"topic": "tickers.BTCUSDT", "type": "delta",
              "data": {"symbol": "BTCUSDT", **fields}, "cs": 24987956100, "ts": ts_ms})


def book(kind: str, u: int, bids=(), asks=(), depth: int = 50, symbol: str = "BTCUSDT",
         ts_ms: int = 1672304485000) -> str:
    return j({"topic": f"orderbook.{depth}.{symbol}", "type": kind, "ts": ts_ms,
              "data": {"s": symbol, "b": [list(x) for x in bids], "a": [list(x) for x in asks],
                       "u": u, "seq": 7961638800}})


def run(adapter: BybitAdapter, *messages: str, t0: float = T0) -> NormalizedBatch:
    return adapter.normalize(make_raw("bybit", [(t0 + i * 0.01, m) for i, m in enumerate(messages)]))


def verdicts(nb: NormalizedBatch) -> tuple[int, int, int, int]:
    return nb.data_messages, nb.n_control, nb.n_ignored, len(nb.quarantine)


def total_rows(nb: NormalizedBatch) -> int:
    return sum(len(batch) for batch in nb.data().values())


# ------------------------------------------------------------------------------ tickers


def test_linear_snapshot_from_docs_gives_a_quote_and_a_funding_row():
    nb = run(BybitAdapter(), j(LINEAR_SNAPSHOT))
    assert verdicts(nb) == (1, 0, 0, 0)
    q, f = nb.quotes, nb.funding
    assert len(q) == 1 and len(f) == 1 and len(nb.trades) == 0
    assert (q.exchange[0], q.instrument[0], q.asset[0], q.quote_ccy[0]) == ("bybit", "BTCUSDT", "BTC", "USDT")
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0], q.ask_size_coin[0]) == (17215.5, 84.489, 17216.0, 83.02)
    assert q.event_ts[0] == pytest.approx(1673272861.686, abs=1e-6)
    assert q.receive_ts[0] == T0
    assert (f.instrument[0], f.asset[0]) == ("BTCUSDT", "BTC")
    assert (f.mark_usd[0], f.index_usd[0]) == (17217.33, 17227.36)
    assert f.event_ts[0] == pytest.approx(1673272861.686, abs=1e-6)
    assert q.raw[0] == f.raw[0] == j(LINEAR_SNAPSHOT)


def test_funding_units_rate_is_a_fraction_per_interval_and_next_funding_is_epoch_seconds():
    f = run(BybitAdapter(), j(LINEAR_SNAPSHOT)).funding
    assert f.funding_rate[0] == -0.000212  # -2.12 bp per 8 h interval, as sent: not annualized, not %
    assert f.next_funding_ts[0] == 1673280000.0  # "1673280000000" ms → 2023-01-09 16:00:00 UTC
    assert f.next_funding_ts[0] - f.event_ts[0] == pytest.approx(7138.314, abs=1e-3)  # < 8 h ahead


def test_a_delta_overwrites_only_the_fields_it_carries():
    a = BybitAdapter()
    run(a, j(LINEAR_SNAPSHOT))
    # one side only, like a real delta: {"bid1Price":"79114.50","bid1Size":"1.496"}
    nb = run(a, delta(1673272861786, bid1Price="17215.00", bid1Size="1.496"))
    assert verdicts(nb) == (1, 0, 0, 0)
    q = nb.quotes
    assert len(q) == 1 and len(nb.funding) == 0  # the delta did not touch funding fields
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0], q.ask_size_coin[0]) == (17215.0, 1.496, 17216.0, 83.02)
    assert q.event_ts[0] == pytest.approx(1673272861.786, abs=1e-6)

    nb = run(a, delta(1673272861886, markPrice="17218.01"))
    f = nb.funding
    assert len(nb.quotes) == 0 and len(f) == 1
    assert (f.mark_usd[0], f.index_usd[0], f.funding_rate[0], f.next_funding_ts[0]) == (
        17218.01, 17227.36, -0.000212, 1673280000.0)

    nb = run(a, delta(1673272861986, ask1Size="80.5", fundingRate="-0.0002", nextFundingTime="1673308800000"))
    assert (nb.quotes.bid[0], nb.quotes.ask_size_coin[0]) == (17215.0, 80.5)
    assert (nb.funding.mark_usd[0], nb.funding.funding_rate[0], nb.funding.next_funding_ts[0]) == (
        17218.01, -0.0002, 1673308800.0)


def test_state_carries_over_across_batches_and_symbols_are_separate():
    a = BybitAdapter()
    eth = {**LINEAR_SNAPSHOT, "topic": "tickers.ETHUSDT",
           "data": {**LINEAR_SNAPSHOT["data"], "symbol": "ETHUSDT", "bid1Price": "1250.10", "ask1Price": "1250.20"}}
    run(a, j(LINEAR_SNAPSHOT), j(eth))
    nb = run(a, delta(1673272862000, ask1Price="17216.50"), t0=T0 + 5)
    nb2 = run(a, j({"topic": "tickers.ETHUSDT", "type": "delta", "ts": 1673272862100,
                    "data": {"symbol": "ETHUSDT", "bid1Size": "7"}}), t0=T0 + 6)
    assert (nb.quotes.instrument[0], nb.quotes.bid[0], nb.quotes.ask[0]) == ("BTCUSDT", 17215.5, 17216.5)
    assert (nb2.quotes.instrument[0], nb2.quotes.asset[0]) == ("ETHUSDT", "ETH")
    assert (nb2.quotes.bid[0], nb2.quotes.bid_size_coin[0], nb2.quotes.ask[0]) == (1250.1, 7.0, 1250.2)


def test_a_delta_of_fields_hedgeflow_does_not_store_is_ignored():
    a = BybitAdapter()
    run(a, j(LINEAR_SNAPSHOT))
    nb = run(a, delta(1673272861786, lastPrice="17217.00", volume24h="91706.1", openInterest="68745"))
    assert verdicts(nb) == (0, 0, 1, 0)
    assert total_rows(nb) == 0
    assert a.tickers["BTCUSDT"]["bid1Price"] == 17215.5


def test_a_snapshot_replaces_the_state_rather_than_merging():
    a = BybitAdapter()
    run(a, j(LINEAR_SNAPSHOT))
    resent = {**LINEAR_SNAPSHOT, "ts": 1673272900000,
              "data": {k: v for k, v in LINEAR_SNAPSHOT["data"].items() if not k.startswith("ask1")}}
    nb = run(a, j(resent))
    assert len(nb.quotes) == 0  # the ask was not in the new snapshot: unknown, not carried over
    assert len(nb.funding) == 1
    assert math.isnan(a.tickers["BTCUSDT"]["ask1Price"])


def test_a_delta_before_any_snapshot_is_kept_as_partial_state():
    a = BybitAdapter()
    nb = run(a, delta(1673272861786, bid1Price="17215.00", bid1Size="1.496"))
    assert verdicts(nb) == (0, 0, 1, 0)  # merged, but no row can be made yet: ignored
    assert total_rows(nb) == 0 and nb.quarantine == ()
    nb = run(a, delta(1673272861886, ask1Price="17216.00"), delta(1673272861986, markPrice="17218.0"))
    q = nb.quotes
    assert len(q) == 1  # never a value that was not received: ask size is unknown (NaN)
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0]) == (17215.0, 1.496, 17216.0)
    assert math.isnan(q.ask_size_coin[0])
    assert len(nb.funding) == 0  # index and funding rate still unknown
    assert verdicts(nb) == (1, 0, 1, 0)
    nb = run(a, delta(1673272862086, indexPrice="17227.0", fundingRate="0.0001"))
    assert len(nb.funding) == 1 and math.isnan(nb.funding.next_funding_ts[0])


def test_a_quarantined_delta_leaves_the_state_untouched():
    a = BybitAdapter()
    run(a, j(LINEAR_SNAPSHOT))
    nb = run(a, delta(1673272861786, bid1Price="17100.00", ask1Price="abc"),
             delta(1673272861886, ask1Size="1"))
    assert len(nb.quarantine) == 1
    assert "tickers: field 'ask1Price' is not a number" in nb.quarantine[0].reason
    assert (nb.quotes.bid[0], nb.quotes.ask[0], nb.quotes.ask_size_coin[0]) == (17215.5, 17216.0, 1.0)


def test_an_empty_field_makes_it_unknown():
    a = BybitAdapter()
    run(a, j(LINEAR_SNAPSHOT))
    nb = run(a, delta(1673272861786, bid1Price="", bid1Size=""))
    assert verdicts(nb) == (0, 0, 1, 0)
    nb = run(a, delta(1673272861886, bid1Price="17214.00"))
    assert (nb.quotes.bid[0], nb.quotes.ask[0]) == (17214.0, 17216.0)
    assert math.isnan(nb.quotes.bid_size_coin[0])


def test_futures_without_funding_give_quotes_only():
    dated = {**LINEAR_SNAPSHOT, "topic": "tickers.BTC-27DEC24",
             "data": {**LINEAR_SNAPSHOT["data"], "symbol": "BTC-27DEC24", "fundingRate": "",
                      "nextFundingTime": ""}}
    nb = run(BybitAdapter(), j(dated))
    assert len(nb.quotes) == 1 and len(nb.funding) == 0 and nb.quarantine == ()


def test_spot_ticker_from_docs_is_ignored_and_does_not_touch_linear_state():
    a = BybitAdapter()
    run(a, j(LINEAR_SNAPSHOT))
    nb = run(a, j(SPOT_TICKER))
    assert verdicts(nb) == (0, 0, 1, 0) and total_rows(nb) == 0
    nb = run(a, delta(1673272861786, bid1Size="2"))
    assert (nb.quotes.bid[0], nb.quotes.ask[0]) == (17215.5, 17216.0)


# ------------------------------------------------------------------------------- trades


def test_public_trade_from_docs():
    nb = run(BybitAdapter(), j(TRADE))
    t = nb.trades
    assert verdicts(nb) == (1, 0, 0, 0) and len(t) == 1
    assert (t.exchange[0], t.instrument[0], t.asset[0], t.quote_ccy[0]) == ("bybit", "BTCUSDT", "BTC", "USDT")
    assert t.side[0] == "buy"
    assert t.trade_id[0] == "20f43950-d8dd-5b31-9112-a178eb6023af"
    assert (t.price[0], t.size_coin[0]) == (16578.5, 0.001)
    assert t.event_ts[0] == pytest.approx(1672304486.865, abs=1e-6)


def test_taker_side_mapping_and_one_row_per_trade():
    trades = [
        {**TRADE["data"][0], "S": "Sell", "i": "a1", "T": 1672304486900},
        {**TRADE["data"][0], "S": "Buy", "i": "a2", "T": 1672304486901, "BT": True},
        # spot trades have numeric-string ids and no "L"
        {"T": 1672304486902, "s": "BTCUSDT", "S": "Sell", "v": "0.5", "p": "16578.00",
         "i": "2290000000007764263", "BT": False},
    ]
    nb = run(BybitAdapter(), j({**TRADE, "data": trades}))
    assert nb.trades.side.tolist() == ["sell", "buy", "sell"]  # "S" is the taker's side
    assert nb.trades.trade_id.tolist() == ["a1", "a2", "2290000000007764263"]
    assert nb.data_messages == 1 and len(nb.trades) == 3


def test_an_empty_trade_list_is_ignored():
    nb = run(BybitAdapter(), j({**TRADE, "data": []}))
    assert verdicts(nb) == (0, 0, 1, 0)


# ---------------------------------------------------------------------------- orderbook


def test_orderbook_snapshot_from_docs():
    nb = run(BybitAdapter(), j(BOOK_SNAPSHOT))
    u = nb.book_updates
    assert verdicts(nb) == (1, 0, 0, 0) and nb.gaps == ()
    assert u.side.tolist() == ["bid", "bid", "ask", "ask"]
    assert u.price.tolist() == [16493.5, 16493.0, 16611.0, 16612.0]
    assert u.size_coin.tolist() == [0.006, 0.1, 0.029, 0.213]
    assert u.is_snapshot.all() and (u.sequence == 18521288).all()
    assert (u.instrument[0], u.asset[0]) == ("BTCUSDT", "BTC")
    assert u.event_ts[0] == pytest.approx(1672304484.978, abs=1e-6)


def test_orderbook_deltas_gaps_stale_and_restart():
    a = BybitAdapter()
    run(a, j(BOOK_SNAPSHOT))
    nb = run(a, book("delta", 18521289, bids=[("16493.50", "0")], asks=[("16611.50", "1.2")]))
    u = nb.book_updates
    assert (not u.is_snapshot.any()) and u.sequence.tolist() == [18521289, 18521289]
    assert u.size_coin.tolist() == [0.0, 1.2] and nb.gaps == ()

    nb = run(a, book("delta", 18521292, asks=[("16612.00", "0.3")]))  # 18521290..91 missing
    assert len(nb.book_updates) == 1 and len(nb.gaps) == 1
    g = nb.gaps[0]
    assert (g.exchange, g.instrument, g.kind, g.missing) == ("bybit", "BTCUSDT", "sequence", 2)
    assert "18521290..18521291" in g.detail

    nb = run(a, book("delta", 18521290, asks=[("16612.00", "0.4")]))
    assert len(nb.quarantine) == 1 and "stale update id 18521290" in nb.quarantine[0].reason
    assert len(nb.book_updates) == 0

    # the service restarted: u=1 is a snapshot, whatever its type says, and numbering restarts
    nb = run(a, book("delta", 1, bids=[("16500", "1")], asks=[("16501", "1")]),
             book("delta", 2, bids=[("16500", "2")]))
    assert nb.book_updates.is_snapshot.tolist() == [True, True, False]
    assert nb.quarantine == () and nb.gaps == ()


def test_level1_snapshot_resent_with_the_same_update_id_is_not_stale():
    a = BybitAdapter()
    first = book("snapshot", 500, bids=[("16493.5", "1")], asks=[("16494", "2")], depth=1)
    nb = run(a, first, first, book("delta", 501, asks=[("16494", "3")], depth=1))
    assert verdicts(nb) == (3, 0, 0, 0) and nb.gaps == ()


def test_orderbook_delta_before_any_snapshot_is_kept_with_a_book_gap():
    a = BybitAdapter()
    nb = run(a, book("delta", 900, bids=[("16493.50", "0.5")]), book("delta", 901, bids=[("16493.50", "0")]))
    assert verdicts(nb) == (2, 0, 0, 0) and len(nb.book_updates) == 2
    assert [(g.kind, g.missing) for g in nb.gaps] == [("book", -1)]
    assert "before any snapshot" in nb.gaps[0].detail


def test_depths_are_numbered_independently_and_empty_deltas_are_ignored():
    a = BybitAdapter()
    nb = run(a, book("snapshot", 10, bids=[("1", "1")], depth=1), book("snapshot", 700, bids=[("1", "1")]),
             book("delta", 11, depth=1), book("delta", 701, asks=[("2", "1")]))
    assert verdicts(nb) == (3, 0, 1, 0) and nb.gaps == () and nb.quarantine == ()
    nb = run(a, book("delta", 13, bids=[("1", "2")], depth=1))
    assert [g.missing for g in nb.gaps] == [1]  # the empty delta 11 was counted: only 12 is missing


def test_a_book_gap_resubscribes_the_topic_once_through_its_protocol():
    p = BybitProtocol(LINEAR_URL, symbols=("BTCUSDT",), topics=("orderbook.50",))
    a = BybitAdapter(p)
    run(a, j(BOOK_SNAPSHOT))
    assert p.outgoing() == []
    run(a, book("delta", 18521291, asks=[("16612", "1")]), book("delta", 18521295, asks=[("16612", "2")]))
    sent = [json.loads(r) for r in p.outgoing()]
    assert [(r["op"], r["args"]) for r in sent] == [
        ("unsubscribe", ["orderbook.50.BTCUSDT"]), ("subscribe", ["orderbook.50.BTCUSDT"])]
    assert a.resubscribes == 1  # the second gap, before the snapshot came back, asked nothing more
    run(a, book("snapshot", 1000, bids=[("16490", "1")]), book("delta", 1002, bids=[("16490", "2")]))
    assert len(p.outgoing()) == 2 and a.resubscribes == 2
    # a topic no attached protocol owns is only recorded as a gap
    nb = run(a, book("delta", 77, bids=[("1", "1")], depth=200))
    assert [g.kind for g in nb.gaps] == ["book"] and p.outgoing() == [] and a.resubscribes == 2


def test_a_delta_before_any_snapshot_asks_for_one():
    p = BybitProtocol(LINEAR_URL, symbols=("BTCUSDT",), topics=("orderbook.1",))
    a = BybitAdapter()
    a.attach(p)
    run(a, book("delta", 5, bids=[("1", "1")], depth=1))
    assert [json.loads(r)["op"] for r in p.outgoing()] == ["unsubscribe", "subscribe"]


# ------------------------------------------------------------------ control and ignored


def test_control_messages():
    nb = run(BybitAdapter(), j(SUBSCRIBED), j(PONG), j(PONG_OP), j(SUBSCRIBE_REFUSED), j(UNSUBSCRIBED),
             '{"success":true,"ret_msg":"pong","conn_id":"c","req_id":"","op":"ping"}')
    assert verdicts(nb) == (0, 6, 0, 0)


def test_unused_channels_are_ignored():
    nb = run(BybitAdapter(), j(KLINE), j(LIQUIDATION),
             j({**LIQUIDATION, "topic": "liquidation.BTCUSDT"}),
             j({**BOOK_SNAPSHOT, "topic": "orderbook.rpi.BTCUSDT"}))
    assert verdicts(nb) == (0, 0, 4, 0)


# ---------------------------------------------------------------------------- malformed


def _drop(obj: dict, key: str) -> dict:
    return {k: v for k, v in obj.items() if k != key}


_TD = TRADE["data"][0]
_BD = BOOK_SNAPSHOT["data"]


@pytest.mark.parametrize(
    "text, reason_parts",
    [
        ('{"topic": "tickers.BTCUSDT", "type":', ["invalid JSON"]),
        ("", ["invalid JSON"]),
        ("[1, 2]", ["expected a JSON object", "list"]),
        ("{}", ["unrecognized message"]),
        ('{"op": "order.create"}', ["unrecognized message"]),
        ('{"topic": 5, "data": {}}', ["field 'topic' is not a string"]),
        (j({**TRADE, "topic": "fundingRate.BTCUSDT"}), ["unknown topic 'fundingRate.BTCUSDT'"]),
        (j(_drop(LINEAR_SNAPSHOT, "type")), ["tickers: missing field 'type'"]),
        (j({**LINEAR_SNAPSHOT, "type": "update"}), ["tickers: field 'type' is not snapshot or delta"]),
        (j(_drop(LINEAR_SNAPSHOT, "ts")), ["tickers: missing field 'ts'"]),
        (j({**LINEAR_SNAPSHOT, "data": [LINEAR_SNAPSHOT["data"]]}), ["tickers: field 'data' is not an object"]),
        (j({**LINEAR_SNAPSHOT, "topic": "tickers.ETHUSDT"}), ["tickers: topic 'tickers.ETHUSDT' carries symbol 'BTCUSDT'"]),
        (j({**LINEAR_SNAPSHOT, "topic": "tickers"}), ["names no symbol"]),
        (delta(1, bid1Price="abc"), ["tickers: field 'bid1Price' is not a number", "'abc'"]),
        (delta(1, fundingRate=True), ["tickers: field 'fundingRate' is not a number"]),
        (delta(1, markPrice=[1]), ["tickers: field 'markPrice' is not a number"]),
        (j({**TRADE, "data": _TD}), ["publicTrade: field 'data' is not a list"]),
        (j({**TRADE, "data": [_drop(_TD, "p")]}), ["publicTrade: missing field 'p'"]),
        (j({**TRADE, "data": [{**_TD, "S": "buy"}]}), ["publicTrade: field 'S' is not Buy or Sell", "'buy'"]),
        (j({**TRADE, "data": [{**_TD, "i": None}]}), ["publicTrade: field 'i' is not a trade id"]),
        (j({**TRADE, "data": [{**_TD, "s": "ETHUSDT"}]}), ["publicTrade: topic 'publicTrade.BTCUSDT' carries a trade of 'ETHUSDT'"]),
        (j({**TRADE, "data": [_TD, {**_TD, "v": "x"}]}), ["publicTrade: field 'v' is not a number"]),
        (j({**TRADE, "data": [1]}), ["publicTrade: a trade is not an object"]),
        (j({**BOOK_SNAPSHOT, "data": {**_BD, "u": "x"}}), ["orderbook: field 'u' is not an integer"]),
        (j({**BOOK_SNAPSHOT, "data": {**_BD, "u": 2**64 - 1}}), ["orderbook: field 'u' is out of the 64-bit integer range"]),
        (j({**BOOK_SNAPSHOT, "data": {**_BD, "u": -3}}), ["orderbook: field 'u' is not an update id"]),
        (j({**BOOK_SNAPSHOT, "data": {**_BD, "b": {"16493.5": "1"}}}), ["orderbook: field 'b' is not a list of levels"]),
        (j({**BOOK_SNAPSHOT, "data": {**_BD, "a": [["16611.00"]]}}), ["orderbook: a book level is not [price, size]"]),
        (j({**BOOK_SNAPSHOT, "topic": "orderbook.BTCUSDT"}), ["orderbook: topic 'orderbook.BTCUSDT' is not orderbook.<depth>.<symbol>"]),
        (j({**BOOK_SNAPSHOT, "data": _drop(_BD, "s")}), ["orderbook: missing field 's'"]),
    ],
)
def test_malformed_messages_are_quarantined_with_clear_reasons(text, reason_parts):
    nb = run(BybitAdapter(), text, t0=1700000001.5)
    assert nb.n_messages == 1 and len(nb.quarantine) == 1, nb.data()
    rec = nb.quarantine[0]
    assert rec.reason.startswith("bybit "), rec.reason
    for part in reason_parts:
        assert part in rec.reason, rec.reason
    assert (rec.exchange, rec.receive_ts, rec.raw) == ("bybit", 1700000001.5, text)
    assert total_rows(nb) == 0 and nb.n_control == nb.n_ignored == 0 and nb.gaps == ()


def test_a_bad_message_does_not_spoil_its_neighbours():
    a = BybitAdapter()
    nb = run(a, j(LINEAR_SNAPSHOT), "not json", j({**TRADE, "data": [_TD, {**_TD, "v": "x"}]}), j(TRADE),
             j(SUBSCRIBED), j(KLINE))
    assert verdicts(nb) == (2, 1, 1, 2)
    assert (len(nb.quotes), len(nb.funding), len(nb.trades)) == (1, 1, 1)  # no half of the bad trades message
    assert nb.trades.receive_ts.tolist() == [T0 + 3 * 0.01]


def test_empty_batch():
    nb = BybitAdapter().normalize(RawBatch("bybit", np.array([]), []))
    assert nb.n_messages == 0 and total_rows(nb) == 0 and nb.quarantine == ()


@pytest.mark.skipif("bybit" not in ADAPTER_FACTORIES, reason="BybitAdapter not registered in AdapterSet yet")
def test_dispatch_to_bybit():
    nb = normalize(make_raw("bybit", [(1.0, j(TRADE))]))
    assert len(nb.trades) == 1


# ----------------------------------------------------------------------------- protocol


def test_protocol_subscribes_in_requests_of_at_most_ten_args():
    p = BybitProtocol(LINEAR_URL, symbols=("BTCUSDT", "ETHUSDT", "solusdt"),
                      topics=("tickers", "publicTrade", "orderbook.50", "orderbook.1"))
    assert isinstance(p, FeedProtocol) and p.exchange == "bybit" and p.url() == LINEAR_URL
    requests = [json.loads(r) for r in p.on_open()]
    assert [len(r["args"]) for r in requests] == [10, 2]
    assert all(r["op"] == "subscribe" for r in requests)
    assert [r["req_id"] for r in requests] == ["sub-1", "sub-2"]
    args = [a for r in requests for a in r["args"]]
    assert args[:4] == ["tickers.BTCUSDT", "publicTrade.BTCUSDT", "orderbook.50.BTCUSDT", "orderbook.1.BTCUSDT"]
    assert "tickers.SOLUSDT" in args and len(set(args)) == 12
    assert p.on_open() == p.on_open()  # the same requests after every reconnect


def test_protocol_defaults_and_heartbeat():
    p = BybitProtocol(SPOT_URL)
    assert json.loads(p.on_open()[0]) == {
        "op": "subscribe", "req_id": "sub-1",
        "args": ["tickers.BTCUSDT", "publicTrade.BTCUSDT", "tickers.ETHUSDT", "publicTrade.ETHUSDT"]}
    assert json.loads(p.ping_message()) == {"op": "ping"}
    assert BybitProtocol.PING_INTERVAL_S == 20.0
    assert p.on_message(j(PONG)) == [] and p.on_message(j(TRADE)) == [] and p.outgoing() == []
    assert subscribe_message(["tickers.BTCUSDT"]) == '{"op":"subscribe","args":["tickers.BTCUSDT"]}'


def test_protocol_records_refused_subscriptions():
    p = BybitProtocol(LINEAR_URL)
    assert p.on_message(j(SUBSCRIBE_REFUSED)) == []
    assert p.on_message(json.dumps(SUBSCRIBE_REFUSED, separators=(",", ":"))) == []
    assert p.on_message(j(SUBSCRIBED)) == []
    assert p.errors == ["error:handler not found,topic:tickers.NOPEUSDT"] * 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"symbols": ()}, "symbols"),
        ({"symbols": "BTCUSDT"}, "not one string"),
        ({"symbols": ("BTCUSDT", " ")}, "symbols"),
        ({"topics": ()}, "topics"),
        ({"topics": ("kline",)}, "unknown topic 'kline'"),
        ({"topics": ("orderbook",)}, "unknown topic 'orderbook'"),
        ({"symbols": tuple(f"COIN{i:05d}USDT" for i in range(700))}, "21000 characters"),
    ],
)
def test_protocol_rejects_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BybitProtocol(LINEAR_URL, **kwargs)


# ------------------------------------------------------------------------------- property

_GOOD = [j(LINEAR_SNAPSHOT), delta(1673272861786, bid1Price="17215.00"), delta(1673272861886, markPrice="1"),
         j(SPOT_TICKER), j(TRADE), j(BOOK_SNAPSHOT), book("delta", 18521289, asks=[("1", "0")]),
         j(SUBSCRIBED), j(PONG), j(KLINE)]
_BAD = ["", "[", "[]", "null", "42", '"x"', "{}", '{"op": 1}', '{"topic": null}',
        delta(1, bid1Price="abc"), j({**TRADE, "data": [{**_TD, "S": 1}]}),
        j({**BOOK_SNAPSHOT, "data": {**_BD, "u": True}}), j({**LINEAR_SNAPSHOT, "data": None})]

_weird_numbers = st.sampled_from(
    ["NaN", "nan", "inf", "-Infinity", "1e400", "-1", "0", "", " ", "1e-400", "17215.5", "1" * 400])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8) | _weird_numbers,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)
_symbols = st.sampled_from(["BTCUSDT", "ETHUSDT", "", "X"]) | st.text(max_size=5)
ticker_data = st.fixed_dictionaries(
    {"symbol": _symbols},
    optional={f: json_values | _weird_numbers for f in (*TICKER_FIELDS, "lastPrice", "volume24h")},
)
trade_item = st.fixed_dictionaries(
    {}, optional={k: json_values for k in ("T", "s", "S", "v", "p", "i", "BT")}
) | st.fixed_dictionaries({"T": st.integers(0, 2**45), "s": st.just("BTCUSDT"),
                           "S": st.sampled_from(["Buy", "Sell", "buy", ""]), "v": _weird_numbers,
                           "p": _weird_numbers, "i": st.text(max_size=4) | st.integers()})
book_data = st.fixed_dictionaries(
    {}, optional={"s": _symbols, "b": st.lists(st.lists(_weird_numbers | json_values, max_size=3), max_size=3) | json_values,
                  "a": st.lists(st.lists(_weird_numbers | json_values, max_size=3), max_size=3) | json_values,
                  "u": st.integers(-5, 30) | st.integers(2**63 - 2, 2**64 - 1) | json_values})
envelope = st.fixed_dictionaries(
    {"topic": st.sampled_from(["tickers.BTCUSDT", "tickers.ETHUSDT", "publicTrade.BTCUSDT",
                               "orderbook.50.BTCUSDT", "orderbook.1.BTCUSDT", "orderbook.x.BTCUSDT",
                               "kline.1.BTCUSDT", "zzz.BTCUSDT"]) | json_values},
    optional={"type": st.sampled_from(["snapshot", "delta", "x"]) | json_values,
              "ts": st.integers(0, 2**45) | _weird_numbers | json_values,
              "data": ticker_data | st.lists(trade_item, max_size=3) | book_data | json_values},
)
fuzzed = st.one_of(
    st.sampled_from(_GOOD),
    st.sampled_from(_BAD),
    st.text(max_size=30),
    json_values.map(json.dumps),
    envelope.map(json.dumps),
    st.sampled_from(_GOOD).flatmap(lambda m: st.integers(0, max(0, len(m) - 1)).map(lambda n: m[:n])),
)


@settings(max_examples=200, deadline=None)
@given(batches=st.lists(st.lists(fuzzed, max_size=15), min_size=1, max_size=3))
def test_property_every_message_is_accounted_for_and_nothing_raises(batches):
    # state carries over the batches, as in the graph; book gaps queue re-subscriptions
    adapter = BybitAdapter(BybitProtocol(LINEAR_URL, topics=("tickers", "orderbook.50", "orderbook.1")))
    for messages in batches:
        nb = run(adapter, *messages)
        assert nb.n_messages == len(messages)
        data, control, ignored, quarantined = verdicts(nb)
        assert data >= 0 and data + control + ignored + quarantined == len(messages)
        # a message is data exactly when it made rows: the rows' message numbers are the data
        row_msgs = {int(i) for batch in nb.data().values() for i in batch.msg_index}
        assert len(row_msgs) == data <= total_rows(nb)
        for batch in nb.data().values():
            assert all(messages[int(i)] == r for i, r in zip(batch.msg_index, batch.raw))
        for name, batch in nb.data().items():
            assert len({len(getattr(batch, c)) for c in batch.COLUMNS}) == 1, name
        for rec in nb.quarantine:
            assert rec.reason.startswith("bybit ") and rec.raw in messages


@settings(max_examples=60, deadline=None)
@given(split=st.lists(st.sets(st.sampled_from(TICKER_FIELDS), min_size=1), min_size=1, max_size=6))
def test_property_any_split_into_deltas_ends_at_the_snapshot_state(split):
    """Replaying a snapshot's values as deltas of any grouping, after some other snapshot, leaves
    the same state as the snapshot itself; the last quote and funding rows equal the snapshot's."""
    target = LINEAR_SNAPSHOT["data"]
    other = {**LINEAR_SNAPSHOT, "data": {**target, **{f: "1" for f in TICKER_FIELDS}}}
    groups = [*split, set(TICKER_FIELDS)]  # finish with every field so both row kinds appear last
    a = BybitAdapter()
    run(a, j(other))
    messages = [delta(1673272862000 + i, **{f: target[f] for f in g}) for i, g in enumerate(groups)]
    nb = run(a, *messages)
    reference = BybitAdapter()
    ref = run(reference, j(LINEAR_SNAPSHOT))
    assert a.tickers["BTCUSDT"] == reference.tickers["BTCUSDT"]
    for table in ("quotes", "funding"):
        got, want = getattr(nb, table), getattr(ref, table)
        for col in want.COLUMNS:
            if col in ("raw", "msg_index", "receive_ts", "event_ts"):
                continue
            assert getattr(got, col)[-1] == getattr(want, col)[0], (table, col)
