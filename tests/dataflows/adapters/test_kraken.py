"""Tests of the Kraken adapter (websockets v1 and v2) against recorded real traffic and wire
messages written from Kraken's documentation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.adapters.base import FeedProtocol
from dataflows.adapters.kraken import V1_URL, V2_URL, KrakenAdapter, KrakenProtocol
from dataflows.adapters.symbols import split_symbol
from dataflows.replay import read_capture
from models.records import NormalizedBatch, RawBatch
from tests.conftest import RECORDED_DIR, make_raw

FILES = ("KRAKEN.ws.48.0", "KRAKEN.ws.49.0", "KRAKEN.ws.50.0")
BATCH = 1000


def run(*messages: str, adapter: KrakenAdapter | None = None, t0: float = 1700000000.0) -> NormalizedBatch:
    adapter = adapter or KrakenAdapter()
    return adapter.normalize(make_raw("kraken", [(t0 + i * 0.01, m) for i, m in enumerate(messages)]))


def rows(nb: NormalizedBatch) -> int:
    return sum(len(batch) for batch in nb.data().values())


# ------------------------------------------------------------------------ recorded traffic


def _lines(name: str):
    path = RECORDED_DIR / name
    if not path.is_file():
        pytest.fail(f"recorded Kraken capture not found at {path}")
    return list(read_capture(path))


def _replay(name: str) -> tuple[KrakenAdapter, list[NormalizedBatch], list]:
    """The whole file through ONE adapter, in batches of BATCH messages (book state spans batches)."""
    lines = _lines(name)
    adapter = KrakenAdapter()
    out = []
    for i in range(0, len(lines), BATCH):
        chunk = lines[i:i + BATCH]
        out.append(adapter.normalize(RawBatch(
            "kraken", np.array([l.receive_ts for l in chunk]), [l.message for l in chunk])))
    return adapter, out, lines


def _expected(lines) -> dict[str, int]:
    """Counts by plain JSON reading of the capture, independent of the adapter."""
    n = dict(messages=0, trades=0, quotes=0, book=0, snapshot_rows=0, control=0, ignored=0,
             checksums=0, data_messages=0)
    for line in lines:
        n["messages"] += 1
        msg = json.loads(line.message)
        if isinstance(msg, dict):
            assert "event" in msg
            n["control"] += 1
            continue
        channel = msg[-2]
        if channel == "spread" or channel.startswith("ohlc"):
            n["ignored"] += 1
            continue
        n["data_messages"] += 1
        if channel == "trade":
            n["trades"] += len(msg[1])
        elif channel == "ticker":
            n["quotes"] += 1
        else:
            assert channel.startswith("book-")
            for payload in msg[1:-2]:
                for key in ("as", "bs", "a", "b"):
                    n["book"] += len(payload.get(key, []))
                    if key in ("as", "bs"):
                        n["snapshot_rows"] += len(payload.get(key, []))
                n["checksums"] += "c" in payload
    return n


@pytest.fixture(scope="module", params=FILES)
def recorded(request):
    adapter, batches, lines = _replay(request.param)
    return request.param, adapter, batches, lines


def test_recorded_counts_match_an_independent_reading(recorded):
    name, adapter, batches, lines = recorded
    want = _expected(lines)
    got = dict(
        messages=sum(b.n_messages for b in batches),
        trades=sum(len(b.trades) for b in batches),
        quotes=sum(len(b.quotes) for b in batches),
        book=sum(len(b.book_updates) for b in batches),
        snapshot_rows=sum(int(b.book_updates.is_snapshot.sum()) for b in batches),
        control=sum(b.n_control for b in batches),
        ignored=sum(b.n_ignored for b in batches),
        checksums=adapter.checksums_verified,
        data_messages=sum(b.data_messages for b in batches),
    )
    assert got == want
    assert [q for b in batches for q in b.quarantine] == []
    assert [g for b in batches for g in b.gaps] == []
    assert adapter.checksum_mismatches == 0 and adapter.take_resyncs() == []
    for b in batches:
        assert sum(len(x) for x in (b.funding, b.option_tickers, b.index_prices)) == 0


def test_recorded_counts_are_the_known_numbers(recorded):
    """Pinned, so a change in the capture files or in read_capture shows up here too."""
    name, adapter, batches, _ = recorded
    tot = lambda f: sum(f(b) for b in batches)  # noqa: E731
    counts = (tot(lambda b: b.n_messages), tot(lambda b: len(b.trades)), tot(lambda b: len(b.quotes)),
              tot(lambda b: len(b.book_updates)), tot(lambda b: b.n_control), tot(lambda b: b.n_ignored))
    assert counts == {
        "KRAKEN.ws.48.0": (49, 10, 0, 0, 41, 0),
        "KRAKEN.ws.49.0": (60, 0, 18, 0, 42, 0),
        "KRAKEN.ws.50.0": (4321, 0, 0, 11745, 42, 0),
    }[name]


def test_every_recorded_pair_splits_with_xbt_as_btc():
    pairs = set()
    for name in FILES:
        for line in _lines(name):
            msg = json.loads(line.message)
            if isinstance(msg, list):
                pairs.add(msg[-1])
            elif "pair" in msg:
                pairs.add(msg["pair"])
    assert {p: split_symbol(p) for p in sorted(pairs)} == {
        "ADA/XBT": ("ADA", "BTC"), "ETH/CHF": ("ETH", "CHF"), "GRT/ETH": ("GRT", "ETH"),
        "KSM/XBT": ("KSM", "BTC"), "OCEAN/XBT": ("OCEAN", "BTC"), "OMG/USD": ("OMG", "USD"),
        "SC/EUR": ("SC", "EUR"), "WAVES/EUR": ("WAVES", "EUR"), "XBT/CHF": ("BTC", "CHF"),
        "XMR/USD": ("XMR", "USD"),
    }


def _merged(batches, table):
    return type(getattr(batches[0], table)).concat([getattr(b, table) for b in batches])


def test_recorded_trades_spot_check():
    _, batches, _ = _replay("KRAKEN.ws.48.0")
    t = _merged(batches, "trades")
    assert (t.instrument[0], t.asset[0], t.quote_ccy[0]) == ("XMR/USD", "XMR", "USD")
    assert (t.price[0], t.size_coin[0], t.side[0]) == (354.11, 0.89594024, "sell")
    assert t.event_ts[0] == pytest.approx(1618678142.557535, abs=1e-6)
    assert t.receive_ts[0] == 1618678142.592855
    assert t.trade_id[0] == "1618678142.557535-354.11000000-0.89594024-0"
    assert t.exchange[0] == "kraken" and t.raw[0].startswith("[993,")
    assert t.side[1] == "buy"  # "b": the taker bought
    # a message with two trades gives two rows with distinct ids (index in message)
    two = [i for i, r in enumerate(t.raw) if "1618678150.826417" in r]
    assert len(two) == 2
    assert t.trade_id[two[0]].endswith("-0") and t.trade_id[two[1]].endswith("-1")
    assert t.price[two].tolist() == [354.04, 353.81]
    assert len(set(zip(t.instrument.tolist(), t.trade_id.tolist()))) == len(t) == 10
    assert sorted(set(t.instrument.tolist())) == ["SC/EUR", "XMR/USD"]


def test_recorded_quotes_spot_check():
    _, batches, _ = _replay("KRAKEN.ws.49.0")
    q = _merged(batches, "quotes")
    assert (q.instrument[0], q.asset[0], q.quote_ccy[0]) == ("WAVES/EUR", "WAVES", "EUR")
    # sizes are the lot volume (index 2), not the whole-lot count (index 1)
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0], q.ask_size_coin[0]) == (
        13.2329, 185.18432037, 13.2539, 35.72892241)
    np.testing.assert_array_equal(q.event_ts, q.receive_ts)  # v1 tickers carry no time
    ksm = np.flatnonzero(q.instrument == "KSM/XBT")[0]
    assert (q.asset[ksm], q.quote_ccy[ksm], q.bid_size_coin[ksm]) == ("KSM", "BTC", 0.21)
    xbt = np.flatnonzero(q.instrument == "XBT/CHF")[0]
    assert (q.asset[xbt], q.quote_ccy[xbt]) == ("BTC", "CHF")
    assert (q.bid[xbt], q.ask[xbt], q.bid_size_coin[xbt]) == (56119.1, 56218.3, 0.03333108)
    assert q.receive_ts[xbt] == 1618678132.954571
    assert len(set(q.instrument.tolist())) == 10


def test_recorded_book_spot_check():
    _, batches, _ = _replay("KRAKEN.ws.50.0")
    bk = _merged(batches, "book_updates")
    assert (bk.sequence == -1).all()
    first = 0
    assert (bk.instrument[first], bk.asset[first], bk.side[first]) == ("ADA/XBT", "ADA", "ask")
    assert (bk.price[first], bk.size_coin[first], bool(bk.is_snapshot[first])) == (0.0000229, 13355.87450757, True)
    assert bk.event_ts[first] == pytest.approx(1618678123.48157, abs=1e-6)  # the level's own time
    # the one message carrying both an "a" and a "b" dict gives one row per side
    both = [i for i, r in enumerate(bk.raw.tolist()) if '},{"b"' in r]
    assert bk.side[both].tolist() == ["ask", "bid"]
    assert bk.price[both].tolist() == [0.04299, 0.04299]
    assert bk.size_coin[both].tolist() == [364630.28272081, 0.0]  # 0 deletes the bid level
    assert not bk.is_snapshot[both].any()
    assert bk.event_ts[both].tolist() == pytest.approx([1618678145.920470, 1618678145.920708], abs=1e-6)
    assert int(bk.is_snapshot.sum()) == 7473


def test_a_lost_book_update_is_caught_by_the_checksum():
    lines = _lines("KRAKEN.ws.50.0")
    updates = [i for i, l in enumerate(lines) if l.message.startswith("[1840,") and '"c":' in l.message]
    lost = updates[5]  # an OMG/USD update at the top of the book: the next update's checksum fails
    kept = lines[:lost] + lines[lost + 1:]
    adapter = KrakenAdapter()
    nb = adapter.normalize(RawBatch("kraken", np.array([l.receive_ts for l in kept]), [l.message for l in kept]))
    assert nb.quarantine == ()
    assert len(nb.gaps) == 1
    gap = nb.gaps[0]
    assert (gap.exchange, gap.instrument, gap.kind, gap.missing) == ("kraken", "OMG/USD", "book", -1)
    assert gap.start_ts <= lines[lost].receive_ts <= gap.end_ts
    assert "checksum mismatch" in gap.detail
    assert adapter.checksum_mismatches == 1
    assert adapter.take_resyncs() == ["OMG/USD"] and adapter.take_resyncs() == []
    # every other book still verifies; OMG/USD is unverified from the mismatch on (no new snapshot)
    assert adapter.checksums_verified == 4269 - 1 - len(updates[6:])


def test_checksum_verification_can_be_switched_off():
    lines = _lines("KRAKEN.ws.50.0")[:200]
    adapter = KrakenAdapter(verify_checksums=False)
    nb = adapter.normalize(RawBatch("kraken", np.array([l.receive_ts for l in lines]), [l.message for l in lines]))
    assert adapter.checksums_verified == 0 and nb.gaps == () and nb.quarantine == ()


# ------------------------------------------------------------------------ v1 hand-written

V1_BOOK_UPDATE_DOC = (  # docs.kraken.com/api/docs/guides/spot-ws-book-v1
    '[0,{"a":[["0.05120","0.00000500","1582905486.493008"],["0.05275","0.00000500","1582905486.493034"]]},'
    '{"b":[["0.04765","0.00000500","1582905486.493008"],["0.04940","0.00000500","1582905486.493034"]],'
    '"c":"974947235"},"book-1000","BTC/USD"]'
)
V1_TRADE_DOC = (  # docs.kraken.com/api/docs/websocket-v1/trade
    '[0,[["5541.20000","0.15850568","1534614057.321597","s","l",""],'
    '["6060.00000","0.02455000","1534614057.324998","b","l",""]],"trade","XBT/USD"]'
)


def test_v1_doc_trade():
    nb = run(V1_TRADE_DOC)
    t = nb.trades
    assert len(t) == 2 and nb.quarantine == ()
    assert t.instrument.tolist() == ["XBT/USD", "XBT/USD"]
    assert (t.asset[0], t.quote_ccy[0]) == ("BTC", "USD")
    assert t.side.tolist() == ["sell", "buy"]
    assert t.price.tolist() == [5541.2, 6060.0]
    assert t.trade_id.tolist() == ["1534614057.321597-5541.20000-0.15850568-0",
                                   "1534614057.324998-6060.00000-0.02455000-1"]


def test_v1_doc_book_update_without_snapshot_is_passed_on_unverified():
    adapter = KrakenAdapter()
    nb = run(V1_BOOK_UPDATE_DOC, adapter=adapter)
    b = nb.book_updates
    assert nb.quarantine == () and nb.gaps == ()
    assert b.side.tolist() == ["ask", "ask", "bid", "bid"]
    assert b.price.tolist() == [0.0512, 0.05275, 0.04765, 0.0494]
    assert not b.is_snapshot.any() and (b.sequence == -1).all()
    assert (b.asset[0], b.instrument[0]) == ("BTC", "BTC/USD")
    assert adapter.checksums_verified == 0


def test_v1_snapshot_then_updates_with_republish_verify_checksums():
    # Build a small book, compute the checksum the way Kraken documents it, and feed it back.
    import zlib

    snap = [0, {"as": [["0.05005", "0.00000500", "1582905487.684110"],
                       ["0.05010", "0.00000500", "1582905486.985432"]],
                "bs": [["0.04990", "0.00000500", "1582905487.684110"],
                       ["0.04980", "1.00000000", "1582905486.985432"]]}, "book-10", "XBT/USD"]

    def crc(asks, bids):
        part = lambda s: s.replace(".", "").lstrip("0")  # noqa: E731
        text = "".join(part(p) + part(v) for p, v in asks) + "".join(part(p) + part(v) for p, v in bids)
        return str(zlib.crc32(text.encode()))

    # delete the best bid, republish a level ("r"), add an ask
    upd = [0, {"a": [["0.05020", "2.00000000", "1582905488.000001"]]},
           {"b": [["0.04990", "0.00000000", "1582905488.000002"],
                  ["0.04970", "3.00000000", "1582905488.000003", "r"]],
            "c": crc([("0.05005", "0.00000500"), ("0.05010", "0.00000500"), ("0.05020", "2.00000000")],
                     [("0.04980", "1.00000000"), ("0.04970", "3.00000000")])},
           "book-10", "XBT/USD"]
    bad = [0, {"a": [["0.05030", "1.00000000", "1582905489.000000"]], "c": "12345"}, "book-10", "XBT/USD"]
    adapter = KrakenAdapter()
    nb = run(json.dumps(snap), json.dumps(upd), json.dumps(bad), adapter=adapter)
    assert nb.quarantine == ()
    b = nb.book_updates
    assert b.is_snapshot.tolist() == [True] * 4 + [False] * 4
    assert b.size_coin[4:7].tolist() == [2.0, 0.0, 3.0]
    assert b.event_ts[6] == pytest.approx(1582905488.000003, abs=1e-6)
    assert adapter.checksums_verified == 1 and adapter.checksum_mismatches == 1
    assert len(nb.gaps) == 1 and nb.gaps[0].instrument == "XBT/USD" and nb.gaps[0].kind == "book"
    assert (nb.gaps[0].start_ts, nb.gaps[0].end_ts) == pytest.approx((1700000000.01, 1700000000.02))
    assert adapter.take_resyncs() == ["XBT/USD"]


def test_v1_truncates_the_book_to_its_depth():
    """Levels pushed beyond the subscribed depth are dropped (Kraken sends no delete for them).
    Here the 109 ask falls out of a depth-10 book and is cancelled unseen; when the new best ask
    goes, Kraken republishes the 110 ask. A book that kept the stale 109 would fail the checksum."""
    import zlib

    part = lambda s: s.replace(".", "").lstrip("0")  # noqa: E731
    crc = lambda levels: str(zlib.crc32("".join(part(p) + part(v) for p, v in levels).encode()))  # noqa: E731
    bids = [(f"{99 - i}.0", "1.0") for i in range(10)]
    snap = [0, {"as": [[f"{100 + i}.0", "1.0", "1.0"] for i in range(10)],
                "bs": [[p, v, "1.0"] for p, v in bids]}, "book-10", "ETH/USD"]
    ins = [0, {"a": [["99.5", "1.0", "2.0"]],
               "c": crc([("99.5", "1.0")] + [(f"{100 + i}.0", "1.0") for i in range(9)] + bids)},
           "book-10", "ETH/USD"]
    rep = [0, {"a": [["99.5", "0.0", "3.0"], ["110.0", "5.0", "3.0", "r"]],
               "c": crc([(f"{100 + i}.0", "1.0") for i in range(9)] + [("110.0", "5.0")] + bids)},
           "book-10", "ETH/USD"]
    adapter = KrakenAdapter()
    nb = run(*(json.dumps(m) for m in (snap, ins, rep)), adapter=adapter)
    assert nb.quarantine == () and nb.gaps == ()
    assert adapter.checksums_verified == 2
    assert adapter._books["ETH/USD"].asks.prices == [100.0 + i for i in range(9)] + [110.0]


def test_v1_control_and_ignored():
    nb = run(
        '{"event":"heartbeat"}',
        '{"connectionID":18239578009413566319,"event":"systemStatus","status":"online","version":"1.8.3"}',
        '{"channelID":1665,"channelName":"trade","event":"subscriptionStatus","pair":"WAVES/EUR",'
        '"status":"subscribed","subscription":{"name":"trade"}}',
        '{"errorMessage":"Currency pair not supported","event":"subscriptionStatus","pair":"XBT/USDX",'
        '"status":"error","subscription":{"name":"ticker"}}',
        '{"event":"pong","reqid":42}',
        '[0,["5698.40000","5700.00000","1542057299.545897","1.01234567","0.98765432"],"spread","XBT/USD"]',
        '[42,["1542057314.748456","1542057360.435743","3586.70000","3586.70000","3586.60000",'
        '"3586.60000","3586.68894","0.03373000",2],"ohlc-5","XBT/USD"]',
    )
    assert (nb.n_control, nb.n_ignored, len(nb.quarantine), rows(nb)) == (5, 2, 0, 0)


# ------------------------------------------------------------------------ v2 hand-written
# Examples from docs.kraken.com/api/docs/websocket-v2/{ticker,trade,book}.

V2_TICKER = {"channel": "ticker", "type": "snapshot", "data": [{
    "symbol": "ALGO/USD", "bid": 0.10025, "bid_qty": 740.0, "ask": 0.10036, "ask_qty": 1361.44813783,
    "last": 0.10035, "volume": 997038.98383185, "vwap": 0.10148, "low": 0.09979, "high": 0.10285,
    "change": -0.00017, "change_pct": -0.17}]}
V2_TRADE = {"channel": "trade", "type": "update", "data": [{
    "symbol": "MATIC/USD", "side": "sell", "price": 0.5117, "qty": 40.0, "ord_type": "market",
    "trade_id": 4665906, "timestamp": "2023-09-25T07:49:37.708706Z"}]}
V2_BOOK_SNAPSHOT = {"channel": "book", "type": "snapshot", "data": [{
    "symbol": "MATIC/USD",
    "bids": [{"price": 0.5666, "qty": 4831.75496356}, {"price": 0.5665, "qty": 6658.22734739}],
    "asks": [{"price": 0.5668, "qty": 4410.79769741}],
    "checksum": 2439117997}]}
V2_BOOK_UPDATE = {"channel": "book", "type": "update", "data": [{
    "symbol": "MATIC/USD", "bids": [{"price": 0.5657, "qty": 1098.3947558}], "asks": [],
    "checksum": 2114181697, "timestamp": "2023-10-06T17:35:55.440295Z"}]}


def test_v2_ticker_without_timestamp_uses_receive_time():
    nb = run(json.dumps(V2_TICKER), t0=1695632671.5)
    q = nb.quotes
    assert len(q) == 1 and nb.quarantine == ()
    assert (q.instrument[0], q.asset[0], q.quote_ccy[0]) == ("ALGO/USD", "ALGO", "USD")
    assert (q.bid[0], q.bid_size_coin[0], q.ask[0], q.ask_size_coin[0]) == (0.10025, 740.0, 0.10036, 1361.44813783)
    assert q.event_ts[0] == q.receive_ts[0] == 1695632671.5


def test_v2_ticker_with_timestamp_and_btc_symbol():
    data = {**V2_TICKER["data"][0], "symbol": "BTC/USD", "timestamp": "2023-09-25T09:04:31.742648Z"}
    nb = run(json.dumps({"channel": "ticker", "type": "update", "data": [data]}))
    q = nb.quotes
    assert (q.asset[0], q.quote_ccy[0]) == ("BTC", "USD")
    assert q.event_ts[0] == pytest.approx(1695632671.742648, abs=1e-6)


def test_v2_trade():
    nb = run(json.dumps(V2_TRADE))
    t = nb.trades
    assert len(t) == 1 and nb.quarantine == ()
    assert (t.instrument[0], t.asset[0], t.quote_ccy[0]) == ("MATIC/USD", "MATIC", "USD")
    assert (t.price[0], t.size_coin[0], t.side[0], t.trade_id[0]) == (0.5117, 40.0, "sell", "4665906")
    assert t.event_ts[0] == pytest.approx(1695628177.708706, abs=1e-6)


def test_v2_trade_snapshot_with_several_trades():
    two = {**V2_TRADE, "type": "snapshot", "data": [V2_TRADE["data"][0],
                                                  {**V2_TRADE["data"][0], "trade_id": 4665907, "side": "buy"}]}
    nb = run(json.dumps(two))
    assert nb.trades.trade_id.tolist() == ["4665906", "4665907"]
    assert nb.trades.side.tolist() == ["sell", "buy"]


def test_v2_book_snapshot_and_update():
    nb = run(json.dumps(V2_BOOK_SNAPSHOT), json.dumps(V2_BOOK_UPDATE), t0=1696613755.0)
    b = nb.book_updates
    assert nb.quarantine == () and nb.gaps == ()
    assert b.side.tolist() == ["bid", "bid", "ask", "bid"]
    assert b.price.tolist() == [0.5666, 0.5665, 0.5668, 0.5657]
    assert b.is_snapshot.tolist() == [True, True, True, False]
    assert (b.sequence == -1).all() and (b.asset == "MATIC").all()
    assert b.event_ts[0] == 1696613755.0  # snapshot without a timestamp: receive time
    assert b.event_ts[3] == pytest.approx(1696613755.440295, abs=1e-6)


def test_v2_control_and_ignored():
    nb = run(
        '{"channel":"heartbeat"}',
        '{"channel":"status","data":[{"api_version":"v2","connection_id":12393906104898154338,'
        '"system":"online","version":"2.0.0"}],"type":"update"}',
        '{"method":"subscribe","result":{"channel":"ticker","snapshot":true,"symbol":"ALGO/USD"},'
        '"success":true,"time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}',
        '{"error":"Currency pair not supported","method":"subscribe","success":false,'
        '"time_in":"2023-09-25T09:04:31.742599Z","time_out":"2023-09-25T09:04:31.742648Z"}',
        '{"method":"pong","req_id":101,"time_in":"2023-09-24T14:10:23.799685Z","time_out":"2023-09-24T14:10:23.799703Z"}',
        '{"channel":"ohlc","type":"update","data":[{"symbol":"MATIC/USD","open":0.5624,"high":0.5628,'
        '"low":0.5622,"close":0.5627,"trades":12,"volume":30927.68066226,"vwap":0.5626,'
        '"interval_begin":"2023-10-04T16:25:00.000000000Z","interval":5,"timestamp":"2023-10-04T16:30:00.000000Z"}]}',
        '{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[]}}',
    )
    assert (nb.n_control, nb.n_ignored, len(nb.quarantine), rows(nb)) == (5, 2, 0, 0)


# ------------------------------------------------------------------------ malformed


@pytest.mark.parametrize(
    "text, reason_part",
    [
        ("", "invalid JSON"),
        ('{"channel": "ticker"', "invalid JSON"),
        ("42", "expected a JSON object or array"),
        ("{}", "unrecognized message"),
        ('{"event": "subscribed-ish"}', "unknown v1 event"),
        ('{"channel": "executions"}', "unknown v2 channel"),
        ("[1, 2, 3]", "v1 array of 3 elements"),
        ('[1, [], "nope", "XBT/USD"]', "unknown v1 channel"),
        ('["x", [], "trade", "XBT/USD"]', "channelID is not an integer"),
        ('[1, [["1.0","2.0","3.0","x","l",""]], "trade", "XBT/USD"]', "side is not 'b' or 's'"),
        ('[1, [["abc","2.0","3.0","b","l",""]], "trade", "XBT/USD"]', "price is not a number"),
        ('[1, [["1.0","2.0"]], "trade", "XBT/USD"]', "a trade is not"),
        ('[1, [], "trade", "XBT/USD"]', "not a non-empty list of trades"),
        ('[1, [["1.0","2.0","3.0","b","l",""]], "trade", 7]', "pair is not a non-empty string"),
        ('[1, {"a":["1.0",1,"1.0"]}, "ticker", "XBT/USD"]', "missing field 'b'"),
        ('[1, {"a":["1.0",1,"1.0"],"b":["1.0",1]}, "ticker", "XBT/USD"]', "field 'b' is not [price"),
        ('[1, {"a":[["1.0","2.0"]]}, "book-10", "XBT/USD"]', "level time missing"),
        ('[1, {"a":[["NaN","2.0","3.0"]]}, "book-10", "XBT/USD"]', "price is not a finite number"),
        ('[1, {"a":[["1.0","inf","3.0"]]}, "book-10", "XBT/USD"]', "volume is not a finite number"),
        ('[1, {"a":[["1.0","2.0","3.0"]],"c":"-1"}, "book-10", "XBT/USD"]', "checksum"),
        ('[1, {"x":[]}, "book-10", "XBT/USD"]', "none of 'as', 'bs', 'a', 'b'"),
        ('[1, {"as":[]}, {"a":[]}, "book-10", "XBT/USD"]', "snapshot and update"),
        ('[1, {"a":[]}, "book-x", "XBT/USD"]', "unknown v1 channel"),
        (json.dumps({**V2_TRADE, "data": [{**V2_TRADE["data"][0], "side": "b"}]}), "'side' is not buy or sell"),
        (json.dumps({**V2_TRADE, "data": [{**V2_TRADE["data"][0], "trade_id": None}]}), "'trade_id' is not an id"),
        (json.dumps({**V2_TRADE, "data": [{**V2_TRADE["data"][0], "timestamp": "yesterday"}]}), "not an ISO-8601"),
        (json.dumps({**V2_TICKER, "data": [{**V2_TICKER["data"][0], "bid": None}]}), "field 'bid' is not a number"),
        (json.dumps({**V2_TICKER, "data": []}), "not a non-empty list"),
        (json.dumps({**V2_TICKER, "data": [5]}), "not an object"),
        (json.dumps({**V2_BOOK_SNAPSHOT, "type": "delta"}), "not snapshot or update"),
        (json.dumps({**V2_BOOK_UPDATE, "data": [{"symbol": "MATIC/USD", "bids": [[0.5, 1.0]]}]}), "not {price, qty}"),
    ],
)
def test_malformed_messages_are_quarantined_with_clear_reasons(text, reason_part):
    nb = run(text, t0=1700000001.5)
    assert nb.n_messages == 1 and len(nb.quarantine) == 1, nb
    rec = nb.quarantine[0]
    assert rec.reason.startswith("kraken ") and reason_part in rec.reason, rec.reason
    assert "adapter error" not in rec.reason
    assert (rec.exchange, rec.receive_ts, rec.raw) == ("kraken", 1700000001.5, text)
    assert rows(nb) == nb.n_control == nb.n_ignored == 0


def test_a_bad_message_rolls_back_and_does_not_touch_book_state():
    adapter = KrakenAdapter()
    snap = '[1, {"as":[["2.0","1.0","1.0"]],"bs":[["1.0","1.0","1.0"]]}, "book-10", "XBT/USD"]'
    half_bad = '[1, {"a":[["1.5","1.0","2.0"]]}, {"b":[["oops","1.0","2.0"]]}, "book-10", "XBT/USD"]'
    nb = run(snap, half_bad, V1_TRADE_DOC, adapter=adapter)
    assert len(nb.quarantine) == 1 and len(nb.book_updates) == 2 and len(nb.trades) == 2
    book = adapter._books["XBT/USD"]
    assert book.asks.prices == [2.0] and book.bids.prices == [1.0]


# ------------------------------------------------------------------------ protocol


def test_protocol_v2_subscriptions():
    p = KrakenProtocol(V2_URL)
    assert isinstance(p, FeedProtocol) and p.exchange == "kraken" and p.url() == V2_URL
    assert [json.loads(m) for m in p.on_open()] == [
        {"method": "subscribe", "params": {"channel": "ticker", "symbol": ["BTC/USD", "ETH/USD"]}},
        {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"]}},
    ]
    assert p.on_message('{"channel":"heartbeat"}') == [] and p.outgoing() == []


def test_protocol_v1_subscriptions_and_book_resubscribe():
    p = KrakenProtocol(V1_URL, pairs=("BTC/USD", "ETH/XBT"), version=1, channels=("ticker", "trade", "book"),
                       book_depth=100)
    assert [json.loads(m) for m in p.on_open()] == [
        {"event": "subscribe", "pair": ["XBT/USD", "ETH/XBT"], "subscription": {"name": "ticker"}},
        {"event": "subscribe", "pair": ["XBT/USD", "ETH/XBT"], "subscription": {"name": "trade"}},
        {"event": "subscribe", "pair": ["XBT/USD", "ETH/XBT"], "subscription": {"name": "book", "depth": 100}},
    ]
    p.resubscribe_books(["XBT/USD"])
    assert [json.loads(m)["event"] for m in p.outgoing()] == ["unsubscribe", "subscribe"]
    assert p.outgoing() == []
    v2 = KrakenProtocol(V2_URL, channels=("book",))
    v2.resubscribe_books(["XBT/USD"])
    assert json.loads(v2.outgoing()[1]) == {"method": "subscribe", "params": {
        "channel": "book", "symbol": ["BTC/USD"], "depth": 10}}
    with pytest.raises(ValueError):
        KrakenProtocol(V2_URL, version=3)


# ------------------------------------------------------------------------------- property

_GOOD = [
    V1_TRADE_DOC, V1_BOOK_UPDATE_DOC, '{"event":"heartbeat"}', '{"channel":"heartbeat"}',
    '[1, {"as":[["2.0","1.0","1.0"]],"bs":[["1.0","1.0","1.0"]]}, "book-10", "XBT/USD"]',
    '[1, {"a":[["2.0","0.0","1.5"]],"c":"0"}, "book-10", "XBT/USD"]',
    '[1668,{"a":["13.253900",35,"35.72892241"],"b":["13.232900",185,"185.18432037"],'
    '"c":["13.253900","3.71672000"]},"ticker","WAVES/EUR"]',
    '[0,["5698.4","5700.0","1542057299.545897","1.0","0.9"],"spread","XBT/USD"]',
    json.dumps(V2_TICKER), json.dumps(V2_TRADE), json.dumps(V2_BOOK_SNAPSHOT), json.dumps(V2_BOOK_UPDATE),
    '{"method":"pong","req_id":1}',
]
_SPECIAL = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1", "0", "1e308", "-0.0",
                            "99999999999999999999999999", "", "x", "1.5", "2023-09-25T07:49:37Z"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6) | _SPECIAL,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=10,
)
_level_v1 = st.lists(json_values | _SPECIAL, max_size=5)
_v1_payload = st.fixed_dictionaries({}, optional={
    k: st.lists(_level_v1, max_size=3) | json_values for k in ("as", "bs", "a", "b")
} | {"c": st.sampled_from(["0", "12", "x", "-3"]) | json_values})
_v1_trade_payload = st.lists(
    st.tuples(_SPECIAL | json_values, _SPECIAL | json_values, _SPECIAL | json_values,
              st.sampled_from(["b", "s", "x"]) | json_values, st.just("l"), st.just("")).map(list),
    max_size=3,
) | json_values
_v1_ticker_payload = st.fixed_dictionaries({}, optional={
    k: st.lists(_SPECIAL | json_values, max_size=4) for k in ("a", "b", "c")})
_pairs = st.sampled_from(["XBT/USD", "ETH/XBT", "BTC/USD", "", "XBTUSD"]) | json_values
v1_arrays = st.one_of(
    st.tuples(st.integers(0, 9) | json_values, _v1_trade_payload, st.just("trade"), _pairs),
    st.tuples(st.integers(0, 9), _v1_ticker_payload | json_values, st.just("ticker"), _pairs),
    st.tuples(st.integers(0, 9), _v1_payload | json_values, st.sampled_from(["book-10", "book-1", "book-0", "book-"]), _pairs),
    st.tuples(st.integers(0, 9), _v1_payload, _v1_payload, st.just("book-10"), _pairs),
    st.tuples(st.integers(0, 9), json_values, st.sampled_from(["spread", "ohlc-5", "zzz"]) | json_values, _pairs),
).map(lambda t: json.dumps(list(t)))
_v2_item = st.fixed_dictionaries({}, optional={
    k: _SPECIAL | json_values for k in ("symbol", "bid", "bid_qty", "ask", "ask_qty", "side", "price",
                                         "qty", "trade_id", "timestamp")
} | {"bids": st.lists(st.fixed_dictionaries({}, optional={"price": _SPECIAL | json_values,
                                                          "qty": _SPECIAL | json_values}), max_size=2) | json_values,
     "asks": st.lists(st.fixed_dictionaries({}, optional={"price": _SPECIAL | json_values,
                                                          "qty": _SPECIAL | json_values}), max_size=2)})
v2_objects = st.fixed_dictionaries(
    {"channel": st.sampled_from(["ticker", "trade", "book", "heartbeat", "ohlc", "zzz"]) | json_values},
    optional={"type": st.sampled_from(["snapshot", "update", "x"]) | json_values,
              "data": st.lists(_v2_item | json_values, max_size=3) | json_values},
).map(json.dumps)


def _mutate(text: str, cut: int, swap: str) -> str:
    """Truncate, or swap one quoted number for a hostile literal (NaN, huge, negative...)."""
    if cut % 3 == 0:
        return text[: cut % (len(text) + 1)]
    for token in ('"5541.20000"', "0.5117", '"0.05120"', "740.0", '"1534614057.321597"', '"13.253900"'):
        if token in text:
            return text.replace(token, swap, 1)
    return text


fuzzed = st.one_of(
    st.sampled_from(_GOOD),
    st.text(max_size=30),
    json_values.map(json.dumps),
    v1_arrays,
    v2_objects,
    st.builds(_mutate, st.sampled_from(_GOOD), st.integers(0, 400),
              st.sampled_from(["NaN", "Infinity", "-1", "0", "1e999", '"-5"', '"abc"', "null", "[]", "true",
                               "123456789012345678901234567890"])),
)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(fuzzed, max_size=25))
def test_property_every_message_is_accounted_for_and_nothing_raises(messages):
    adapter = KrakenAdapter()
    half = len(messages) // 2
    for part in (messages[:half], messages[half:]):  # state carried across batches
        nb = run(*part, adapter=adapter)
        assert nb.n_messages == len(part)
        assert 0 <= nb.data_messages
        assert nb.n_messages == nb.data_messages + nb.n_control + nb.n_ignored + len(nb.quarantine)
        quarantined = [r.raw for r in nb.quarantine]
        for r in nb.quarantine:
            assert r.reason.startswith("kraken ") and "adapter error" not in r.reason, r.reason
            assert r.raw in part
        row_raws = set()
        for batch in nb.data().values():
            row_raws.update(batch.raw.tolist())
            for col in batch.COLUMNS:
                assert len(getattr(batch, col)) == len(batch)
        assert row_raws <= set(part)
        assert not row_raws & set(quarantined)
        assert len(row_raws) <= nb.data_messages
        assert set(nb.trades.side.tolist()) <= {"buy", "sell"}
        assert set(nb.book_updates.side.tolist()) <= {"bid", "ask"}
        for g in nb.gaps:
            assert g.kind == "book" and not math.isnan(g.end_ts)
