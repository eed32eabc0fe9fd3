"""Tests of the Deribit adapter, protocol and subscription manager, against recorded real traffic
(the 2021 capture on ``.raw`` channels and three 2025 single messages) and hand-made messages in
the current API's format."""

from __future__ import annotations

import http.server
import json
import math
import socket
import threading
from datetime import datetime, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.adapters import deribit
from dataflows.adapters.base import Malformed
from dataflows.adapters.deribit import (
    DeribitAdapter,
    DeribitError,
    DeribitProtocol,
    InstrumentInfo,
    SubscriptionManager,
    fetch_instruments,
    get_instruments_request,
    instruments_from_response,
    parse_instrument,
)
from dataflows.replay import batches, read_capture
from models.records import NormalizedBatch, RawBatch
from tests.conftest import RECORDED_DIR, make_raw

CAPTURE = RECORDED_DIR / "DERIBIT.ws.1.0"
T0 = 1_700_000_000.0


def note(channel: str, data) -> str:
    return json.dumps({"jsonrpc": "2.0", "method": "subscription",
                       "params": {"channel": channel, "data": data}})


def run(*messages: str, adapter: DeribitAdapter | None = None, t0: float = T0) -> NormalizedBatch:
    adapter = adapter or DeribitAdapter()
    return adapter.normalize(make_raw("deribit", [(t0 + i * 0.01, m) for i, m in enumerate(messages)]))


def accounted(nb: NormalizedBatch) -> int:
    return nb.data_messages + nb.n_control + nb.n_ignored + len(nb.quarantine)


def single(name: str) -> str:
    """A pretty-printed single recorded message, as one compact line (as received)."""
    with open(RECORDED_DIR / name, encoding="utf-8") as f:
        return json.dumps(json.load(f))


# ------------------------------------------------------------------------ recorded capture


def _independent_counts() -> dict:
    """Counts from the capture file read with json only (not the adapter, not read_capture)."""
    counts = dict(lines=0, notes=0, messages=0, tickers=0, book_msgs=0, book_levels=0,
                  snapshot_levels=0, deletes=0, control=0, snapshots=0, changes=0, chain_breaks=0)
    last: dict[str, int] = {}
    with open(CAPTURE, encoding="utf-8") as f:
        for line in f:
            counts["lines"] += 1
            head, sep, body = line.rstrip("\n").partition(": ")
            try:
                float(head)
            except ValueError:
                counts["notes"] += 1
                continue
            counts["messages"] += 1
            msg = json.loads(body)
            if msg.get("method") != "subscription":
                counts["control"] += 1 if "id" in msg else 0
                continue
            channel, data = msg["params"]["channel"], msg["params"]["data"]
            if channel.startswith("ticker."):
                counts["tickers"] += 1
            elif channel.startswith("book."):
                counts["book_msgs"] += 1
                n = len(data["bids"]) + len(data["asks"])
                counts["book_levels"] += n
                counts["deletes"] += sum(e[0] == "delete" for e in data["bids"] + data["asks"])
                if data["type"] == "snapshot":
                    counts["snapshots"] += 1
                    counts["snapshot_levels"] += n
                else:
                    counts["changes"] += 1
                    counts["chain_breaks"] += last.get(channel) != data["prev_change_id"]
                last[channel] = data["change_id"]
    return counts


@pytest.fixture(scope="module")
def capture_lines():
    lines = list(read_capture(CAPTURE))
    assert {l.exchange for l in lines} == {"deribit"}
    return lines


@pytest.fixture(scope="module")
def recorded(capture_lines) -> NormalizedBatch:
    return DeribitAdapter().normalize(RawBatch(
        "deribit", np.array([l.receive_ts for l in capture_lines]), [l.message for l in capture_lines]))


def test_independent_counts_of_the_capture():
    c = _independent_counts()
    assert c["lines"] == 139
    assert c["notes"] == 3  # the connect note, the sent public/subscribe, a trailing blank line
    assert c["messages"] == 136
    assert c["tickers"] == 89
    assert (c["book_msgs"], c["snapshots"], c["changes"]) == (46, 10, 36)
    assert (c["book_levels"], c["snapshot_levels"], c["deletes"]) == (149, 108, 19)
    assert c["control"] == 1
    assert c["chain_breaks"] == 0
    assert 136 == c["tickers"] + c["book_msgs"] + c["control"]  # no trades were recorded


def test_recorded_capture_classification(recorded, capture_lines):
    c = _independent_counts()
    assert len(capture_lines) == c["messages"] == 136
    assert recorded.exchange == "deribit"
    assert recorded.n_messages == 136
    assert len(recorded.option_tickers) == c["tickers"] == 89
    assert len(recorded.book_updates) == c["book_levels"] == 149
    assert recorded.n_control == c["control"] == 1  # the public/subscribe answer
    assert recorded.n_ignored == 0
    assert recorded.quarantine == ()
    assert recorded.data_messages == 135
    assert len(recorded.trades) == len(recorded.quotes) == len(recorded.funding) == 0
    assert accounted(recorded) == 136


def test_recorded_option_ticker_fields_and_units(recorded):
    t = recorded.option_tickers
    # first ticker: ETH-30JUL21-2800-C, mark_iv 120.74 %, bid_iv 115.62 %, ask_iv 125.63 %
    assert (t.exchange[0], t.instrument[0], t.asset[0]) == ("deribit", "ETH-30JUL21-2800-C", "ETH")
    assert t.expiry_utc[0] == datetime(2021, 7, 30, 8, 0, tzinfo=timezone.utc).timestamp()
    assert t.strike_usd[0] == 2800.0 and t.is_call[0]
    assert t.mark_iv[0] == pytest.approx(1.2074)
    assert t.bid_iv[0] == pytest.approx(1.1562)
    assert t.ask_iv[0] == pytest.approx(1.2563)
    assert (t.bid_coin[0], t.bid_size[0], t.ask_coin[0], t.ask_size[0]) == (0.0015, 4714.0, 0.0025, 873.0)
    assert t.mark_coin[0] == 0.001972  # coin, not USD
    assert (t.underlying_usd[0], t.index_usd[0], t.open_interest[0]) == (2003.61, 2006.72, 12685.0)
    assert (t.delta[0], t.gamma[0], t.vega[0], t.theta[0], t.rho[0]) == (0.03127, 0.0002, 0.20072, -1.64029, 0.01188)
    assert t.event_ts[0] == pytest.approx(1626993723.632)
    assert t.receive_ts[0] == 1626993723.804855
    # every IV is a fraction (all recorded IVs are 30%..300%), never percent
    assert np.nanmax(t.mark_iv) < 5 and np.nanmin(t.mark_iv) > 0.1
    # puts and every expiry at 08:00 UTC
    assert not t.is_call[t.instrument == "BTC-24SEP21-8000-P"].any()
    assert all(datetime.fromtimestamp(e, timezone.utc).hour == 8 for e in t.expiry_utc)


def test_recorded_no_bid_and_no_ask_become_nan(recorded):
    t = recorded.option_tickers
    no_bid = np.isnan(t.bid_coin)
    no_ask = np.isnan(t.ask_coin)
    assert no_bid.sum() == 13 and no_ask.sum() == 7  # Deribit sent price 0, amount 0 for these
    assert np.isnan(t.bid_size[no_bid]).all() and np.isnan(t.bid_iv[no_bid]).all()
    assert np.isnan(t.ask_size[no_ask]).all() and np.isnan(t.ask_iv[no_ask]).all()
    assert not (t.bid_coin == 0).any() and not (t.ask_coin == 0).any()
    assert not np.isnan(t.bid_iv[~no_bid]).any()  # every recorded bid has an IV


def test_recorded_book_chain_has_no_gaps(recorded):
    b = recorded.book_updates
    assert recorded.gaps == ()
    assert b.is_snapshot.sum() == 108 and (~b.is_snapshot).sum() == 41
    assert (b.size_coin == 0).sum() == 19  # "delete" levels
    first = json.loads(next(l.message for l in read_capture(CAPTURE) if '"channel":"book.' in l.message))
    assert b.sequence[0] == first["params"]["data"]["change_id"] == 13169025645
    assert b.side[0] == "bid" and b.price[0] == 0.0015 and b.size_coin[0] == 4714.0


def test_recorded_capture_in_replay_batches_keeps_the_chain(capture_lines):
    adapter = DeribitAdapter()
    out = [adapter.normalize(rb) for rb in batches(iter(capture_lines), max_messages=7)]
    assert len(out) > 10
    assert sum(nb.n_messages for nb in out) == 136
    assert sum(len(nb.book_updates) for nb in out) == 149
    assert sum(len(nb.gaps) for nb in out) == 0
    assert sum(len(nb.quarantine) for nb in out) == 0


# ------------------------------------------------------------------------ single recorded messages


def test_recorded_trades_message_gives_one_row_per_trade():
    nb = run(single("deribit_ws_trades_100ms.json"))
    t = nb.trades
    assert len(t) == 2 and nb.data_messages == 1 and nb.quarantine == ()
    assert t.trade_id.tolist() == ["403691824", "403691825"]
    assert (t.instrument[0], t.asset[0], t.quote_ccy[0]) == ("BTC-PERPETUAL", "BTC", "USD")
    assert t.side.tolist() == ["sell", "sell"]
    assert t.price.tolist() == [92294.5, 92288.5]
    # perpetual amounts are USD: 10 USD and 750 USD → coin
    assert t.size_coin[0] == pytest.approx(10.0 / 92294.5)
    assert t.size_coin[1] == pytest.approx(750.0 / 92288.5)
    assert t.event_ts[0] == pytest.approx(1765531356.452)
    assert nb.gaps == ()  # trade_seq 271252854 → 271252855


def test_recorded_perpetual_ticker_gives_quote_and_funding():
    nb = run(single("deribit_ws_ticker_100ms.json"))
    q, f = nb.quotes, nb.funding
    assert len(q) == 1 and len(f) == 1 and nb.data_messages == 1 and len(nb.option_tickers) == 0
    assert (q.instrument[0], q.asset[0], q.quote_ccy[0]) == ("BTC-PERPETUAL", "BTC", "USD")
    assert (q.bid[0], q.ask[0]) == (92283.5, 92284.0)
    assert q.bid_size_coin[0] == pytest.approx(117660.0 / 92283.5)  # USD amount → coin
    assert q.ask_size_coin[0] == pytest.approx(186520.0 / 92284.0)
    assert q.event_ts[0] == pytest.approx(1765541474.086)
    assert (f.mark_usd[0], f.index_usd[0]) == (92281.78, 92263.55)
    assert f.funding_rate[0] == 0.00001742  # funding_8h (per 8 h); current_funding was 0.0
    assert math.isnan(f.next_funding_ts[0])


def test_recorded_test_request_is_answered_by_the_protocol_and_is_control():
    raw = single("deribit_ws_test_request.json")
    p = DeribitProtocol("wss://127.0.0.1:1/ws/api/v2", ["ticker.BTC-PERPETUAL.100ms"])
    p.on_open()
    replies = p.on_message(raw)
    assert len(replies) == 1
    reply = json.loads(replies[0])
    assert reply == {"jsonrpc": "2.0", "id": 3, "method": "public/test", "params": {}}
    assert p.on_message(raw) != replies  # a new id each time
    nb = run(raw)
    assert nb.n_control == 1 and nb.data_messages == 0


def test_protocol_ignores_other_messages_cheaply():
    p = DeribitProtocol()
    assert p.on_message('{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}') == []
    assert p.on_message(single("deribit_ws_ticker_100ms.json")) == []
    assert p.on_message('{"test_request": ') == []  # the substring, but not JSON
    assert p.on_message('["test_request"]') == []
    assert p.on_message(note("ticker.X.100ms", {"type": "test_request"})) == []


# ------------------------------------------------------------------------ hand-made: tickers

OPTION_TICKER = {
    "timestamp": 1765541474086, "state": "open", "instrument_name": "BTC-26JUN26-100000-C",
    "underlying_price": 95120.5, "underlying_index": "BTC-26JUN26", "index_price": 92263.55,
    "mark_price": 0.0815, "mark_iv": 52.3, "bid_iv": 0.0, "ask_iv": 53.1,
    "best_bid_price": 0.0, "best_bid_amount": 0.0, "best_ask_price": 0.083, "best_ask_amount": 12.5,
    "open_interest": 1234.5, "interest_rate": 0.0, "last_price": 0.08, "settlement_price": 0.079,
    "min_price": 0.05, "max_price": 0.12, "estimated_delivery_price": 92263.55,
    "stats": {"volume": 10.0, "high": 0.09, "low": 0.07, "price_change": 1.0},
    "greeks": {"delta": 0.41, "gamma": 0.00002, "vega": 210.5, "theta": -55.2, "rho": 120.1},
}


def test_option_ticker_100ms_no_bid_is_nan():
    nb = run(note("ticker.BTC-26JUN26-100000-C.100ms", OPTION_TICKER))
    t = nb.option_tickers
    assert len(t) == 1 and nb.quarantine == ()
    assert t.expiry_utc[0] == datetime(2026, 6, 26, 8, tzinfo=timezone.utc).timestamp()
    assert t.strike_usd[0] == 100000.0 and t.is_call[0]
    assert math.isnan(t.bid_coin[0]) and math.isnan(t.bid_size[0]) and math.isnan(t.bid_iv[0])
    assert (t.ask_coin[0], t.ask_size[0]) == (0.083, 12.5)
    assert t.mark_iv[0] == pytest.approx(0.523) and t.ask_iv[0] == pytest.approx(0.531)
    assert t.underlying_usd[0] == 95120.5  # the forward the IV is quoted on


def test_option_ticker_missing_optional_fields_are_nan():
    data = {k: v for k, v in OPTION_TICKER.items() if k not in ("greeks", "open_interest", "bid_iv")}
    data.update(best_bid_price=0.08, best_bid_amount=3.0)
    nb = run(note("ticker.BTC-26JUN26-100000-C.agg2", data))
    t = nb.option_tickers
    assert len(t) == 1, nb.quarantine
    assert math.isnan(t.delta[0]) and math.isnan(t.open_interest[0]) and math.isnan(t.bid_iv[0])
    assert t.bid_coin[0] == 0.08


def test_perpetual_ticker_without_funding_8h_uses_current_funding():
    data = json.loads(single("deribit_ws_ticker_100ms.json"))["params"]["data"]
    del data["funding_8h"]
    data["current_funding"] = 0.0003
    nb = run(note("ticker.BTC-PERPETUAL.100ms", data))
    assert nb.funding.funding_rate.tolist() == [0.0003]


def test_future_ticker_gives_a_quote_only():
    data = {"timestamp": 1765541474086, "instrument_name": "BTC-27MAR26", "mark_price": 93500.0,
            "index_price": 92263.55, "best_bid_price": 93490.0, "best_bid_amount": 50000.0,
            "best_ask_price": 93510.0, "best_ask_amount": 20000.0, "interest_value": 0.01}
    no_mark = {k: v for k, v in data.items() if k != "mark_price"}  # a quote does not need it
    nb = run(note("ticker.BTC-27MAR26.100ms", data), note("ticker.BTC-27MAR26.100ms", no_mark))
    assert len(nb.quotes) == 2 and len(nb.funding) == 0 and nb.quarantine == ()
    assert nb.quotes.asset[0] == "BTC" and nb.quotes.quote_ccy[0] == "USD"
    assert nb.quotes.bid_size_coin[0] == pytest.approx(50000.0 / 93490.0)


def test_linear_perpetual_amounts_are_already_coin():
    data = {"timestamp": 1765541474086, "instrument_name": "ETH_USDC-PERPETUAL", "mark_price": 3100.0,
            "index_price": 3099.0, "best_bid_price": 3099.5, "best_bid_amount": 2.5,
            "best_ask_price": 3100.5, "best_ask_amount": 1.0, "funding_8h": -0.00002,
            "current_funding": 0.0}
    nb = run(note("ticker.ETH_USDC-PERPETUAL.100ms", data))
    q = nb.quotes
    assert (q.asset[0], q.quote_ccy[0], q.bid_size_coin[0]) == ("ETH", "USDC", 2.5)
    assert nb.funding.funding_rate.tolist() == [-0.00002]


def test_linear_option_ticker_is_ignored():
    data = {**OPTION_TICKER, "instrument_name": "XRP_USDC-30JUN26-0d625-C"}
    nb = run(note("ticker.XRP_USDC-30JUN26-0d625-C.100ms", data))
    assert nb.n_ignored == 1 and len(nb.option_tickers) == 0


# ------------------------------------------------------------------------ hand-made: books

CHANNEL = "book.BTC-26JUN26-100000-C.100ms"


def book(kind: str, change_id: int, prev: int | None = None, bids=(), asks=(), ts=1765541474000):
    data = {"type": kind, "timestamp": ts, "instrument_name": "BTC-26JUN26-100000-C",
            "change_id": change_id, "bids": [list(b) for b in bids], "asks": [list(a) for a in asks]}
    if prev is not None:
        data["prev_change_id"] = prev
    return note(CHANNEL, data)


def test_book_snapshot_change_and_delete():
    nb = run(
        book("snapshot", 10, bids=[("new", 0.08, 5.0)], asks=[("new", 0.083, 2.0), ("new", 0.09, 1.0)]),
        book("change", 12, 10, asks=[("delete", 0.083, 0.0), ("change", 0.09, 4.0)], ts=1765541474100),
    )
    b = nb.book_updates
    assert nb.quarantine == () and nb.gaps == ()
    assert b.side.tolist() == ["bid", "ask", "ask", "ask", "ask"]
    assert b.is_snapshot.tolist() == [True, True, True, False, False]
    assert b.size_coin.tolist() == [5.0, 2.0, 1.0, 0.0, 4.0]
    assert b.sequence.tolist() == [10, 10, 10, 12, 12]
    assert b.event_ts[-1] == pytest.approx(1765541474.1)


def test_book_chain_break_writes_a_gap_and_queues_a_resubscribe():
    p = DeribitProtocol(channels=[CHANNEL])
    p.on_open()
    adapter = DeribitAdapter(p)
    nb = run(
        book("snapshot", 10, bids=[("new", 0.08, 5.0)]),
        book("change", 12, 10, bids=[("change", 0.08, 6.0)], ts=1765541474100),
        book("change", 20, 15, bids=[("change", 0.08, 7.0)], ts=1765541474300),  # 12..15 missed
        book("change", 21, 20, bids=[("change", 0.08, 8.0)], ts=1765541474400),
        book("change", 25, 22, bids=[("change", 0.08, 9.0)], ts=1765541474500),  # again, before the snapshot
        adapter=adapter,
    )
    assert nb.quarantine == ()
    assert len(nb.book_updates) == 5  # the rows after a gap are still data
    assert len(nb.gaps) == 2
    gap = nb.gaps[0]
    assert (gap.exchange, gap.instrument, gap.kind, gap.missing) == ("deribit", "BTC-26JUN26-100000-C", "book", -1)
    assert gap.start_ts == pytest.approx(1765541474.1) and gap.end_ts == pytest.approx(1765541474.3)
    assert "prev_change_id 15" in gap.detail and "12" in gap.detail
    sent = [json.loads(m) for m in p.outgoing()]
    # one re-subscribe (not one per gap while the snapshot is pending): unsubscribe, then subscribe
    assert [(m["method"], m["params"]["channels"]) for m in sent] == [
        ("public/unsubscribe", [CHANNEL]), ("public/subscribe", [CHANNEL])]
    assert sent[0]["id"] < sent[1]["id"] and sent[0]["id"] > 2  # ids continue after on_open's
    assert adapter.resubscribes == 1
    # the fresh snapshot restarts the chain; a later break re-subscribes again
    nb2 = run(book("snapshot", 100, bids=[("new", 0.08, 1.0)]), book("change", 102, 100),
              book("change", 110, 105), adapter=adapter)
    assert len(nb2.gaps) == 1 and len(p.outgoing()) == 2 and adapter.resubscribes == 2


def test_book_change_before_any_snapshot_is_a_gap():
    p = DeribitProtocol(channels=[CHANNEL])
    nb = run(book("change", 12, 10, bids=[("new", 0.08, 1.0)]), adapter=DeribitAdapter(p))
    assert len(nb.gaps) == 1 and "before any snapshot" in nb.gaps[0].detail
    assert len(p.outgoing()) == 2


def test_stale_book_change_is_quarantined():
    nb = run(book("snapshot", 10), book("change", 12, 10), book("change", 11, 10))
    assert len(nb.quarantine) == 1 and "stale change_id 11" in nb.quarantine[0].reason
    assert nb.gaps == ()


def test_resubscribe_goes_to_the_protocol_that_owns_the_channel():
    other = DeribitProtocol(channels=["ticker.BTC-PERPETUAL.100ms"])
    owner = DeribitProtocol(channels=[CHANNEL])
    adapter = DeribitAdapter([other, owner])
    run(book("snapshot", 10), book("change", 30, 20), adapter=adapter)
    assert other.outgoing() == [] and len(owner.outgoing()) == 2


def test_gap_without_a_protocol_is_still_recorded():
    nb = run(book("snapshot", 10), book("change", 30, 20))
    assert len(nb.gaps) == 1 and nb.quarantine == ()


def test_recorded_raw_books_with_a_hand_made_break(capture_lines):
    """The real capture with one change's prev_change_id altered: exactly one gap, on that book."""
    msgs = [l.message for l in capture_lines]
    i = next(i for i, m in enumerate(msgs) if '"type":"change"' in m and "BTC-24SEP21-8000-P" in m)
    m = json.loads(msgs[i])
    m["params"]["data"]["prev_change_id"] -= 1
    msgs[i] = json.dumps(m)
    p = DeribitProtocol(channels=["book.BTC-24SEP21-8000-P.raw"])
    nb = DeribitAdapter(p).normalize(RawBatch("deribit", np.array([l.receive_ts for l in capture_lines]), msgs))
    assert [(g.instrument, g.kind) for g in nb.gaps] == [("BTC-24SEP21-8000-P", "book")]
    assert len(nb.book_updates) == 149 and nb.quarantine == ()
    assert [json.loads(r)["params"]["channels"] for r in p.outgoing()] == [["book.BTC-24SEP21-8000-P.raw"]] * 2


def test_grouped_book_pairs_are_snapshots():
    data = {"timestamp": 1765541474000, "instrument_name": "BTC-PERPETUAL", "change_id": 5,
            "bids": [[92283.5, 117660.0], [92283.0, 1000.0]], "asks": [[92284.0, 186520.0]]}
    nb = run(note("book.BTC-PERPETUAL.none.10.100ms", data), note("book.BTC-PERPETUAL.none.10.100ms", {**data, "change_id": 3}))
    b = nb.book_updates
    assert len(b) == 6 and b.is_snapshot.all() and nb.gaps == () and nb.quarantine == ()
    assert b.size_coin[0] == pytest.approx(117660.0 / 92283.5)  # perpetual: USD → coin


# ------------------------------------------------------------------------ hand-made: trades, index

OPTION_TRADES = [
    {"trade_seq": 41, "trade_id": "ETH-1", "timestamp": 1765531356452, "tick_direction": 0,
     "price": 0.0215, "mark_price": 0.0212, "iv": 61.2, "instrument_name": "ETH-26JUN26-4000-C",
     "index_price": 3100.0, "direction": "buy", "amount": 7.0},
    {"trade_seq": 7, "trade_id": "BTC-1", "timestamp": 1765531356460, "tick_direction": 1,
     "price": 0.0815, "mark_price": 0.081, "iv": 52.0, "instrument_name": "BTC-26JUN26-100000-C",
     "index_price": 92263.55, "direction": "sell", "amount": 0.5},
    {"trade_seq": 10, "trade_id": "BTC-2", "timestamp": 1765531356470, "tick_direction": 1,
     "price": 0.082, "mark_price": 0.081, "iv": 52.1, "instrument_name": "BTC-26JUN26-100000-C",
     "index_price": 92263.55, "direction": "buy", "amount": 1.5},
]


def test_option_trades_by_currency_channel():
    nb = run(note("trades.option.any.100ms", OPTION_TRADES))
    t = nb.trades
    assert len(t) == 3 and nb.data_messages == 1 and nb.quarantine == ()
    assert t.instrument.tolist() == ["ETH-26JUN26-4000-C", "BTC-26JUN26-100000-C", "BTC-26JUN26-100000-C"]
    assert t.asset.tolist() == ["ETH", "BTC", "BTC"]
    assert (t.quote_ccy == "USD").all()
    assert t.price.tolist() == [0.0215, 0.0815, 0.082]  # premiums in coin, as received
    assert t.size_coin.tolist() == [7.0, 0.5, 1.5]  # option amounts are coin
    assert t.side.tolist() == ["buy", "sell", "buy"]
    # trade_seq 7 → 10 on BTC-26JUN26-100000-C: 8 and 9 missing
    assert len(nb.gaps) == 1
    g = nb.gaps[0]
    assert (g.instrument, g.kind, g.missing) == ("BTC-26JUN26-100000-C", "sequence", 2)
    assert "8..9" in g.detail


def test_stale_trades_are_quarantined_and_leave_the_tracker_alone():
    adapter = DeribitAdapter()
    run(note("trades.BTC-26JUN26-100000-C.100ms", OPTION_TRADES[1:2]), adapter=adapter)
    assert adapter.trade_seqs.last("BTC-26JUN26-100000-C") == 7
    mixed = [OPTION_TRADES[0], OPTION_TRADES[1]]  # ETH new, BTC seq 7 repeated
    nb = run(note("trades.option.any.100ms", mixed), adapter=adapter)
    assert len(nb.quarantine) == 1 and "stale trade_seq 7" in nb.quarantine[0].reason
    assert adapter.trade_seqs.last("ETH-26JUN26-4000-C") is None  # nothing half-applied
    assert len(nb.trades) == 0


def test_empty_trades_list_is_data_without_rows():
    nb = run(note("trades.option.BTC.100ms", []))
    assert nb.data_messages == 1 and len(nb.trades) == 0 and nb.quarantine == ()


def test_index_price():
    nb = run(note("deribit_price_index.btc_usd", {"timestamp": 1535098298227, "price": 6521.17, "index_name": "btc_usd"}))
    ix = nb.index_prices
    assert len(ix) == 1
    assert (ix.index_name[0], ix.asset[0], ix.price_usd[0]) == ("btc_usd", "BTC", 6521.17)
    assert ix.event_ts[0] == pytest.approx(1535098298.227)


def test_control_heartbeats_responses_and_errors():
    nb = run(
        '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"heartbeat"}}',
        '{"jsonrpc":"2.0","method":"heartbeat","params":{"type":"test_request"}}',
        '{"jsonrpc":"2.0","id":1,"result":"ok"}',
        '{"jsonrpc":"2.0","id":2,"result":["ticker.BTC-PERPETUAL.100ms"],"usIn":1,"usOut":2,"usDiff":1,"testnet":false}',
        '{"jsonrpc":"2.0","id":3,"error":{"message":"Invalid params","code":-32602}}',
    )
    assert nb.n_control == 5 and nb.quarantine == () and nb.data_messages == 0


def test_unused_channels_are_ignored_and_unknown_ones_quarantined():
    nb = run(
        note("deribit_volatility_index.btc_usd", {"volatility": 50.0, "timestamp": 1, "index_name": "btc_usd"}),
        note("markprice.options.btc_usd", [{"mark_price": 0.1, "iv": 0.5}]),
        note("platform_state", {"allow_unauthenticated_public_requests": True}),
        note("deribit_price_index.eth_btc", {"timestamp": 1, "price": 0.05, "index_name": "eth_btc"}),
        note("somethingnew.BTC.100ms", {}),
    )
    assert nb.n_ignored == 4
    assert len(nb.quarantine) == 1 and "unknown channel 'somethingnew.BTC.100ms'" in nb.quarantine[0].reason


@pytest.mark.parametrize(
    "text, reason_parts",
    [
        ("", ["deribit", "invalid JSON"]),
        ("[1]", ["deribit", "expected a JSON object", "list"]),
        ("{}", ["deribit", "unrecognized message"]),
        ('{"jsonrpc":"2.0","method":"subscription","params":[]}', ["params is not an object"]),
        ('{"jsonrpc":"2.0","method":"subscription","params":{"data":{}}}', ["missing channel"]),
        ('{"jsonrpc":"2.0","method":"subscription","params":{"channel":"ticker.X.100ms"}}', ["missing data"]),
        (note("ticker.BTC-26JUN26-100000-C.100ms", {**OPTION_TICKER, "mark_price": "abc"}),
         ["ticker", "field 'mark_price' is not a number"]),
        (note("ticker.BTC-26JUN26-100000-C.100ms", {k: v for k, v in OPTION_TICKER.items() if k != "timestamp"}),
         ["ticker", "missing field 'timestamp'"]),
        (note("ticker.BTC-26JUN26-100000-C.100ms", {**OPTION_TICKER, "greeks": [1]}), ["greeks", "not an object"]),
        (note("ticker.BTC-26JUN26-100000-C.100ms", {**OPTION_TICKER, "instrument_name": "ETH-PERPETUAL"}),
         ["differs from channel"]),
        (note("ticker.BTC-31FEB26-1-C.100ms", {**OPTION_TICKER, "instrument_name": "BTC-31FEB26-1-C"}),
         ["not a date"]),
        (note("ticker.HELLO.100ms", {**OPTION_TICKER, "instrument_name": "HELLO"}), ["unrecognized instrument"]),
        (note(CHANNEL, {"type": "change", "timestamp": 1, "change_id": 5, "bids": [], "asks": []}),
         ["book", "missing field 'prev_change_id'"]),
        (note(CHANNEL, {"type": "other", "timestamp": 1, "change_id": 5, "bids": [], "asks": []}),
         ["type is not snapshot or change"]),
        (note(CHANNEL, {"type": "snapshot", "timestamp": 1, "change_id": 5, "bids": [["add", 1, 1]], "asks": []}),
         ["unknown book action 'add'"]),
        (note(CHANNEL, {"type": "snapshot", "timestamp": 1, "change_id": 5, "bids": [[1]], "asks": []}),
         ["not [action, price, amount]"]),
        (note(CHANNEL, {"type": "snapshot", "timestamp": 1, "change_id": True, "bids": [], "asks": []}),
         ["change_id", "not an integer"]),
        (note(CHANNEL, {"type": "snapshot", "timestamp": 1, "change_id": 1, "bids": {}, "asks": []}),
         ["'bids' is not a list"]),
        (note("trades.option.BTC.100ms", {"trade_id": "1"}), ["trades: data is not a list"]),
        (note("trades.BTC-PERPETUAL.100ms", OPTION_TRADES[:1]), ["differs from channel"]),
        (note("trades.option.BTC.100ms", [{**OPTION_TRADES[0], "direction": "long"}]), ["'direction' is not buy or sell"]),
        (note("trades.option.BTC.100ms", [{**OPTION_TRADES[0], "trade_id": None}]), ["'trade_id' is not an id"]),
        (note("trades.option.BTC.100ms", [{k: v for k, v in OPTION_TRADES[0].items() if k != "trade_seq"}]),
         ["missing field 'trade_seq'"]),
        (note("deribit_price_index.btc_usd", {"timestamp": 1, "index_name": "btc_usd"}), ["missing field 'price'"]),
        (note(CHANNEL, {"type": "snapshot", "timestamp": 1, "change_id": 2**63, "bids": [], "asks": []}),
         ["change_id", "out of the 64-bit integer range"]),
        (note("trades.option.BTC.100ms", [{**OPTION_TRADES[0], "trade_seq": 2**64 - 1}]),
         ["trade_seq", "out of the 64-bit integer range"]),
    ],
)
def test_malformed_messages_are_quarantined_with_clear_reasons(text, reason_parts):
    nb = run(text, t0=1700000001.5)
    assert nb.n_messages == 1 and len(nb.quarantine) == 1
    rec = nb.quarantine[0]
    assert rec.reason.startswith("deribit ")
    for part in reason_parts:
        assert part in rec.reason, rec.reason
    assert (rec.exchange, rec.receive_ts, rec.raw) == ("deribit", 1700000001.5, text)
    assert accounted(nb) == 1 and nb.data_messages == 0


# ------------------------------------------------------------------------ instrument names


def test_parse_instrument():
    o = parse_instrument("BTC-24SEP21-40000-C")
    assert (o.asset, o.kind, o.strike_usd, o.is_call, o.linear, o.quote_ccy) == ("BTC", "option", 40000.0, True, False, "USD")
    assert o.expiry_utc == datetime(2021, 9, 24, 8, tzinfo=timezone.utc).timestamp()
    assert parse_instrument("ETH-5AUG16-580-P").expiry_utc == datetime(2016, 8, 5, 8, tzinfo=timezone.utc).timestamp()
    assert parse_instrument("XRP_USDC-30JUN25-0d625-P").strike_usd == 0.625
    p = parse_instrument("BTC-PERPETUAL")
    assert (p.kind, p.amounts_in_usd, math.isnan(p.expiry_utc)) == ("perpetual", True, True)
    assert parse_instrument("BTC_USDC-PERPETUAL").amounts_in_usd is False
    assert parse_instrument("BTC-27DEC24").kind == "future"
    for bad in ("", "BTC", "btc-PERPETUAL", "BTC-24SEP21-40000-X", "BTC-24XYZ21", "BTC-FS-29DEC23_PERP", "BTC-24SEP21-1e5-C"):
        with pytest.raises(Malformed):
            parse_instrument(bad)
    with pytest.raises(Malformed, match="not a string"):
        parse_instrument(["BTC-PERPETUAL"])


# ------------------------------------------------------------------------ protocol


def test_protocol_on_open_sets_heartbeat_then_subscribes_in_chunks():
    channels = [f"ticker.BTC-{i}.100ms" for i in range(250)]
    p = DeribitProtocol("wss://test.deribit.com/ws/api/v2", channels, heartbeat_interval_s=15,
                        max_channels_per_request=100)
    assert p.url() == "wss://test.deribit.com/ws/api/v2"
    sent = [json.loads(m) for m in p.on_open()]
    assert sent[0] == {"jsonrpc": "2.0", "id": 1, "method": "public/set_heartbeat", "params": {"interval": 15}}
    assert [m["method"] for m in sent[1:]] == ["public/subscribe"] * 3
    assert [len(m["params"]["channels"]) for m in sent[1:]] == [100, 100, 50]
    assert sum((m["params"]["channels"] for m in sent[1:]), []) == channels
    assert [m["id"] for m in sent] == [1, 2, 3, 4]
    again = [json.loads(m)["id"] for m in p.on_open()]  # a reconnect: same requests, new ids
    assert again == [5, 6, 7, 8]
    with pytest.raises(ValueError, match="at least 10"):
        DeribitProtocol(heartbeat_interval_s=5)


def test_protocol_subscribe_and_unsubscribe_while_running():
    p = DeribitProtocol(channels=["a", "b"])
    p.subscribe(["b", "c"])
    p.unsubscribe(["a", "zzz"])
    sent = [json.loads(m) for m in p.outgoing()]
    assert [(m["method"], m["params"]["channels"]) for m in sent] == [
        ("public/subscribe", ["c"]), ("public/unsubscribe", ["a"])]
    assert p.channels == ("b", "c") and p.outgoing() == []
    assert [json.loads(m)["params"]["channels"] for m in p.on_open()[1:]] == [["b", "c"]]


# ------------------------------------------------------------------------ subscription manager


def option(name: str, expiry_s: float, active: bool = True) -> dict:
    """A public/get_instruments entry (fields as Deribit sends them; times in ms)."""
    inst = parse_instrument(name)
    return {"instrument_name": name, "kind": "option", "base_currency": inst.asset, "quote_currency": inst.asset,
            "expiration_timestamp": int(expiry_s * 1000), "strike": inst.strike_usd,
            "option_type": "call" if inst.is_call else "put", "is_active": active,
            "settlement_period": "month", "tick_size": 0.0005, "contract_size": 1.0}


NOW = datetime(2026, 6, 1, 12, tzinfo=timezone.utc).timestamp()
JUN = datetime(2026, 6, 26, 8, tzinfo=timezone.utc).timestamp()
SEP = datetime(2026, 9, 25, 8, tzinfo=timezone.utc).timestamp()


def chain(n: int, asset: str = "BTC", code: str = "26JUN26", expiry: float = JUN) -> list[dict]:
    return [option(f"{asset}-{code}-{1000 * (k // 2 + 1)}-{'C' if k % 2 == 0 else 'P'}", expiry) for k in range(n)]


def test_manager_wanted_channels():
    m = SubscriptionManager(currencies=("BTC",))
    insts = chain(4) + [option("BTC-1JUN26-500-C", NOW - 1), option("BTC-26JUN26-9-C", JUN, active=False),
                        option("ETH-26JUN26-3000-C", JUN), {**option("BTC-26JUN26-77-C", JUN), "kind": "future"}]
    wanted = m.wanted(insts, NOW)
    assert wanted[:4] == ["deribit_price_index.btc_usd", "ticker.BTC-PERPETUAL.100ms",
                          "trades.BTC-PERPETUAL.100ms", "trades.option.BTC.100ms"]
    assert wanted[4:6] == ["ticker.BTC-26JUN26-1000-C.100ms", "book.BTC-26JUN26-1000-C.100ms"]
    assert len(wanted) == 4 + 2 * 4  # expired, inactive, other currency and non-option left out
    assert all(c.endswith(".100ms") for c in wanted if not c.startswith("deribit_price_index"))
    with pytest.raises(ValueError, match="authenticated"):
        SubscriptionManager(interval="raw")


def test_manager_splits_more_than_500_channels_across_connections():
    m = SubscriptionManager()
    insts = chain(830) + chain(300, "ETH")
    plan = m.plan(insts, NOW)
    total = 8 + 2 * 1130
    assert sum(len(c) for c in plan) == total
    assert len(plan) == math.ceil(total / 500) == 5
    assert all(len(c) <= 500 for c in plan)
    assert len({ch for c in plan for ch in c}) == total
    # plan 003's own example (830 options × 2 channels) needs 4 connections, not 3
    assert len(SubscriptionManager(currencies=("BTC",)).plan(chain(830), NOW)) == 4


def test_manager_refuses_more_connections_than_allowed():
    m = SubscriptionManager(max_per_connection=10, max_connections=2)
    with pytest.raises(DeribitError, match="more than the 2 allowed"):
        m.plan(chain(20), NOW)


def test_manager_diff_drops_expired_and_adds_listed_options():
    m = SubscriptionManager(currencies=("BTC",), max_per_connection=20)
    june = chain(10)  # 20 channels
    old = m.plan(june, NOW)
    assert [len(c) for c in old] == [20, 4]
    # at expiry the June options go; September options list
    later = JUN  # expiration_timestamp <= now: expired
    sept = chain(6, code="25SEP26", expiry=SEP)
    new = m.wanted(june + sept, later)
    plan = m.diff(old, new)
    assert plan.channels == frozenset(new)
    unsub = {c for ch in plan.changes for c in ch.unsubscribe}
    sub = {c for ch in plan.changes for c in ch.subscribe}
    assert unsub == {f"{k}.{o['instrument_name']}.100ms" for o in june for k in ("ticker", "book")}
    assert sub == {f"{k}.{o['instrument_name']}.100ms" for o in sept for k in ("ticker", "book")}
    # shared channels stay where they were (connection 0), nothing re-sent for them
    assert plan.connections[0][:4] == old[0][:4]
    assert not any(c in sub | unsub for c in old[0][:4])
    assert all(len(c) <= 20 for c in plan.connections)
    # the diff of a plan against itself is empty
    assert m.diff(plan.connections, new).changes == ()


def test_manager_diff_opens_new_connections_when_full():
    m = SubscriptionManager(currencies=("BTC",), max_per_connection=10)
    old = m.plan(chain(3), NOW)  # 10 channels: one full connection
    plan = m.diff(old, m.wanted(chain(8), NOW))
    assert [len(c) for c in plan.connections] == [10, 10]
    assert [c.connection for c in plan.changes] == [1]
    protocols = deribit.apply_plan(deribit.protocols_for(old), plan)
    assert len(protocols) == 2 and protocols[0].outgoing() == []
    assert protocols[1].channels == plan.connections[1]


# ------------------------------------------------------------------------ instruments over HTTP / ws


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes]] = {}

    def do_GET(self):  # noqa: N802 - the stdlib's name
        code, body = self.routes.get(self.server.mode, (404, b"{}"))
        self.server.seen.append(self.path)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen, server.mode = [], "ok"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


_Handler.routes = {
    "ok": (200, json.dumps({"jsonrpc": "2.0", "result": chain(2), "usIn": 1, "usOut": 2}).encode()),
    "rpc_error": (200, b'{"jsonrpc":"2.0","error":{"message":"Invalid params","code":-32602}}'),
    "http_error": (400, b'{"jsonrpc":"2.0","error":{"message":"bad currency","code":11050}}'),
    "not_json": (200, b"<html>maintenance</html>"),
}


def test_fetch_instruments_over_http(http_server):
    server, base = http_server
    infos = fetch_instruments(base, currency="BTC", kind="option", timeout_s=5)
    assert [i.name for i in infos] == ["BTC-26JUN26-1000-C", "BTC-26JUN26-1000-P"]
    assert infos[0].expiration_ts == JUN and infos[0].strike == 1000.0 and infos[0].kind == "option"
    assert server.seen == ["/api/v2/public/get_instruments?currency=BTC&kind=option&expired=false"]


@pytest.mark.parametrize("mode, message", [
    ("rpc_error", "Invalid params"), ("http_error", "HTTP 400"), ("not_json", "not JSON")])
def test_fetch_instruments_failures_are_clear(http_server, mode, message):
    server, base = http_server
    server.mode = mode
    with pytest.raises(DeribitError, match="could not fetch Deribit instruments from http://127.0.0.1") as exc:
        fetch_instruments(base, timeout_s=5)
    assert message in str(exc.value)


def test_fetch_instruments_unreachable_host():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeribitError, match=f"127.0.0.1:{port}"):
        fetch_instruments(f"http://127.0.0.1:{port}", timeout_s=2)


def test_instruments_over_websocket_json_rpc():
    req = json.loads(get_instruments_request("ETH", request_id=7))
    assert req == {"jsonrpc": "2.0", "id": 7, "method": "public/get_instruments",
                   "params": {"currency": "ETH", "kind": "option", "expired": False}}
    infos = instruments_from_response(json.dumps({"jsonrpc": "2.0", "id": 7, "result": chain(3, "ETH")}))
    assert len(infos) == 3 and all(isinstance(i, InstrumentInfo) for i in infos)
    with pytest.raises(DeribitError, match="failed"):
        instruments_from_response('{"jsonrpc":"2.0","id":7,"error":{"code":1}}')
    with pytest.raises(DeribitError, match="not understood"):
        instruments_from_response('{"jsonrpc":"2.0","id":7,"result":[{"kind":"option"}]}')


# ------------------------------------------------------------------------------- property

_TICKER_DATA = json.loads(single("deribit_ws_ticker_100ms.json"))["params"]["data"]
_GOOD = [
    note("ticker.BTC-26JUN26-100000-C.100ms", OPTION_TICKER),
    single("deribit_ws_ticker_100ms.json"),
    single("deribit_ws_trades_100ms.json"),
    single("deribit_ws_test_request.json"),
    book("snapshot", 10, bids=[("new", 0.08, 5.0)]),
    book("change", 12, 10, bids=[("delete", 0.08, 0)]),
    note("trades.option.BTC.100ms", OPTION_TRADES),
    note("deribit_price_index.btc_usd", {"timestamp": 1535098298227, "price": 6521.17, "index_name": "btc_usd"}),
    '{"jsonrpc":"2.0","id":1,"result":"ok"}',
]
_BAD_VALUES = [None, True, "x", "", -1, 0, -0.0, 1e308, -1e308, 2**63, [], {}, [1, 2], "NaN", "Infinity",
               "-inf", 1e-320]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated(draw):
    """A good message with one field of its data changed, removed, or its text cut short."""
    msg = json.loads(draw(st.sampled_from(_GOOD[:8])))
    action = draw(st.sampled_from(["set", "drop", "truncate", "nan"]))
    if action == "truncate":
        text = json.dumps(msg)
        return text[: draw(st.integers(0, len(text) - 1))]
    target = msg["params"] if "params" in msg else msg
    data = target.get("data", target)
    if isinstance(data, list):
        data = data[0]
    if not isinstance(data, dict) or not data:
        return json.dumps(msg)
    key = draw(st.sampled_from(sorted(data)))
    if action == "drop":
        del data[key]
    elif action == "nan":
        data[key] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf")]))
        return json.dumps(msg)  # Python writes NaN/Infinity, which strict JSON parsers refuse
    else:
        data[key] = draw(st.sampled_from(_BAD_VALUES) | json_values)
    return json.dumps(msg)


fuzzed = st.one_of(
    st.sampled_from(_GOOD),
    mutated(),
    st.text(max_size=30),
    json_values.map(json.dumps),
    st.tuples(st.sampled_from(["ticker.BTC-PERPETUAL.100ms", "ticker.BTC-26JUN26-100000-C.100ms", CHANNEL,
                               "book.BTC-PERPETUAL.none.10.100ms", "trades.option.BTC.100ms",
                               "deribit_price_index.btc_usd", "heartbeat", "zzz", ""]),
              json_values | st.fixed_dictionaries({}, optional={
                  k: json_values | st.sampled_from(_BAD_VALUES)
                  for k in ("type", "timestamp", "change_id", "prev_change_id", "bids", "asks", "instrument_name",
                            "best_bid_price", "best_bid_amount", "mark_price", "mark_iv", "price", "index_name")}))
    .map(lambda cd: note(*cd)),
)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(fuzzed, max_size=20))
def test_property_every_message_is_accounted_for_and_nothing_raises(messages):
    p = DeribitProtocol(channels=[CHANNEL])
    adapter = DeribitAdapter(p)
    nb = run(*messages, adapter=adapter)
    assert nb.n_messages == len(messages)
    assert accounted(nb) == len(messages)
    assert nb.n_messages == nb.data_messages + nb.n_control + nb.n_ignored + len(nb.quarantine)
    for name, batch in nb.data().items():
        assert len(batch.raw) == len(batch), name
        assert set(batch.raw.tolist()) <= set(messages)
    for r in nb.quarantine:
        assert r.reason.startswith("deribit "), r.reason
        assert r.raw in messages
    for m in messages:  # the protocol's reply path never raises either
        p.on_message(m)
