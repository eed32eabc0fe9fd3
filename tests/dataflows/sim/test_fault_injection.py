"""Every fault kind happens, is counted exactly, and is visible to a client (and, where the
adapter exists, to the adapter)."""

from __future__ import annotations

import asyncio
import importlib
import json
import time
from collections import Counter

import numpy as np
import orjson
import pytest
from websockets.exceptions import ConnectionClosedError

from dataflows.sim import FaultPlan, MultiExchangeSimulator, SimConfig
from tests.dataflows.sim._client import Client, run

RUN_S = 2.6
SPEC = ("malformed=0.08,skip_seq=0.1,repeat_trades=0.15,out_of_order=0.08,"
        "drop=binance@1.2s,drop=deribit@1.4s:close,stall=bybit@0.6s:0.8s,stale=coinbase@1s,"
        "deviate=kraken:5%")


async def _scenario():
    config = SimConfig(trade_rate_hz=20.0, option_rate_hz=0.0, perp_rate_hz=10.0)
    sim = MultiExchangeSimulator(seed=13, config=config, faults=FaultPlan.parse(SPEC))
    await sim.start()
    t0 = time.time()  # the clients stamp messages with time.time()
    u = sim.urls
    clients = {
        "binance": Client(sim.binance_url([f"{s}@{k}" for s in ("btcusdt", "ethusdt") for k in (
            "bookTicker", "aggTrade", "depth@100ms", "markPrice@1s")])),
        "coinbase": Client(u["coinbase"], [json.dumps({
            "type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"],
            "channels": ["ticker", "matches", "level2_batch", "heartbeat"]})]),
        "kraken": Client(u["kraken"], [json.dumps({"method": "subscribe", "params": {
            "channel": ch, "symbol": ["BTC/USD", "ETH/USD"]}})
            for ch in ("ticker", "trade", "book")]),
        "bybit": Client(u["bybit"], [json.dumps({"op": "subscribe", "args": [
            f"{t}.{s}" for s in ("BTCUSDT", "ETHUSDT")
            for t in ("tickers", "publicTrade", "orderbook.50")]})]),
        "deribit": Client(u["deribit"], [json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": [
                f"{ch}.{cur}-PERPETUAL.100ms" for cur in ("BTC", "ETH")
                for ch in ("ticker", "book", "trades")] + ["deribit_price_index.btc_usd"]}})]),
    }
    for c in clients.values():
        await c.__aenter__()
    await asyncio.sleep(RUN_S)
    await sim.stop()
    for c in clients.values():
        await c.close()
    return {"sim": sim, "clients": clients, "t0": t0, "sent": sim.sent_counts(),
            "malformed": {n: s.malformed_counts() for n, s in sim.servers.items()},
            "withheld": {n: sim.withheld_counts(n) for n in sim.servers}}


@pytest.fixture(scope="module")
def faulty():
    return run(_scenario(), timeout_s=60)


def test_every_frame_counted_reached_its_client(faulty):
    for exchange, counts in faulty["sent"].items():
        assert counts["total"] == len(faulty["clients"][exchange].messages), exchange


@pytest.mark.parametrize("exchange", ["binance", "coinbase", "kraken", "bybit", "deribit"])
def test_rate_faults_happen_and_are_counted(faulty, exchange):
    counts = faulty["sent"][exchange]
    assert counts["malformed"] > 0
    assert counts["repeated_trades"] > 0
    assert counts["skipped_seq"] > 0
    assert counts["out_of_order"] > 0
    client = faulty["clients"][exchange]
    # Malformed: the truncated ones do not parse, and there are exactly as many as counted.
    unparsable = sum(1 for m in client.parsed() if m is None)
    assert unparsable == faulty["malformed"][exchange]["truncated"] > 0
    assert sum(faulty["malformed"][exchange].values()) == counts["malformed"]
    # Repeated trades: the same frame twice in a row, exactly as often as counted.
    texts = client.texts
    repeats = sum(1 for a, b in zip(texts, texts[1:]) if a == b)
    assert repeats == counts["repeated_trades"]


def test_drops_cut_the_connection_abruptly_or_with_a_close_frame(faulty):
    sent = faulty["sent"]
    assert sent["binance"]["drops"] == 1 and sent["deribit"]["drops"] == 1
    binance = faulty["clients"]["binance"].closed
    assert isinstance(binance, ConnectionClosedError) and binance.rcvd is None  # no close frame
    deribit = faulty["clients"]["deribit"].closed
    assert deribit.rcvd is not None and deribit.rcvd.code == 1011
    assert all(sent[x]["drops"] == 0 for x in ("coinbase", "kraken", "bybit"))


def test_stall_keeps_the_connection_but_sends_nothing(faulty):
    client = faulty["clients"]["bybit"]
    times = np.array([t for t, _ in client.messages])
    assert np.diff(times).max() >= 0.6  # the 0.8 s stall
    assert faulty["withheld"]["bybit"]["stalled"] > 0
    assert client.closed is None or client.closed.rcvd.code == 1001  # closed by stop(), not cut
    assert times[-1] - faulty["t0"] > 1.5  # and it came back


def test_stale_venue_keeps_heartbeats_but_no_prices(faulty):
    msgs = faulty["clients"]["coinbase"].parsed()
    types = [m["type"] if m else "bad" for m in msgs]
    last_data = max(i for i, t in enumerate(types) if t in ("ticker", "match", "l2update"))
    after = types[last_data + 1:]
    assert after and set(after) == {"heartbeat"} and len(after) >= 2
    times = [t for t, _ in faulty["clients"]["coinbase"].messages]
    assert times[last_data] - faulty["t0"] < 1.3 and times[-1] - times[last_data] > 1.0


def test_deviating_venue_quotes_off_market(faulty):
    kraken = [np.mean([m["data"][0]["bid"], m["data"][0]["ask"]])
              for m in faulty["clients"]["kraken"].parsed()
              if m and m.get("channel") == "ticker" and m["data"][0]["symbol"] == "BTC/USD"
              and isinstance(m["data"][0].get("bid"), float)]
    binance = [(float(m["data"]["b"]) + float(m["data"]["a"])) / 2
               for m in faulty["clients"]["binance"].parsed()
               if m and m["stream"] == "btcusdt@bookTicker" and isinstance(m["data"]["b"], str)]
    assert len(kraken) > 5 and len(binance) > 5
    ratio = float(np.median(kraken)) / float(np.median(binance))
    assert ratio == pytest.approx(1.05, abs=0.003)


def test_out_of_order_timestamps_go_backwards(faulty):
    by_stream: dict[str, list[int]] = {}
    for m in faulty["clients"]["binance"].parsed():
        if m and isinstance(m["data"].get("E"), int):
            by_stream.setdefault(m["stream"], []).append(m["data"]["E"])
    backwards = sum(b < a for times in by_stream.values() for a, b in zip(times, times[1:]))
    assert backwards >= 1


@pytest.mark.parametrize("exchange", ["binance", "coinbase", "bybit", "deribit"])
def test_the_adapter_sees_the_skipped_sequence_numbers(faulty, exchange):
    try:
        adapter = importlib.import_module("dataflows.adapters").AdapterSet()[exchange]
    except (ImportError, KeyError):
        pytest.skip(f"no {exchange} adapter yet")
    client = faulty["clients"][exchange]
    batch = adapter.normalize(client.batch(exchange))
    assert batch.n_messages == len(client.messages)
    assert any(g.kind in ("sequence", "book") for g in batch.gaps)
    assert len(batch.quarantine) >= faulty["malformed"][exchange]["truncated"]


def test_faults_on_demand():
    async def scenario():
        config = SimConfig(exchanges=("kraken", "coinbase"), trade_rate_hz=20.0)
        async with MultiExchangeSimulator(seed=2, config=config) as sim:
            sub = json.dumps({"method": "subscribe", "params": {"channel": "trade",
                                                                "symbol": ["BTC/USD"]}})
            async with Client(sim.urls["kraken"], [sub]) as k:
                sim.set_fault_rate("repeat_trades", 1.0, "kraken")
                await k.wait_for(lambda ms: sum('"trade"' in m for _, m in ms) >= 4)
                sim.set_fault_rate("repeat_trades", 0.0)
                sim.set_deviation("kraken", 0.1)
                sim.set_stale("kraken", True)
                sim.stall("kraken", 0.3)
                assert sim.servers["kraken"].stalled
                await asyncio.sleep(0.4)
                assert not sim.servers["kraken"].stalled
                n = sim.drop("kraken", "close")
                await k.wait_for(lambda ms: k.closed is not None or k._task.done(), 5)
            return n, sim.sent_counts("kraken"), k

    n, counts, client = run(scenario())
    assert n == 1 and counts["drops"] == 1
    assert counts["repeated_trades"] >= 2
    assert Counter(client.texts).most_common(1)[0][1] == 2
    assert counts["total"] == len(client.messages)
    assert orjson.loads(client.texts[0])["channel"] == "status"
