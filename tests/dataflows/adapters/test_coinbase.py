"""Tests of the Coinbase adapter (Exchange feed and Advanced Trade) against recorded real traffic
and hand-written wire messages from the documentation."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.adapters.coinbase import (
    ADVANCED_KEY,
    CoinbaseAdapter,
    CoinbaseProtocol,
    subscribe_messages,
)
from dataflows.replay import read_capture
from models.records import BookUpdateBatch, NormalizedBatch, QuoteBatch, RawBatch, TradeBatch
from tests.conftest import RECORDED_DIR, make_raw

CAPTURE = "COINBASE.ws.28.0"
T0 = 1_700_000_000.0

# --- Exchange feed, from the channel documentation (fields as documented, values made up)
MATCH = {"type": "match", "trade_id": 10, "sequence": 50, "maker_order_id": "ac928c66",
         "taker_order_id": "132fb6ae", "time": "2014-11-07T08:19:27.028459Z",
         "product_id": "BTC-USD", "size": "5.23512", "price": "400.23", "side": "sell"}
TICKER = {"type": "ticker", "sequence": 37475248783, "product_id": "ETH-USD", "price": "1285.22",
          "open_24h": "1310.79", "volume_24h": "245532.79269678", "low_24h": "1280.52",
          "high_24h": "1313.8", "volume_30d": "9788783.60117027", "best_bid": "1285.04",
          "best_bid_size": "0.46688654", "best_ask": "1285.27", "best_ask_size": "1.56637040",
          "side": "buy", "time": "2022-10-19T23:28:22.061769Z", "trade_id": 370843401,
          "last_size": "11.4396987"}
SNAPSHOT = {"type": "snapshot", "product_id": "BTC-USD", "bids": [["10101.10", "0.45054140"]],
            "asks": [["10102.55", "0.57753524"], ["10102.60", "1.5"]]}
L2UPDATE = {"type": "l2update", "product_id": "BTC-USD", "time": "2019-08-14T20:42:27.265Z",
            "changes": [["buy", "10101.80000000", "0.162567"], ["sell", "10102.55", "0.0"]]}
HEARTBEAT = {"type": "heartbeat", "sequence": 90, "last_trade_id": 20, "product_id": "BTC-USD",
             "time": "2014-11-07T08:19:28.464459Z"}
SUBSCRIPTIONS = {"type": "subscriptions",
                 "channels": [{"name": "ticker", "product_ids": ["BTC-USD"]}]}
ERROR = {"type": "error", "message": "Failed to subscribe", "reason": "ETH-XYZ is not a valid product"}

# --- Advanced Trade, from the WebSocket channels documentation
ADV_TICKER = {"channel": "ticker", "client_id": "", "timestamp": "2023-02-09T20:30:37.167359596Z",
              "sequence_num": 0, "events": [{"type": "snapshot", "tickers": [{
                  "type": "ticker", "product_id": "BTC-USD", "price": "21932.98",
                  "volume_24_h": "16038.28770938", "low_24_h": "21835.29", "high_24_h": "23011.18",
                  "low_52_w": "15460", "high_52_w": "48240", "price_percent_chg_24_h": "-4.15775596",
                  "best_bid": "21931.98", "best_bid_quantity": "8000.21",
                  "best_ask": "21933.98", "best_ask_quantity": "8038.07770938"}]}]}
ADV_TRADES = {"channel": "market_trades", "client_id": "", "timestamp": "2023-02-09T20:19:35.39625135Z",
              "sequence_num": 1, "events": [{"type": "update", "trades": [
                  {"trade_id": "000000000", "product_id": "ETH-USD", "price": "1260.01",
                   "size": "0.3", "side": "BUY", "time": "2019-08-14T20:42:27.265Z"},
                  {"trade_id": "000000001", "product_id": "ETH-USD", "price": "1260.00",
                   "size": "1.5", "side": "SELL", "time": "2019-08-14T20:42:27.300Z"}]}]}
ADV_L2 = {"channel": "l2_data", "client_id": "", "timestamp": "2023-02-09T20:32:50.714964855Z",
          "sequence_num": 2, "events": [{"type": "snapshot", "product_id": "BTC-USD", "updates": [
              {"side": "bid", "event_time": "1970-01-01T00:00:00Z", "price_level": "21921.73",
               "new_quantity": "0.06317902"},
              {"side": "offer", "event_time": "1970-01-01T00:00:00Z", "price_level": "21921.3",
               "new_quantity": "0.02"}]}]}
ADV_SUBSCRIPTIONS = {"channel": "subscriptions", "client_id": "", "timestamp": "2023-02-09T20:32:50Z",
                     "sequence_num": 3, "events": [{"subscriptions": {"ticker": ["BTC-USD"]}}]}
ADV_HEARTBEATS = {"channel": "heartbeats", "client_id": "", "timestamp": "2023-06-23T20:31:26.122969572Z",
                  "sequence_num": 4, "events": [{"current_time": "2023-06-23 20:31:56.121961769 +0000 UTC m=+91717.525857105",
                                                 "heartbeat_counter": "3049"}]}
ADV_CANDLES = {"channel": "candles", "client_id": "", "timestamp": "2023-06-09T20:19:35.39625135Z",
               "sequence_num": 5, "events": [{"type": "snapshot", "candles": [{
                   "start": "1688998200", "high": "1867.72", "low": "1865.63", "open": "1867.38",
                   "close": "1866.81", "volume": "0.20269406", "product_id": "ETH-USD"}]}]}


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def run(adapter: CoinbaseAdapter, *messages, t0: float = T0) -> NormalizedBatch:
    texts = [m if isinstance(m, str) else dumps(m) for m in messages]
    return adapter.normalize(make_raw("coinbase", [(t0 + i * 0.01, m) for i, m in enumerate(texts)]))


def one(*messages, t0: float = T0) -> NormalizedBatch:
    return run(CoinbaseAdapter(), *messages, t0=t0)


def adv(base: dict, seq: int, **changes) -> dict:
    return {**base, "sequence_num": seq, **changes}


# ------------------------------------------------------------------------ recorded traffic


@pytest.fixture(scope="module")
def capture_path():
    path = RECORDED_DIR / CAPTURE
    if not path.is_file():
        pytest.fail(f"recorded Coinbase capture not found at {path}")
    return path


@pytest.fixture(scope="module")
def lines(capture_path):
    return list(read_capture(capture_path))


@pytest.fixture(scope="module")
def raw_msgs(lines):
    """The recorded messages parsed independently of the adapter, in file order."""
    return [json.loads(line.message) for line in lines]


def normalize_in_batches(adapter: CoinbaseAdapter, lines, size: int) -> list[NormalizedBatch]:
    out = []
    for i in range(0, len(lines), size):
        chunk = lines[i:i + size]
        raw = RawBatch("coinbase", np.array([l.receive_ts for l in chunk]), [l.message for l in chunk])
        out.append(adapter.normalize(raw))
    return out


@pytest.fixture(scope="module")
def recorded(lines):
    """The capture through ONE adapter in batches of 1,000 (state carries across batches)."""
    adapter = CoinbaseAdapter()
    batches = normalize_in_batches(adapter, lines, 1000)
    assert len(batches) == 6
    return adapter, batches


def total(batches, name):
    cls = {"trades": TradeBatch, "quotes": QuoteBatch, "book_updates": BookUpdateBatch}[name]
    return cls.concat([getattr(b, name) for b in batches])


def test_recorded_counts_match_an_independent_parse(recorded, raw_msgs):
    _, batches = recorded
    kinds = Counter(m["type"] for m in raw_msgs)
    # what the capture holds (the first 60% of a 10-product capture of level2 + ticker + matches)
    assert kinds == {"l2update": 5862, "ticker": 46, "match": 36, "snapshot": 10, "last_match": 10,
                     "subscriptions": 3}
    n_levels = sum(len(m["bids"]) + len(m["asks"]) for m in raw_msgs if m["type"] == "snapshot")
    n_changes = sum(len(m["changes"]) for m in raw_msgs if m["type"] == "l2update")
    assert (n_levels, n_changes) == (8362, 5862)

    assert sum(b.n_messages for b in batches) == len(raw_msgs) == 5967
    assert len(total(batches, "trades")) == kinds["match"] + kinds["last_match"] == 46
    assert len(total(batches, "quotes")) == kinds["ticker"] == 46
    assert len(total(batches, "book_updates")) == n_levels + n_changes == 14224
    # control = subscriptions + heartbeats; the capture subscribed no heartbeat channel
    assert sum(b.n_control for b in batches) == kinds["subscriptions"] + kinds["heartbeat"] == 3
    assert sum(b.n_ignored for b in batches) == 0
    assert [q for b in batches for q in b.quarantine] == []
    assert [g for b in batches for g in b.gaps] == []  # see test_recorded_sequence_findings
    data = sum(b.data_messages for b in batches)
    assert data == 46 + 46 + 10 + 5862
    assert data + 3 == 5967


def test_recorded_batch_size_does_not_change_the_result(lines, recorded):
    _, batches = recorded
    other = normalize_in_batches(CoinbaseAdapter(), lines, 7)
    for name in ("trades", "quotes", "book_updates"):
        a, b = total(batches, name), total(other, name)
        # msg_index numbers messages within their NormalizedBatch: it depends on the batching
        for col in (c for c in a.COLUMNS if c != "msg_index"):
            np.testing.assert_array_equal(getattr(a, col), getattr(b, col), err_msg=f"{name}.{col}")
    assert sum(len(b.gaps) + len(b.quarantine) for b in other) == 0


def test_recorded_sequence_findings(raw_msgs, recorded):
    """What is normal on these channels, established from the raw messages themselves.

    A ticker repeats the sequence of the match it reports, and matches skip sequence numbers
    (the numbers of the full feed's other events) while their trade ids are contiguous. So one
    sequence tracker per product over all channels would quarantine 46 real messages as stale
    and log 36 false gaps (6,708 'missing' numbers); the adapter checks sequences per channel and
    counts lost trades by trade id: no gap, nothing quarantined."""
    adapter, _ = recorded
    with_seq = [m for m in raw_msgs if "sequence" in m]
    assert {m["type"] for m in with_seq} == {"ticker", "match", "last_match"}  # l2update: none
    trades = {(m["product_id"], m["trade_id"]): m for m in raw_msgs if m["type"] in ("match", "last_match")}
    tickers = [m for m in raw_msgs if m["type"] == "ticker"]
    assert all(trades[(t["product_id"], t["trade_id"])]["sequence"] == t["sequence"] for t in tickers)

    last_seq, last_tid, skips, skipped_numbers, id_holes = {}, {}, 0, 0, 0
    for m in raw_msgs:
        if m["type"] not in ("match", "last_match"):
            continue
        p = m["product_id"]
        if p in last_seq:
            assert m["sequence"] > last_seq[p]
            if m["sequence"] > last_seq[p] + 1:
                skips += 1
                skipped_numbers += m["sequence"] - last_seq[p] - 1
            id_holes += m["trade_id"] != last_tid[p] + 1
        last_seq[p], last_tid[p] = m["sequence"], m["trade_id"]
    assert (skips, skipped_numbers, id_holes) == (36, 6708, 0)

    single, stale, gaps = {}, 0, 0
    for m in with_seq:
        p, s = m["product_id"], m["sequence"]
        if p in single and s <= single[p]:
            stale += 1
            continue
        gaps += p in single and s > single[p] + 1
        single[p] = s
    assert (stale, gaps) == (46, 36)

    # the adapter's trackers end where the recording does
    assert adapter.trade_ids.last("SKL-USD") == 1568284
    assert adapter.match_sequences.last("SKL-USD") == 201392111
    assert adapter.ticker_sequences.last("NMR-EUR") == 471057306


def test_recorded_first_trades_invert_the_maker_side(recorded, raw_msgs):
    _, batches = recorded
    t = total(batches, "trades")
    # row 0: the first last_match, BAND-GBP trade 881613, maker side "sell" -> the taker bought
    assert (t.exchange[0], t.instrument[0], t.asset[0], t.quote_ccy[0]) == ("coinbase", "BAND-GBP", "BAND", "GBP")
    assert (t.trade_id[0], t.price[0], t.size_coin[0], t.side[0]) == ("881613", 14.7775, 0.04, "buy")
    assert t.event_ts[0] == pytest.approx(1618677810.244075, abs=1e-6)
    assert t.receive_ts[0] == 1618677817.079762
    assert '"type":"last_match"' in t.raw[0]
    # the first "match": SKL-BTC trade 280232, side "sell" -> "buy"
    i = next(i for i, r in enumerate(t.raw) if '"type":"match"' in r)
    assert (t.instrument[i], t.asset[i], t.quote_ccy[i]) == ("SKL-BTC", "SKL", "BTC")
    assert (t.trade_id[i], t.price[i], t.size_coin[i], t.side[i]) == ("280232", 0.00001305, 985.0, "buy")
    assert t.event_ts[i] == pytest.approx(1618677817.089723, abs=1e-6)
    maker = Counter(m["side"] for m in raw_msgs if m["type"] in ("match", "last_match"))
    assert maker == {"sell": 35, "buy": 11}
    assert Counter(t.side.tolist()) == {"buy": maker["sell"], "sell": maker["buy"]}


def test_recorded_taker_sides_agree_with_the_tickers(recorded, raw_msgs):
    """The ticker's side is the taker's: every trade row's side equals its ticker's."""
    _, batches = recorded
    t = total(batches, "trades")
    ticker_side = {(m["product_id"], str(m["trade_id"])): m["side"] for m in raw_msgs if m["type"] == "ticker"}
    pairs = [(ticker_side[(p, i)], s) for p, i, s in zip(t.instrument, t.trade_id, t.side)]
    assert len(pairs) == 46
    assert all(a == b for a, b in pairs)


def test_recorded_quotes(recorded):
    _, batches = recorded
    q = total(batches, "quotes")
    assert (q.instrument[0], q.bid[0], q.ask[0]) == ("BAND-GBP", 14.7550, 14.8060)
    assert q.event_ts[0] == pytest.approx(1618677810.244075, abs=1e-6)
    assert q.receive_ts[0] == 1618677817.079694
    # tickers of 2021 carry no sizes
    assert np.isnan(q.bid_size_coin).all() and np.isnan(q.ask_size_coin).all()
    assert len(set(q.instrument.tolist())) == 10


def test_recorded_book_rows(recorded, raw_msgs):
    _, batches = recorded
    bk = total(batches, "book_updates")
    snap = bk.take(bk.is_snapshot)
    assert len(snap) == 8362 and (snap.sequence == -1).all()
    # a snapshot has no time in the classic feed: the receive time stands in
    np.testing.assert_array_equal(snap.event_ts, snap.receive_ts)
    first = raw_msgs[2]
    assert first["type"] == "snapshot" and first["product_id"] == "BAND-GBP"
    band = snap.take(snap.instrument == "BAND-GBP")
    assert Counter(band.side.tolist()) == {"bid": len(first["bids"]), "ask": len(first["asks"])} == {"bid": 152, "ask": 166}
    asks = band.take(band.side == "ask")
    assert (asks.price[0], asks.size_coin[0]) == (14.8024, 12.77)
    assert set(band.asset.tolist()) == {"BAND"}

    upd = bk.take(~bk.is_snapshot)
    sides = Counter(c[0] for m in raw_msgs if m["type"] == "l2update" for c in m["changes"])
    assert Counter(upd.side.tolist()) == {"bid": sides["buy"], "ask": sides["sell"]} == {"bid": 3446, "ask": 2416}
    assert (upd.sequence == -1).all()
    assert (upd.instrument[0], upd.side[0], upd.price[0], upd.size_coin[0]) == ("SKL-BTC", "ask", 0.00001306, 660.5)
    assert upd.event_ts[0] == pytest.approx(1618677817.075687, abs=1e-6)


# ------------------------------------------------------------------------ Exchange, hand-written


def test_match_is_a_trade_with_the_taker_side():
    nb = one(MATCH, {**MATCH, "type": "last_match", "product_id": "ETH-USD", "side": "buy"})
    t = nb.trades
    assert nb.quarantine == () and len(t) == 2
    assert (t.instrument[0], t.asset[0], t.quote_ccy[0]) == ("BTC-USD", "BTC", "USD")
    assert (t.trade_id[0], t.price[0], t.size_coin[0], t.side[0]) == ("10", 400.23, 5.23512, "buy")
    assert t.event_ts[0] == pytest.approx(1415348367.028459, abs=1e-6)
    assert t.side[1] == "sell"  # maker bought: the taker sold


def test_ticker_with_sizes_and_without_time():
    nb = one(TICKER, {k: v for k, v in TICKER.items() if k not in ("time", "best_bid_size")}
             | {"sequence": TICKER["sequence"] + 5})
    q = nb.quotes
    assert nb.quarantine == () and len(q) == 2
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0], q.ask_size_coin[0]) == (1285.04, 0.46688654, 1285.27, 1.5663704)
    assert q.event_ts[0] == pytest.approx(1666222102.061769, abs=1e-6)
    assert math.isnan(q.bid_size_coin[1]) and q.ask_size_coin[1] == 1.5663704
    assert q.event_ts[1] == q.receive_ts[1] == T0 + 0.01


def test_snapshot_and_l2update_rows():
    nb = one(SNAPSHOT, L2UPDATE)
    bk = nb.book_updates
    assert nb.quarantine == () and len(bk) == 5
    assert bk.is_snapshot.tolist() == [True, True, True, False, False]
    assert bk.side.tolist() == ["bid", "ask", "ask", "bid", "ask"]
    assert bk.price.tolist() == [10101.10, 10102.55, 10102.60, 10101.80, 10102.55]
    assert bk.size_coin.tolist() == [0.4505414, 0.57753524, 1.5, 0.162567, 0.0]
    assert (bk.sequence == -1).all() and set(bk.asset.tolist()) == {"BTC"}
    assert bk.event_ts[0] == T0  # snapshot: receive time
    assert bk.event_ts[3] == pytest.approx(1565815347.265, abs=1e-6)
    assert nb.data_messages == 2


def test_control_and_ignored_messages():
    adapter = CoinbaseAdapter()
    nb = run(adapter, SUBSCRIPTIONS, HEARTBEAT, ERROR,
             {"type": "status", "products": [], "currencies": []},
             {"type": "received", "product_id": "BTC-USD", "sequence": 1},
             {"type": "done", "product_id": "BTC-USD"})
    assert (nb.n_control, nb.n_ignored, len(nb.quarantine), nb.data_messages) == (3, 3, 0, 0)
    assert nb.gaps == ()  # no trade seen yet for BTC-USD: nothing to verify
    assert list(adapter.errors) == [(T0 + 0.02, "Failed to subscribe", "ETH-XYZ is not a valid product")]


def test_trade_id_skip_is_a_gap_and_the_trade_is_kept():
    adapter = CoinbaseAdapter()
    first = run(adapter, MATCH)
    nb = run(adapter, {**MATCH, "trade_id": 14, "sequence": 90, "time": "2014-11-07T08:19:30Z"},
             {**MATCH, "trade_id": 15, "sequence": 95, "time": "2014-11-07T08:19:31Z"}, t0=T0 + 1)
    assert first.gaps == () and len(nb.trades) == 2 and nb.quarantine == ()
    (gap,) = nb.gaps
    assert (gap.exchange, gap.instrument, gap.kind, gap.missing) == ("coinbase", "BTC-USD", "sequence", 3)
    assert gap.detail == "trade ids 11..13 missing"
    assert gap.start_ts == pytest.approx(1415348367.028459) and gap.end_ts == 1415348370.0
    # a sequence skip alone (other events of the full feed) is normal
    assert run(adapter, {**MATCH, "trade_id": 16, "sequence": 1000}).gaps == ()


def test_stale_match_is_quarantined_and_does_not_move_the_trackers():
    adapter = CoinbaseAdapter()
    run(adapter, {**MATCH, "trade_id": 10, "sequence": 50})
    nb = run(adapter, {**MATCH, "trade_id": 9, "sequence": 49},  # older
             {**MATCH, "trade_id": 10, "sequence": 50},  # duplicate
             {**MATCH, "trade_id": 11, "sequence": 50},  # same sequence
             {**MATCH, "trade_id": 10, "sequence": 51})  # same trade id
    assert len(nb.trades) == 0 and nb.gaps == ()
    reasons = [q.reason for q in nb.quarantine]
    assert reasons == [
        "coinbase match: stale sequence 49 for BTC-USD (last match 50)",
        "coinbase match: stale sequence 50 for BTC-USD (last match 50)",
        "coinbase match: stale sequence 50 for BTC-USD (last match 50)",
        "coinbase match: stale trade_id 10 for BTC-USD (last 10)",
    ]
    assert (adapter.trade_ids.last("BTC-USD"), adapter.match_sequences.last("BTC-USD")) == (10, 50)
    nb = run(adapter, {**MATCH, "trade_id": 11, "sequence": 52})
    assert len(nb.trades) == 1 and nb.gaps == ()


def test_stale_ticker_is_quarantined_and_a_reconnect_last_match_too():
    adapter = CoinbaseAdapter()
    nb = run(adapter, TICKER, TICKER, {**TICKER, "sequence": TICKER["sequence"] + 40},
             MATCH, {**MATCH, "type": "last_match"})
    assert len(nb.quotes) == 2 and len(nb.trades) == 1
    assert [q.reason for q in nb.quarantine] == [
        "coinbase ticker: stale sequence 37475248783 for ETH-USD (last 37475248783)",
        "coinbase last_match: stale sequence 50 for BTC-USD (last match 50)",
    ]
    assert nb.quarantine[0].raw == dumps(TICKER)


def test_heartbeat_reveals_lost_trades_once():
    adapter = CoinbaseAdapter()
    run(adapter, MATCH)  # trade 10
    nb = run(adapter, HEARTBEAT, {**HEARTBEAT, "sequence": 91},  # last_trade_id 20
             {**MATCH, "trade_id": 21, "sequence": 95}, t0=T0 + 5)
    (gap,) = nb.gaps
    assert (gap.instrument, gap.kind, gap.missing) == ("BTC-USD", "sequence", 10)
    assert gap.detail == "heartbeat: trade ids 11..20 were not received"
    assert gap.end_ts == pytest.approx(1415348368.464459)
    assert nb.n_control == 2 and len(nb.trades) == 1 and nb.quarantine == ()
    # an up-to-date heartbeat is just control
    nb = run(adapter, {**HEARTBEAT, "last_trade_id": 21, "sequence": 99})
    assert nb.gaps == () and nb.n_control == 1


def test_a_bad_message_does_not_spoil_its_neighbours():
    nb = one(MATCH, "not json", {**MATCH, "price": "x", "trade_id": 11, "sequence": 51}, SNAPSHOT,
             {**L2UPDATE, "changes": [["buy", "1", "2"], ["hold", "1", "2"]]}, TICKER, SUBSCRIPTIONS)
    assert (len(nb.trades), len(nb.quotes), len(nb.book_updates)) == (1, 1, 3)
    assert (nb.n_control, len(nb.quarantine), nb.data_messages) == (1, 3, 3)
    assert nb.book_updates.is_snapshot.all()  # the bad l2update left no half rows


@pytest.mark.parametrize(
    "text, reason_parts",
    [
        ('{"type": "match", ', ["coinbase", "invalid JSON"]),
        ("", ["invalid JSON"]),
        ("[1, 2]", ["expected a JSON object", "list"]),
        ("{}", ["neither an Exchange feed 'type' nor an Advanced Trade 'channel'"]),
        (dumps({"type": 5}), ["field 'type' is not a string"]),
        (dumps({"type": "l3update"}), ["unknown message type 'l3update'"]),
        (dumps({k: v for k, v in MATCH.items() if k != "price"}), ["match", "missing field 'price'"]),
        (dumps({**MATCH, "side": "BUY"}), ["match", "field 'side' is not 'buy' or 'sell'"]),
        (dumps({**MATCH, "trade_id": "ten"}), ["match", "field 'trade_id' is not an integer"]),
        (dumps({**MATCH, "trade_id": -1}), ["match", "field 'trade_id' is out of range"]),
        (dumps({**MATCH, "sequence": 2**63}), ["match", "field 'sequence' is out of the 64-bit integer range"]),
        (dumps({**MATCH, "time": "yesterday"}), ["match", "time is not an ISO-8601 string"]),
        (dumps({**MATCH, "product_id": ""}), ["match", "field 'product_id' is not a non-empty string"]),
        (dumps({k: v for k, v in TICKER.items() if k != "best_ask"}), ["ticker", "missing field 'best_ask'"]),
        (dumps({**TICKER, "best_bid_size": [1]}), ["ticker", "field 'best_bid_size' is not a number"]),
        (dumps({**SNAPSHOT, "bids": [["1"]]}), ["snapshot", "a book level is not [price, size]"]),
        (dumps({**SNAPSHOT, "asks": None}), ["snapshot", "field 'asks' is not a list of levels"]),
        (dumps({**L2UPDATE, "changes": [["buy", "1"]]}), ["l2update", "a change is not [side, price, size]"]),
        (dumps({**L2UPDATE, "changes": [["bid", "1", "2"]]}), ["l2update", "side is not 'buy' or 'sell'"]),
        (dumps({**HEARTBEAT, "last_trade_id": None}), ["heartbeat", "field 'last_trade_id' is not an integer"]),
        (dumps({"channel": "ticker"}), ["advanced ticker", "missing field 'sequence_num'"]),
        (dumps({"channel": 3}), ["field 'channel' is not a string"]),
        (dumps(adv(ADV_TICKER, 0, channel="level3")), ["unknown Advanced Trade channel 'level3'"]),
        (dumps(adv(ADV_TICKER, 0, timestamp=12)), ["advanced ticker", "time is not an ISO-8601"]),
        (dumps(adv(ADV_TICKER, 0, events={})), ["advanced ticker", "field 'events' is not a list"]),
        (dumps(adv(ADV_TICKER, 0, events=[{"type": "delta", "tickers": []}])),
         ["advanced ticker", "event type is not 'snapshot' or 'update'"]),
        (dumps(adv(ADV_TRADES, 0, events=[{"type": "update", "trades": [
            {**ADV_TRADES["events"][0]["trades"][0], "side": "buy"}]}])),
         ["advanced market_trades", "field 'side' is not 'BUY' or 'SELL'"]),
        (dumps(adv(ADV_TRADES, 0, events=[{"type": "update", "trades": [
            {**ADV_TRADES["events"][0]["trades"][0], "trade_id": None}]}])),
         ["advanced market_trades", "field 'trade_id' is not an id"]),
        (dumps(adv(ADV_L2, 0, events=[{"type": "update", "product_id": "BTC-USD", "updates": [
            {"side": "ask", "price_level": "1", "new_quantity": "1"}]}])),
         ["advanced l2_data", "field 'side' is not 'bid' or 'offer'"]),
    ],
)
def test_malformed_messages_are_quarantined_with_clear_reasons(text, reason_parts):
    nb = one(text, t0=1700000001.5)
    assert nb.n_messages == 1 and len(nb.quarantine) == 1, nb
    rec = nb.quarantine[0]
    assert rec.reason.startswith("coinbase "), rec.reason
    for part in reason_parts:
        assert part in rec.reason, rec.reason
    assert (rec.exchange, rec.receive_ts, rec.raw) == ("coinbase", 1700000001.5, text)
    assert len(nb.trades) == len(nb.quotes) == len(nb.book_updates) == nb.n_control == nb.n_ignored == 0


# ------------------------------------------------------------------------ Advanced Trade


def test_advanced_trade_channels():
    adapter = CoinbaseAdapter()
    nb = run(adapter, ADV_TICKER, ADV_TRADES, ADV_L2, ADV_SUBSCRIPTIONS, ADV_HEARTBEATS, ADV_CANDLES)
    assert (nb.n_control, nb.n_ignored, len(nb.quarantine), nb.gaps) == (2, 1, 0, ())
    q = nb.quotes
    assert len(q) == 1
    assert (q.instrument[0], q.asset[0], q.quote_ccy[0]) == ("BTC-USD", "BTC", "USD")
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0], q.ask_size_coin[0]) == (21931.98, 8000.21, 21933.98, 8038.07770938)
    assert q.event_ts[0] == pytest.approx(1675974637.167359596, abs=1e-6)
    t = nb.trades
    assert t.trade_id.tolist() == ["000000000", "000000001"]
    assert t.side.tolist() == ["sell", "buy"]  # BUY/SELL name the maker: the taker is the other
    assert (t.price[0], t.size_coin[0], t.instrument[0]) == (1260.01, 0.3, "ETH-USD")
    assert t.event_ts[1] == pytest.approx(1565815347.3, abs=1e-6)
    bk = nb.book_updates
    assert bk.side.tolist() == ["bid", "ask"] and bk.is_snapshot.all()
    assert bk.price.tolist() == [21921.73, 21921.3] and bk.size_coin.tolist() == [0.06317902, 0.02]
    assert (bk.sequence == 2).all()
    assert adapter.advanced_sequence.last(ADVANCED_KEY) == 5


def test_advanced_side_convention_can_be_switched():
    adapter = CoinbaseAdapter()
    adapter.advanced_side_is_maker = False
    assert run(adapter, ADV_TRADES).trades.side.tolist() == ["buy", "sell"]


def test_advanced_sequence_gap_stale_and_new_connection():
    adapter = CoinbaseAdapter()
    run(adapter, adv(ADV_HEARTBEATS, 0), adv(ADV_TICKER, 1))
    nb = run(adapter, adv(ADV_TICKER, 5, timestamp="2023-02-09T20:30:40Z"), adv(ADV_TICKER, 5),
             adv(ADV_HEARTBEATS, 3), adv(ADV_TICKER, 6))
    (gap,) = nb.gaps
    assert (gap.instrument, gap.kind, gap.missing, gap.detail) == (ADVANCED_KEY, "sequence", 3, "sequence_num 2..4 missing")
    assert gap.start_ts == pytest.approx(1675974637.167359596) and gap.end_ts == 1675974640.0
    assert len(nb.quotes) == 2
    assert [q.reason for q in nb.quarantine] == [
        "coinbase advanced ticker: stale sequence_num 5 (last 5)",
        "coinbase advanced heartbeats: stale sequence_num 3 (last 5)",
    ]
    # a reconnect starts again at 0: no gap, nothing stale
    nb = run(adapter, adv(ADV_SUBSCRIPTIONS, 0), adv(ADV_TICKER, 1))
    assert nb.gaps == () and nb.quarantine == () and len(nb.quotes) == 1


def test_advanced_malformed_message_does_not_move_the_sequence():
    adapter = CoinbaseAdapter()
    run(adapter, adv(ADV_TICKER, 0))
    bad = adv(ADV_TICKER, 1, events=[{"type": "update", "tickers": [{"product_id": "BTC-USD"}]}])
    nb = run(adapter, bad, adv(ADV_TICKER, 2))
    assert len(nb.quarantine) == 1 and len(nb.quotes) == 1
    # the quarantined message's content is not in the data: its number shows as missing
    (gap,) = nb.gaps
    assert (gap.missing, gap.detail) == (1, "sequence_num 1..1 missing")


def test_advanced_resubscribe_snapshot_skips_trades_already_stored():
    adapter = CoinbaseAdapter()
    trade = ADV_TRADES["events"][0]["trades"][0]
    snap1 = adv(ADV_TRADES, 0, events=[{"type": "snapshot", "trades": [
        {**trade, "trade_id": "102"}, {**trade, "trade_id": "101"}]}])
    upd = adv(ADV_TRADES, 1, events=[{"type": "update", "trades": [{**trade, "trade_id": "103"}]}])
    snap2 = adv(ADV_TRADES, 0, events=[{"type": "snapshot", "trades": [
        {**trade, "trade_id": "104"}, {**trade, "trade_id": "103"}, {**trade, "trade_id": "102"}]}])
    nb = run(adapter, snap1, upd, snap2)
    assert nb.trades.trade_id.tolist() == ["102", "101", "103", "104"]
    assert adapter.duplicate_trades_skipped == 2
    assert nb.quarantine == () and nb.data_messages == 3


def test_advanced_errors_are_control():
    adapter = CoinbaseAdapter()
    nb = run(adapter, {"type": "error", "message": "authentication failure"})
    assert nb.n_control == 1 and adapter.errors[-1][1:] == ("authentication failure", "")


# ------------------------------------------------------------------------------ protocol


def test_exchange_protocol_subscribes_once_for_all_channels():
    p = CoinbaseProtocol("wss://ws-feed.exchange.coinbase.com")
    assert p.api == "exchange" and p.url() == "wss://ws-feed.exchange.coinbase.com"
    (request,) = p.on_open()
    assert json.loads(request) == {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"],
                                   "channels": ["ticker", "matches", "level2_batch", "heartbeat"]}
    assert p.on_open() == [request]  # again after a reconnect
    assert p.on_message(dumps(HEARTBEAT)) == [] and p.outgoing() == []
    assert p.ping_interval_s is None and p.exchange == "coinbase"


def test_advanced_protocol_subscribes_per_channel():
    p = CoinbaseProtocol("wss://advanced-trade-ws.coinbase.com", product_ids=["BTC-USD"])
    assert p.api == "advanced"
    assert [json.loads(r) for r in p.on_open()] == [
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": c}
        for c in ("heartbeats", "ticker", "market_trades")
    ]
    local = CoinbaseProtocol("ws://127.0.0.1:9000", ("ETH-USD",), channels=["level2"], api="advanced")
    assert [json.loads(r)["channel"] for r in local.on_open()] == ["level2"]
    with pytest.raises(ValueError, match="api must be"):
        CoinbaseProtocol("ws://127.0.0.1:9000", api="pro")
    assert json.loads(subscribe_messages(["X-USD"], ["ticker"])[0])["channels"] == ["ticker"]


# ------------------------------------------------------------------------------- property

_GOOD = [dumps(m) for m in (MATCH, TICKER, SNAPSHOT, L2UPDATE, HEARTBEAT, SUBSCRIPTIONS, ERROR,
                            ADV_TICKER, ADV_TRADES, ADV_L2, ADV_SUBSCRIPTIONS, ADV_HEARTBEATS, ADV_CANDLES)]
_BAD = [
    "", "[", "[]", "null", "42", '"x"', "{}", '{"type": null}', '{"channel": null}',
    dumps({**MATCH, "price": "NaN"}), dumps({**MATCH, "price": "-1"}), dumps({**MATCH, "size": "0"}),
    dumps({**MATCH, "price": "1e999"}), dumps({**MATCH, "trade_id": 2**64}),
    dumps({**TICKER, "best_bid": "2000", "best_ask": "1000"}),  # crossed: validation's job
    dumps({**TICKER, "best_bid": "Infinity"}), dumps({**SNAPSHOT, "bids": [["-5", "1"]]}),
    dumps(adv(ADV_L2, 2**63)), dumps(adv(ADV_L2, -1)), dumps(adv(ADV_TRADES, 7, events=[None])),
    '{"type": "match", "price": 1e999}', '{"channel": "ticker", "sequence_num": 1e400}',
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)
_KEYS = ("type", "product_id", "trade_id", "sequence", "price", "size", "side", "time", "best_bid",
         "best_ask", "best_bid_size", "bids", "asks", "changes", "last_trade_id")
fuzzed_exchange = st.fixed_dictionaries(
    {"type": st.sampled_from(["match", "last_match", "ticker", "snapshot", "l2update", "heartbeat",
                              "subscriptions", "error", "status", "zzz"])},
    optional={k: json_values for k in _KEYS[1:]},
)
fuzzed_advanced = st.fixed_dictionaries(
    {"channel": st.sampled_from(["ticker", "market_trades", "l2_data", "heartbeats", "subscriptions",
                                 "candles", "zzz"])},
    optional={"timestamp": st.sampled_from(["2023-02-09T20:30:37.1Z", "x"]) | json_values,
              "sequence_num": st.integers(-3, 12) | json_values,
              "events": st.lists(json_values, max_size=3)},
)


def _mutate(text: str, data) -> str:
    obj = json.loads(text)
    key = data.draw(st.sampled_from(sorted(obj)))
    if data.draw(st.booleans()):
        del obj[key]
    else:
        obj[key] = data.draw(json_values)
    return json.dumps(obj)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_property_every_message_is_accounted_for_and_nothing_raises(data):
    pool = st.one_of(
        st.sampled_from(_GOOD), st.sampled_from(_BAD), st.text(max_size=30),
        json_values.map(json.dumps), fuzzed_exchange.map(json.dumps), fuzzed_advanced.map(json.dumps),
        st.sampled_from(_GOOD).map(lambda t: t[: len(t) // 2]),  # truncated JSON
    )
    messages = data.draw(st.lists(pool, max_size=20))
    messages += [_mutate(data.draw(st.sampled_from(_GOOD)), data) for _ in range(data.draw(st.integers(0, 4)))]
    adapter = CoinbaseAdapter()
    nb = run(adapter, *messages)
    nb2 = run(adapter, *messages)  # the same traffic again: repeats are stale, nothing raises
    for batch in (nb, nb2):
        assert batch.n_messages == len(messages)
        assert batch.data_messages >= 0
        assert batch.data_messages + batch.n_control + batch.n_ignored + len(batch.quarantine) == len(messages)
        for name in ("trades", "quotes", "book_updates"):
            rows = getattr(batch, name)
            assert all(len(getattr(rows, c)) == len(rows) for c in rows.COLUMNS)
            assert all(r in messages for r in rows.raw)
        for r in batch.quarantine:
            assert r.raw in messages and r.reason.startswith("coinbase "), r.reason
        # a message that gave rows is not also quarantined
        row_raws = {r for name in ("trades", "quotes", "book_updates") for r in getattr(batch, name).raw}
        unique = {m for m, c in Counter(messages).items() if c == 1}
        assert not (row_raws & unique & {r.raw for r in batch.quarantine})
