"""All five simulated exchanges over real loopback websockets, from one seeded market.

One module-scoped run subscribes to every channel of every exchange (requests written from each
exchange's documentation, not from our adapters), then the tests check the messages against the
documented formats and the recorded real traffic, reconcile the simulator's counters with what
the clients received, and feed the traffic through the adapters in ``dataflows/adapters`` (where
they exist): a clean run must quarantine nothing and record no gaps.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import urllib.request
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from dataflows.sim import MultiExchangeSimulator, SimConfig
from tests.dataflows.sim._client import Client, run

RECORDED = Path(__file__).resolve().parents[4] / "shared" / "data" / "recorded"
RUN_S = 3.0
OPTION_RATE_HZ = 150.0
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
DEC8 = re.compile(r"^\d+\.\d{8}$")
DEC2 = re.compile(r"^\d+\.\d{2}$")


def _recorded(name: str, predicate) -> list[dict]:
    out = []
    for line in (RECORDED / name).read_text().splitlines():
        head, sep, raw = line.partition(": ")
        if sep and head.replace(".", "").isdigit() and raw.startswith("{"):
            msg = json.loads(raw)
            if predicate(msg):
                out.append(msg)
    return out


def _http_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        return json.loads(response.read())


async def _scenario():
    config = SimConfig(option_rate_hz=OPTION_RATE_HZ, trade_rate_hz=8.0)
    sim = MultiExchangeSimulator(seed=5, config=config)
    await sim.start()
    try:
        u, h = sim.urls, sim.http_urls
        instruments = {}
        for cur in ("BTC", "ETH"):
            url = f"{h['deribit']}/api/v2/public/get_instruments?currency={cur}&kind=option"
            answer = await asyncio.to_thread(_http_json, url)
            instruments[cur] = answer
        depth = await asyncio.to_thread(
            _http_json, f"{h['binance']}/api/v3/depth?symbol=BTCUSDT&limit=5")
        options = [i["instrument_name"] for cur in ("BTC", "ETH")
                   for i in instruments[cur]["result"]]
        symbols = ("btcusdt", "ethusdt")
        clients = {
            "binance": [Client(sim.binance_url(
                [f"{s}@{k}" for s in symbols
                 for k in ("bookTicker", "aggTrade", "depth@100ms", "markPrice@1s",
                           "markPrice")]))],
            "coinbase": [Client(u["coinbase"], [json.dumps({
                "type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"],
                "channels": ["ticker", "matches", "heartbeat", "level2_batch"]})]),
                Client(u["coinbase"], ['{"type":"subscribe","product_ids":["DOGE-USD"],'
                                       '"channels":["ticker"]}', "not json"])],
            "kraken": [Client(u["kraken"], [
                json.dumps({"method": "subscribe", "params": {"channel": "ticker",
                            "symbol": ["BTC/USD", "ETH/USD"]}, "req_id": 1}),
                json.dumps({"method": "subscribe", "params": {"channel": "ticker",
                            "symbol": ["BTC/USD"], "event_trigger": "bbo"}, "req_id": 2}),
                json.dumps({"method": "subscribe", "params": {"channel": "trade",
                            "symbol": ["BTC/USD", "ETH/USD"]}, "req_id": 3}),
                json.dumps({"method": "subscribe", "params": {"channel": "book",
                            "symbol": ["BTC/USD", "ETH/USD"], "depth": 10}, "req_id": 4}),
                json.dumps({"method": "ping", "req_id": 5}),
                json.dumps({"method": "subscribe", "params": {"channel": "ticker",
                            "symbol": ["XYZ/USD"]}, "req_id": 6})])],
            "bybit": [Client(u["bybit"], [
                json.dumps({"op": "subscribe", "req_id": "s1", "args": [
                    f"{t}.{s}" for s in ("BTCUSDT", "ETHUSDT")
                    for t in ("tickers", "publicTrade", "orderbook.50", "orderbook.1")]}),
                '{"op":"ping","req_id":"p1"}',
                '{"op":"subscribe","args":["tickers.NOPEUSDT"]}'])],
            "deribit": [Client(u["deribit"], [
                json.dumps({"jsonrpc": "2.0", "id": 1, "method": "public/set_heartbeat",
                            "params": {"interval": 10}}),
                json.dumps({"jsonrpc": "2.0", "id": 2, "method": "public/subscribe", "params": {
                    "channels": [f"{ch}.{cur}-PERPETUAL.100ms" for cur in ("BTC", "ETH")
                                 for ch in ("ticker", "book", "trades")]
                    + ["deribit_price_index.btc_usd", "deribit_price_index.eth_usd",
                       "trades.option.BTC.100ms", "trades.option.ETH.100ms"]}}),
                json.dumps({"jsonrpc": "2.0", "id": 3, "method": "public/subscribe", "params": {
                    "channels": [f"{ch}.{name}.100ms" for name in options
                                 for ch in ("ticker", "book")]}}),
                json.dumps({"jsonrpc": "2.0", "id": 4, "method": "public/get_instruments",
                            "params": {"currency": "ETH", "kind": "option"}}),
                json.dumps({"jsonrpc": "2.0", "id": 5, "method": "public/subscribe",
                            "params": {"channels": ["ticker.BTC-PERPETUAL.raw"]}}),
                json.dumps({"jsonrpc": "2.0", "id": 6, "method": "public/nope"}),
                json.dumps({"jsonrpc": "2.0", "id": 7, "method": "public/test"})])],
        }
        for group in clients.values():
            for c in group:
                await c.__aenter__()
        await asyncio.sleep(RUN_S)
    finally:
        # Stop the exchanges first: each connection is closed after its pending data, so the
        # clients read every message the simulator counted.
        await sim.stop()
    for group in clients.values():
        for c in group:
            await c.close()
    return {"sim": sim, "clients": clients, "instruments": instruments, "depth": depth,
            "sent": sim.sent_counts()}


@pytest.fixture(scope="module")
def live():
    return run(_scenario(), timeout_s=60)


def _all(live, exchange) -> list[str]:
    return [m for c in live["clients"][exchange] for m in c.texts]


def _main(live, exchange) -> Client:
    return live["clients"][exchange][0]


# ---------------------------------------------------------------------------- addresses, HTTP


def test_urls_http_instruments_and_the_chain_scale(live):
    sim = live["sim"]
    assert set(sim.servers) == {"binance", "coinbase", "kraken", "bybit", "deribit"}
    names = [i["instrument_name"] for cur in ("BTC", "ETH")
             for i in live["instruments"][cur]["result"]]
    expiries = {i["expiration_timestamp"] for cur in ("BTC", "ETH")
                for i in live["instruments"][cur]["result"]}
    assert len(names) == len(set(names)) >= 800 and len(expiries) >= 10
    answer = live["instruments"]["BTC"]
    assert answer["jsonrpc"] == "2.0" and answer["testnet"] is False and "usIn" in answer
    entry = answer["result"][0]
    assert {"instrument_name", "kind", "strike", "option_type", "expiration_timestamp",
            "settlement_period", "tick_size", "base_currency", "is_active"} <= entry.keys()
    assert entry["kind"] == "option" and entry["expiration_timestamp"] % 3_600_000 == 0
    # The JSON-RPC method over the websocket lists the same instruments.
    rpc = next(m for m in _main(live, "deribit").parsed() if m and m.get("id") == 4)
    assert [i["instrument_name"] for i in rpc["result"]] == [
        i["instrument_name"] for i in live["instruments"]["ETH"]["result"]]
    # Binance's REST depth snapshot.
    depth = live["depth"]
    assert set(depth) == {"lastUpdateId", "bids", "asks"} and len(depth["bids"]) == 5
    assert float(depth["bids"][0][0]) < float(depth["asks"][0][0])


def test_deribit_http_through_the_adapter_when_present(live):
    try:
        deribit = importlib.import_module("dataflows.adapters.deribit")
    except ImportError:
        pytest.skip("no Deribit adapter yet")
    infos = deribit.instruments_from_response(live["instruments"]["BTC"])
    assert len(infos) == len(live["instruments"]["BTC"]["result"])
    assert all(i.kind == "option" and i.expiration_ts > 0 for i in infos)


# ---------------------------------------------------------------------------- formats


def test_binance_messages(live):
    rec_book = _recorded("BINANCE.ws.1.0", lambda m: m.get("stream", "").endswith("@bookTicker"))
    rec_trade = _recorded("BINANCE.ws.1.0", lambda m: m.get("stream", "").endswith("@aggTrade"))
    by_stream = defaultdict(list)
    for raw in _all(live, "binance"):
        assert orjson.dumps(orjson.loads(raw)).decode() == raw  # compact, as Binance sends
        msg = json.loads(raw)
        assert list(msg) == ["stream", "data"]
        by_stream[msg["stream"]].append(msg["data"])
    assert len(by_stream) == 10
    for stream, items in by_stream.items():
        kind = stream.split("@", 1)[1]
        if kind == "bookTicker":
            assert all(list(d) == list(rec_book[0]["data"]) for d in items)
        elif kind == "aggTrade":
            assert all(list(d) == list(rec_trade[0]["data"]) for d in items)
        elif kind == "depth@100ms":
            assert len(items) >= 10
            for d in items:
                assert list(d) == ["e", "E", "s", "U", "u", "b", "a"] and d["e"] == "depthUpdate"
                assert d["U"] <= d["u"] and (d["b"] or d["a"])
                assert all(DEC8.match(p) and DEC8.match(q) for p, q in d["b"] + d["a"])
            for prev, cur in zip(items, items[1:]):
                assert cur["U"] == prev["u"] + 1
        else:  # markPrice, markPrice@1s
            for d in items:
                assert list(d) == ["e", "E", "s", "p", "i", "P", "r", "T"]
                assert d["e"] == "markPriceUpdate" and d["T"] % (8 * 3_600_000) == 0
                assert abs(float(d["p"]) / float(d["i"]) - 1) < 0.005
                assert abs(float(d["r"])) < 0.003
    assert len(by_stream["btcusdt@markPrice@1s"]) >= 2


def test_coinbase_messages(live):
    rec_ticker = _recorded("COINBASE.ws.28.0", lambda m: m.get("type") == "ticker")[0]
    rec_match = _recorded("COINBASE.ws.28.0", lambda m: m.get("type") == "match")[0]
    msgs = _main(live, "coinbase").parsed()
    assert msgs[0]["type"] == "subscriptions"
    assert {c["name"] for c in msgs[0]["channels"]} == {"ticker", "matches", "heartbeat",
                                                       "level2_batch"}
    kinds = Counter(m["type"] for m in msgs)
    assert kinds["snapshot"] == 2 and kinds["ticker"] > 50 and kinds["match"] > 5
    assert kinds["l2update"] > 50 and kinds["heartbeat"] >= 4
    expected_ticker = list(rec_ticker)
    expected_ticker[expected_ticker.index("best_bid") + 1:expected_ticker.index("best_bid") + 1] = \
        ["best_bid_size"]
    expected_ticker[expected_ticker.index("best_ask") + 1:expected_ticker.index("best_ask") + 1] = \
        ["best_ask_size"]
    seq = defaultdict(list)
    trades = defaultdict(list)
    seen_snapshot = set()
    for m in msgs[1:]:
        t = m["type"]
        if t == "ticker":
            assert list(m) == expected_ticker
            assert DEC2.match(m["best_bid"]) and DEC8.match(m["best_bid_size"])
            assert float(m["best_bid"]) < float(m["best_ask"]) and ISO.match(m["time"])
        elif t in ("match", "last_match"):
            assert list(m) == list(rec_match)
            assert m["side"] in ("buy", "sell") and ISO.match(m["time"])
            trades[m["product_id"]].append(m["trade_id"])
        elif t == "heartbeat":
            assert list(m) == ["type", "sequence", "last_trade_id", "product_id", "time"]
        elif t == "snapshot":
            seen_snapshot.add(m["product_id"])
            assert len(m["bids"]) == len(m["asks"]) == 20
        elif t == "l2update":
            assert m["product_id"] in seen_snapshot  # snapshot first
            assert all(side in ("buy", "sell") for side, _, _ in m["changes"])
        if t in ("ticker", "match"):
            seq[m["product_id"]].append(m["sequence"])
    for product, numbers in seq.items():  # ticker + match share one contiguous sequence
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), product
    for product, ids in trades.items():
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    bad = live["clients"]["coinbase"][1].parsed()
    assert [m["type"] for m in bad] == ["error", "error"]
    assert "DOGE-USD is not a valid product" in bad[0]["reason"]


def _kraken_checksum(bids: dict, asks: dict, pdec: int) -> int:
    """Kraken v2's documented checksum, written independently of the simulator."""
    text = ""
    for levels in (sorted(asks.items())[:10], sorted(bids.items(), reverse=True)[:10]):
        for price, qty in levels:
            text += f"{price:.{pdec}f}".replace(".", "").lstrip("0")
            text += f"{qty:.8f}".replace(".", "").lstrip("0")
    return zlib.crc32(text.encode())


def test_kraken_messages(live):
    msgs = _main(live, "kraken").parsed()
    assert msgs[0]["channel"] == "status" and msgs[0]["data"][0]["api_version"] == "v2"
    acks = [m for m in msgs if "method" in m]
    subscribed = [(a["result"]["channel"], a["result"]["symbol"]) for a in acks
                  if a["method"] == "subscribe" and a["success"]]
    assert len(subscribed) == 7 and all(a.get("time_in") and a.get("time_out") for a in acks)
    assert any(a["method"] == "pong" and a["req_id"] == 5 for a in acks)
    refused = [a for a in acks if not a["success"]]
    assert len(refused) == 1 and "XYZ/USD" in refused[0]["error"]
    books: dict[str, tuple[dict, dict]] = {}
    trade_ids = defaultdict(list)
    tickers = 0
    for m in msgs:
        channel = m.get("channel")
        if channel == "ticker":
            tickers += 1
            item = m["data"][0]
            assert list(item) == ["symbol", "bid", "bid_qty", "ask", "ask_qty", "last", "volume",
                                  "vwap", "low", "high", "change", "change_pct", "timestamp"]
            assert item["bid"] < item["ask"] and ISO.match(item["timestamp"])
        elif channel == "trade":
            for item in m["data"]:
                assert list(item) == ["symbol", "side", "price", "qty", "ord_type", "trade_id",
                                      "timestamp"]
                assert item["side"] in ("buy", "sell") and isinstance(item["price"], float)
                trade_ids[item["symbol"]].append(item["trade_id"])
        elif channel == "book":
            item = m["data"][0]
            symbol = item["symbol"]
            if m["type"] == "snapshot":
                books[symbol] = ({}, {})
            bids, asks = books[symbol]
            for side, book in (("bids", bids), ("asks", asks)):
                for level in item[side]:
                    if level["qty"] == 0:
                        book.pop(level["price"], None)
                    else:
                        book[level["price"]] = level["qty"]
            # Truncate to the subscribed depth, as Kraken tells clients to.
            for book, rev in ((bids, True), (asks, False)):
                for p in sorted(book, reverse=not rev)[: max(0, len(book) - 10)]:
                    del book[p]
            assert item["checksum"] == _kraken_checksum(bids, asks, 1 if "BTC" in symbol else 2)
    assert tickers > 10 and set(books) == {"BTC/USD", "ETH/USD"}
    for ids in trade_ids.values():
        assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_bybit_messages(live):
    msgs = _main(live, "bybit").parsed()
    ops = [m for m in msgs if "op" in m]
    assert ops[0] == {"success": True, "ret_msg": "", "conn_id": ops[0]["conn_id"], "req_id": "s1",
                      "op": "subscribe"}
    assert any(o["op"] == "ping" and o["ret_msg"] == "pong" for o in ops)
    assert any(not o["success"] and "NOPEUSDT" in o["ret_msg"] for o in ops)
    state: dict[str, dict] = {}
    u_seen = defaultdict(list)
    for m in msgs:
        topic = m.get("topic", "")
        if topic.startswith("tickers."):
            data = m["data"]
            if m["type"] == "snapshot":
                assert list(data) == [
                    "symbol", "tickDirection", "price24hPcnt", "lastPrice", "prevPrice24h",
                    "highPrice24h", "lowPrice24h", "prevPrice1h", "markPrice", "indexPrice",
                    "openInterest", "openInterestValue", "turnover24h", "volume24h",
                    "nextFundingTime", "fundingRate", "bid1Price", "bid1Size", "ask1Price",
                    "ask1Size"]
                state[topic] = dict(data)
            else:
                assert m["type"] == "delta" and data["symbol"] == topic.split(".")[1]
                changed = {k: v for k, v in data.items() if k != "symbol"}
                assert changed and all(state[topic][k] != v for k, v in changed.items())
                state[topic].update(changed)
            s = state[topic]
            assert float(s["bid1Price"]) < float(s["ask1Price"])
            assert abs(float(s["markPrice"]) / float(s["indexPrice"]) - 1) < 0.005
            assert abs(float(s["fundingRate"])) < 0.003
            assert int(s["nextFundingTime"]) % 28_800_000 == 0
            assert {"cs", "ts"} <= m.keys()
        elif topic.startswith("publicTrade."):
            for t in m["data"]:
                assert list(t) == ["T", "s", "S", "v", "p", "L", "i", "BT"]
                assert t["S"] in ("Buy", "Sell") and re.match(r"^[0-9a-f-]{36}$", t["i"])
        elif topic.startswith("orderbook."):
            data = m["data"]
            assert list(data) == ["s", "b", "a", "u", "seq"] and {"ts", "cts"} <= m.keys()
            if m["type"] == "snapshot":
                u_seen[topic] = [data["u"]]
                assert len(data["b"]) == len(data["a"]) == int(topic.split(".")[1])
            else:
                u_seen[topic].append(data["u"])
    assert len(state) == 2 and len(u_seen) == 4
    for topic, us in u_seen.items():
        assert us == list(range(us[0], us[0] + len(us))), topic


def test_deribit_messages(live):
    rec_option = _recorded("DERIBIT.ws.1.0", lambda m: m.get("params", {}).get("channel", "")
                           .startswith("ticker."))[0]["params"]["data"]
    sample = json.loads((RECORDED / "deribit_ws_ticker_100ms.json").read_text())["params"]["data"]
    trades_file = RECORDED / "deribit_ws_trades_100ms.json"
    sample_trade = json.loads(trades_file.read_text())["params"]["data"][0]
    msgs = _main(live, "deribit").parsed()
    answers = {m["id"]: m for m in msgs if "id" in m}
    assert answers[1]["result"] == "ok" and answers[7]["result"]["version"]
    assert len(answers[2]["result"]) == 10 and len(answers[3]["result"]) >= 1600
    assert answers[5]["error"]["code"] == 13778 and answers[6]["error"]["code"] == -32601
    assert all({"usIn", "usOut", "usDiff", "testnet"} <= a.keys() for a in answers.values())
    kinds = Counter()
    change_ids: dict[str, int] = {}
    option_times = defaultdict(list)
    trade_seq = defaultdict(list)
    for m in msgs:
        if m.get("method") != "subscription":
            continue
        channel, data = m["params"]["channel"], m["params"]["data"]
        kind, _, rest = channel.partition(".")
        if kind == "ticker":
            if "PERPETUAL" in channel:
                kinds["perp"] += 1
                assert list(data) == list(sample)
                assert data["best_bid_price"] < data["best_ask_price"]
                assert data["best_bid_amount"] % 10 == 0 if "BTC" in channel else True
                assert abs(data["funding_8h"]) < 0.003 and abs(data["current_funding"]) < 0.003
            else:
                kinds["option"] += 1
                assert list(data) == list(rec_option)
                assert set(data["greeks"]) == set(rec_option["greeks"])
                assert 10 < data["mark_iv"] < 200  # percent
                if data["best_bid_price"] > 0:
                    assert data["best_bid_price"] <= data["mark_price"] <= data["best_ask_price"]
                    assert data["bid_iv"] <= data["mark_iv"] <= data["ask_iv"]
                option_times[data["instrument_name"]].append(data["timestamp"])
        elif kind == "book":
            name = rest.rsplit(".", 1)[0]
            if data["type"] == "snapshot":
                change_ids[name] = data["change_id"]
                assert list(data) == ["type", "timestamp", "instrument_name", "change_id",
                                      "bids", "asks"]
            else:
                assert list(data) == ["type", "timestamp", "prev_change_id", "instrument_name",
                                      "change_id", "bids", "asks"]
                assert data["prev_change_id"] == change_ids[name] < data["change_id"]
                change_ids[name] = data["change_id"]
                for action, price, amount in data["bids"] + data["asks"]:
                    assert action in ("new", "change", "delete") and (amount == 0) == (
                        action == "delete")
            kinds["book"] += 1
        elif kind == "trades":
            for t in data:
                if "PERPETUAL" in t["instrument_name"]:
                    assert list(t) == list(sample_trade)
                    if channel.startswith("trades.BTC-PERPETUAL"):
                        trade_seq[t["instrument_name"]].append(t["trade_seq"])
                else:
                    assert {"iv", "trade_seq", "trade_id", "price", "amount", "direction",
                            "index_price", "mark_price", "instrument_name"} <= t.keys()
            kinds["trades"] += 1
        elif kind == "deribit_price_index":
            assert list(data) == ["timestamp", "price", "index_name"]
            kinds["index"] += 1
    assert kinds["perp"] >= 40 and kinds["option"] >= 100 and kinds["index"] >= 4
    # The option tickers are bounded by the configured total rate, and each instrument is sent
    # at most every 100 ms.
    assert kinds["option"] <= OPTION_RATE_HZ * (RUN_S + 1.0)
    for times in option_times.values():
        assert all(b - a >= 99 for a, b in zip(times, times[1:]))
    for seqs in trade_seq.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


# ---------------------------------------------------------------------------- counts, adapters


def test_sent_counts_reconcile_with_what_the_clients_received(live):
    for exchange, counts in live["sent"].items():
        received = sum(len(c.messages) for c in live["clients"][exchange])
        assert counts["total"] == received, exchange
        assert counts["malformed"] == counts["repeated_trades"] == 0
        assert counts["skipped_seq"] == counts["out_of_order"] == counts["drops"] == 0
        kinds = {k: v for k, v in counts.items()
                 if k not in ("total", "skipped_seq", "out_of_order", "drops")}
        assert sum(kinds.values()) == counts["total"]
    sent = live["sent"]
    assert sent["kraken"]["control"] == 1 + 7 + 1 + 1  # status, acks, pong, refusal
    assert sent["coinbase"]["control"] == 3 and sent["bybit"]["control"] == 3
    assert sent["deribit"]["control"] == 7
    assert sent["binance"]["depth"] == sum(
        1 for m in _all(live, "binance") if '"depthUpdate"' in m)
    deribit = _all(live, "deribit")
    assert sent["deribit"]["option_ticker"] == sum(
        1 for m in deribit if '"channel":"ticker.' in m and "PERPETUAL" not in m.split('"data"')[0])


@pytest.mark.parametrize("exchange", ["binance", "coinbase", "kraken", "bybit", "deribit"])
def test_clean_traffic_passes_the_adapter(live, exchange):
    try:
        adapters = importlib.import_module("dataflows.adapters")
        adapter = adapters.AdapterSet()[exchange]
    except (ImportError, KeyError):
        pytest.skip(f"no {exchange} adapter yet")
    client = _main(live, exchange)
    batch = adapter.normalize(client.batch(exchange))
    assert batch.n_messages == len(client.messages)
    assert [q.reason for q in batch.quarantine] == []
    assert list(batch.gaps) == []
    rows = {name: len(getattr(batch, name).raw) for name in
            ("trades", "quotes", "option_tickers", "book_updates", "funding", "index_prices")}
    assert rows["trades"] > 0 and rows["book_updates"] > 0
    if exchange in ("bybit", "deribit", "binance"):
        assert rows["funding"] > 0
    if exchange == "deribit":
        assert rows["option_tickers"] > 0 and rows["index_prices"] > 0


def test_every_venue_quotes_the_same_market(live):
    """Each venue's BTC mid sits within a few basis points of the others (its basis)."""
    mids = defaultdict(list)
    for raw in _all(live, "binance"):
        m = json.loads(raw)
        if m["stream"] == "btcusdt@bookTicker":
            mids["binance"].append((float(m["data"]["b"]) + float(m["data"]["a"])) / 2)
    for m in _main(live, "coinbase").parsed():
        if m["type"] == "ticker" and m["product_id"] == "BTC-USD":
            mids["coinbase"].append((float(m["best_bid"]) + float(m["best_ask"])) / 2)
    for m in _main(live, "kraken").parsed():
        if m.get("channel") == "ticker" and m["data"][0]["symbol"] == "BTC/USD":
            mids["kraken"].append((m["data"][0]["bid"] + m["data"][0]["ask"]) / 2)
    for m in _main(live, "deribit").parsed():
        if m.get("params", {}).get("channel") == "deribit_price_index.btc_usd":
            mids["deribit"].append(m["params"]["data"]["price"])
    for m in _main(live, "bybit").parsed():
        if m.get("topic") == "tickers.BTCUSDT" and "indexPrice" in m["data"]:
            mids["bybit"].append(float(m["data"]["indexPrice"]))
    medians = {venue: float(np.median(v)) for venue, v in mids.items()}
    assert len(medians) == 5
    ref = float(np.median(list(medians.values())))
    assert all(abs(m / ref - 1) < 15e-4 for m in medians.values()), medians
    assert len({round(m, 2) for m in medians.values()}) > 1  # not literally one price
