"""The Binance simulator over real loopback websockets, checked against recorded Binance traffic.

pytest-asyncio is not installed: each test runs its scenario with ``asyncio.run`` (via ``_run``,
which also bounds it in time so a hang fails instead of stalling the suite).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from decimal import Decimal, InvalidOperation
from pathlib import Path

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from dataflows.clock import SimulatedClock
from dataflows.simulator import (
    MALFORMED_KINDS,
    BinanceSimulator,
    SymbolMarket,
    market_spec_for,
    run_simulator,
)

RECORDED = Path(__file__).resolve().parents[3] / "shared" / "data" / "recorded" / "BINANCE.ws.1.0"
DECIMAL_8 = re.compile(r"^\d+\.\d{8}$")


def _run(coro, timeout_s: float = 15.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


async def _recv_for(ws, seconds: float) -> list[str]:
    """Every message received within ``seconds``."""
    out: list[str] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            out.append(await asyncio.wait_for(ws.recv(), left))
        except TimeoutError:
            break
    return out


async def _recv_until_closed(ws) -> list[str]:
    # ``async for`` ends on a clean close (the server's 1001 going away) after all data frames.
    return [message async for message in ws]


def _recorded_data(stream_kind: str) -> list[tuple[str, dict]]:
    """(raw message, data) for every recorded message of ``stream_kind`` ("bookTicker", ...)."""
    out = []
    for line in RECORDED.read_text().splitlines():
        head, sep, raw = line.partition(": ")
        if not sep or not head.replace(".", "").isdigit():
            continue  # connection notes
        msg = json.loads(raw)
        if msg.get("stream", "").endswith("@" + stream_kind):
            out.append((raw, msg["data"]))
    assert out, f"no recorded {stream_kind} messages"
    return out


def _classify(raw: str) -> str:
    """What a strict consumer would call this message: a stream kind, a malformed kind, control."""
    try:
        msg = json.loads(raw)
    except ValueError:
        return "truncated"
    if "stream" not in msg:
        assert "result" in msg or "error" in msg, raw
        return "control"
    data = msg["data"]
    kind = msg["stream"].split("@", 1)[1]
    if kind == "bookTicker":
        return "crossed" if Decimal(data["b"]) > Decimal(data["a"]) else "bookTicker"
    assert kind == "aggTrade", raw
    try:
        Decimal(data["p"])
    except InvalidOperation:
        return "nonnumeric_price"
    return "nonpositive_qty" if Decimal(data["q"]) <= 0 else "aggTrade"


# ---------------------------------------------------------------------------- pure parts


def test_market_defaults_by_base_asset():
    assert market_spec_for("BTCUSDT").spot_usd == 97_000.0
    assert market_spec_for("BTCUSDT").vol_annual == 0.55
    assert market_spec_for("ETHUSDT").spot_usd == 3_100.0
    assert market_spec_for("ETHUSDT").vol_annual == 0.70
    assert market_spec_for("ethusdc").spot_usd == 3_100.0
    assert market_spec_for("XYZUSDT").spot_usd == 100.0
    assert market_spec_for("ETHBTC").spot_usd == 100.0  # not a USD quote: the table does not apply


def test_symbol_market_is_reproducible_and_consistent():
    a, b = SymbolMarket("BTCUSDT", seed=7), SymbolMarket("BTCUSDT", seed=7)
    quotes_a = [a.next_quote(0.05) for _ in range(200)]
    assert quotes_a == [b.next_quote(0.05) for _ in range(200)]
    assert [q["u"] for q in quotes_a] == list(range(quotes_a[0]["u"], quotes_a[0]["u"] + 200))
    assert all(Decimal(q["b"]) < Decimal(q["a"]) for q in quotes_a)
    other = SymbolMarket("BTCUSDT", seed=8).next_quote(0.05)
    assert other["b"] != quotes_a[0]["b"]
    assert SymbolMarket("ETHUSDT", seed=7).next_quote(0.05)["b"] != quotes_a[0]["b"]

    trades = [a.next_trade(1_700_000_000_000) for _ in range(50)]
    for prev, cur in zip(trades, trades[1:]):
        assert cur["a"] == prev["a"] + 1 and cur["f"] == prev["l"] + 1
    assert all(t["f"] <= t["l"] and Decimal(t["q"]) > 0 for t in trades)
    last = quotes_a[-1]
    assert all(t["p"] in (last["b"], last["a"]) for t in trades)
    assert all(t["p"] == (last["b"] if t["m"] else last["a"]) for t in trades)


# ---------------------------------------------------------------------------- over websockets


def test_messages_match_recorded_binance_format():
    async def scenario():
        async with BinanceSimulator(seed=7) as sim:
            assert re.fullmatch(
                rf"ws://127\.0\.0\.1:{sim.port}/stream\?streams=btcusdt@bookTicker/"
                r"btcusdt@aggTrade/ethusdt@bookTicker/ethusdt@aggTrade", sim.url)
            async with connect(sim.url) as ws:
                received = await _recv_for(ws, 1.0)
            return received, time.time()

    received, now = _run(scenario())
    rec_book = _recorded_data("bookTicker")
    rec_trade = _recorded_data("aggTrade")
    by_stream: dict[str, list[dict]] = {}
    for raw in received:
        assert isinstance(raw, str)  # text frames
        # Compact JSON exactly as Binance sends it (the recorded lines satisfy the same check).
        assert orjson.dumps(orjson.loads(raw)).decode() == raw
        msg = json.loads(raw)
        assert list(msg) == ["stream", "data"]
        by_stream.setdefault(msg["stream"], []).append(msg["data"])
    for raw, _ in rec_book[:3] + rec_trade[:3]:
        assert orjson.dumps(orjson.loads(raw)).decode() == raw
    assert set(by_stream) == {"btcusdt@bookTicker", "btcusdt@aggTrade",
                              "ethusdt@bookTicker", "ethusdt@aggTrade"}

    ref_book, ref_trade = rec_book[0][1], rec_trade[0][1]
    for stream, items in by_stream.items():
        symbol = stream.split("@")[0].upper()
        ref = ref_book if stream.endswith("@bookTicker") else ref_trade
        for data in items:
            assert list(data) == list(ref)  # same fields, same order
            assert [type(v) for v in data.values()] == [type(v) for v in ref.values()]
            assert data["s"] == symbol
            for key in ("b", "B", "a", "A") if ref is ref_book else ("p", "q"):
                assert DECIMAL_8.match(data[key]), (key, data[key])
        if stream.endswith("@bookTicker"):
            # ~20 Hz per symbol for ~1 s (the connect takes a little of it).
            assert 5 <= len(items) <= 30
            ids = [d["u"] for d in items]
            assert ids == list(range(ids[0], ids[0] + len(ids)))
            spot = 97_000.0 if symbol == "BTCUSDT" else 3_100.0
            for d in items:
                bid, ask = float(d["b"]), float(d["a"])
                assert bid < ask and abs((bid + ask) / 2 / spot - 1) < 0.02
                assert float(d["B"]) > 0 and float(d["A"]) > 0
        else:
            for prev, cur in zip(items, items[1:]):
                assert cur["a"] == prev["a"] + 1 and cur["f"] == prev["l"] + 1
            for d in items:
                assert d["e"] == "aggTrade" and d["M"] is True and d["f"] <= d["l"]
                assert d["T"] <= d["E"] and abs(d["E"] / 1000 - now) < 5
                assert float(d["q"]) > 0


def test_only_requested_streams_arrive_and_unknown_names_are_ignored():
    async def scenario():
        async with BinanceSimulator(quote_rate_hz=50, trade_rate_hz=30) as sim:
            url = sim.url_for(["btcusdt@bookTicker", "ethusdt@aggTrade",
                               "dogeusdt@bookTicker", "btcusdt@kline_1m"])
            async with connect(url) as ws:
                return await _recv_for(ws, 0.6)

    streams = Counter(json.loads(m)["stream"] for m in _run(scenario()))
    assert set(streams) == {"btcusdt@bookTicker", "ethusdt@aggTrade"}
    assert streams["btcusdt@bookTicker"] >= 10 and streams["ethusdt@aggTrade"] >= 3


def test_subscribe_unsubscribe_list_and_errors():
    async def scenario():
        async with BinanceSimulator(quote_rate_hz=50, trade_rate_hz=50) as sim:
            async with connect(sim.url_for(["btcusdt@bookTicker"])) as ws:

                async def request(text: str) -> tuple[str, list[str]]:
                    """Send; return the reply and the data messages that came before it."""
                    await ws.send(text)
                    before = []
                    while True:
                        message = await ws.recv()
                        if '"stream"' not in message:
                            return message, before
                        before.append(message)

                replies = []
                replies.append(await request(
                    '{"method":"SUBSCRIBE","params":["ethusdt@aggTrade"],"id":1}'))
                after_sub = await _recv_for(ws, 0.4)
                replies.append(await request(
                    '{"method":"UNSUBSCRIBE","params":["btcusdt@bookTicker"],"id":2}'))
                after_unsub = await _recv_for(ws, 0.3)
                replies.append(await request('{"method":"LIST_SUBSCRIPTIONS","id":3}'))
                replies.append(await request('{"method":"SUBSCRIBE","params":'))
                replies.append(await request('{"method":"FROB","params":[],"id":5}'))
                replies.append(await request('{"method":"SUBSCRIBE","params":["x"],"id":6}'))
                replies.append(await request('{"method":"GET_PROPERTY","params":["combined"],'
                                             '"id":7}'))
            return replies, after_sub, after_unsub, sim.sent_counts()

    replies, after_sub, after_unsub, counts = _run(scenario())
    texts = [text for text, _ in replies]
    assert texts[0] == '{"result":null,"id":1}'  # byte for byte as Binance
    assert texts[1] == '{"result":null,"id":2}'
    assert texts[2] == '{"result":["ethusdt@aggTrade"],"id":3}'
    assert json.loads(texts[3])["error"]["code"] == 3 and json.loads(texts[3])["id"] is None
    assert json.loads(texts[4]) == {
        "error": {"code": 2, "msg": json.loads(texts[4])["error"]["msg"]}, "id": 5}
    assert "FROB" in json.loads(texts[4])["error"]["msg"]
    assert json.loads(texts[5])["error"] == {"code": 2, "msg": "Invalid request: invalid stream"}
    assert texts[6] == '{"result":true,"id":7}'

    sub_streams = {json.loads(m)["stream"] for m in after_sub}
    assert sub_streams == {"btcusdt@bookTicker", "ethusdt@aggTrade"}
    # After the UNSUBSCRIBE ack nothing more of that stream arrives.
    later = after_unsub + [m for _, before in replies[2:] for m in before]
    assert later and {json.loads(m)["stream"] for m in later} == {"ethusdt@aggTrade"}
    assert counts["control"] == 7


def test_counts_reconcile_exactly_and_malformed_injection():
    async def scenario():
        sim = BinanceSimulator(seed=11, quote_rate_hz=60, trade_rate_hz=25, malformed_rate=0.2)
        await sim.start()
        ws = await connect(sim.url)
        collector = asyncio.create_task(_recv_until_closed(ws))
        await ws.send('{"method":"LIST_SUBSCRIPTIONS","id":1}')
        await asyncio.sleep(1.2)
        await sim.stop()  # closes the client after its pending data
        received = await collector
        return received, sim.sent_counts(), sim.malformed_counts(), dict(sim.skipped)

    received, counts, malformed, skipped = _run(scenario())
    assert all(isinstance(m, str) for m in received)  # malformed ones are still text frames
    assert not skipped
    assert len(received) == counts["total"]
    assert counts["total"] == (counts["bookTicker"] + counts["aggTrade"] + counts["malformed"]
                               + counts["control"])
    seen = Counter(_classify(m) for m in received)
    assert seen["bookTicker"] == counts["bookTicker"]
    assert seen["aggTrade"] == counts["aggTrade"]
    assert seen["control"] == counts["control"] == 1
    for kind in MALFORMED_KINDS:
        assert seen[kind] == malformed[kind], kind
        assert malformed[kind] > 0, kind  # round-robin reaches every kind
    assert sum(malformed.values()) == counts["malformed"]
    data_messages = counts["total"] - counts["control"]
    assert data_messages > 80
    assert 0.1 < counts["malformed"] / data_messages < 0.3


def test_same_seed_same_messages_with_a_simulated_clock():
    async def one_run(seed: int) -> dict[tuple[str, int], str]:
        clock = SimulatedClock(1_700_000_000.0)
        async with BinanceSimulator(seed=seed, quote_rate_hz=50, trade_rate_hz=20,
                                    clock=clock) as sim:
            async with connect(sim.url) as ws:
                received = await _recv_for(ws, 0.7)
        keyed = {}
        for raw in received:
            msg = json.loads(raw)
            data = msg["data"]
            keyed[(msg["stream"], data["u"] if "u" in data else data["a"])] = raw
        return keyed

    first, second, other = _run(one_run(7)), _run(one_run(7)), _run(one_run(8))
    # The clients connect a few ms after the market starts, so compare on the ids both saw.
    common = first.keys() & second.keys()
    assert len([k for k in common if k[0] == "btcusdt@bookTicker"]) >= 15
    assert len([k for k in common if k[0] == "ethusdt@aggTrade"]) >= 3
    assert all(first[k] == second[k] for k in common)

    def bids(run):
        return [json.loads(v)["data"]["b"] for k, v in sorted(run.items())
                if k[0] == "btcusdt@bookTicker"][:20]

    assert bids(first) != bids(other)


def test_slow_client_is_skipped_not_buffered_but_still_gets_acks():
    async def scenario():
        # A limit below zero treats every client as too slow for data.
        async with BinanceSimulator(quote_rate_hz=50, max_client_buffer_bytes=-1) as sim:
            async with connect(sim.url) as ws:
                await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@bookTicker"],"id":9}')
                received = await _recv_for(ws, 0.4)
            return received, sim.sent_counts(), sim.skipped

    received, counts, skipped = _run(scenario())
    assert received == ['{"result":null,"id":9}']
    assert counts == {"bookTicker": 0, "aggTrade": 0, "depth": 0, "markPrice": 0, "malformed": 0,
                      "control": 1, "repeated_trades": 0, "total": 1, "skipped_seq": 0,
                      "out_of_order": 0, "drops": 0}
    assert skipped[("bookTicker", "ok")] > 0


def test_other_paths_are_rejected():
    async def scenario():
        async with BinanceSimulator() as sim:
            with pytest.raises(InvalidStatus) as info:
                async with connect(f"{sim.base_url}/ws/btcusdt@bookTicker"):
                    pass
            return info.value.response.status_code

    assert _run(scenario()) == 404


def test_run_simulator_for_a_duration_and_until_cancelled():
    sim = BinanceSimulator(quote_rate_hz=50)
    counts = _run(run_simulator(sim, 0.2))
    assert counts["total"] == 0  # nobody connected
    with pytest.raises(RuntimeError):
        sim.port  # stopped

    async def cancelled():
        sim2 = BinanceSimulator(quote_rate_hz=50)
        task = asyncio.create_task(run_simulator(sim2, None))
        await sim2.started.wait()
        async with connect(sim2.url_for(["ethusdt@bookTicker"])) as ws:
            first = await ws.recv()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return first, sim2

    first, sim2 = _run(cancelled())
    assert json.loads(first)["stream"] == "ethusdt@bookTicker"
    assert not sim2.started.is_set()
    assert sim2.sent_counts()["bookTicker"] >= 1


def test_invalid_arguments():
    with pytest.raises(ValueError):
        BinanceSimulator(malformed_rate=1.5)
    with pytest.raises(ValueError):
        BinanceSimulator(symbols=())
    with pytest.raises(ValueError):
        BinanceSimulator(quote_rate_hz=-1)
