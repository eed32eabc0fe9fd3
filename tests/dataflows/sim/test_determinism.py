"""Same seed, same messages: with a ``SimulatedClock`` two runs of the simulator send
byte-identical messages (compared on the messages both clients saw: they connect a few ms after
the market starts). A different seed gives a different market."""

from __future__ import annotations

import asyncio
import json

from dataflows.clock import SimulatedClock
from dataflows.sim import MultiExchangeSimulator, SimConfig
from tests.dataflows.sim._client import Client, run

RUN_S = 1.2


def _key(exchange: str, msg: dict):
    """A message's identity, from fields the schedule alone determines (None: not compared, e.g.
    per-connection snapshots and acks, whose timing depends on the client)."""
    if exchange == "binance":
        d = msg["data"]
        return msg["stream"], d.get("u", d.get("a", d.get("E")))
    if exchange == "coinbase":
        if msg["type"] in ("ticker", "match"):
            return msg["type"], msg["product_id"], msg["sequence"]
        if msg["type"] in ("l2update", "heartbeat"):
            return msg["type"], msg["product_id"], msg["time"]
        return None
    if exchange == "kraken":
        if msg.get("channel") in ("ticker", "trade", "book") and msg.get("type") == "update":
            item = msg["data"][0]
            return msg["channel"], item["symbol"], item["timestamp"]
        return None
    if exchange == "bybit":
        if msg.get("type") == "snapshot" and not msg.get("topic", "").startswith("publicTrade"):
            return None
        return (msg["topic"], msg["ts"]) if "topic" in msg else None
    if exchange == "deribit":
        if msg.get("method") != "subscription":
            return None
        channel, data = msg["params"]["channel"], msg["params"]["data"]
        if isinstance(data, list):
            return channel, data[0]["trade_id"]
        if data.get("type") == "snapshot":
            return None
        return channel, data.get("change_id", data["timestamp"])
    raise AssertionError(exchange)


async def _one_run(seed: int) -> dict[str, dict]:
    config = SimConfig(trade_rate_hz=10.0, option_rate_hz=0.0)
    sim = MultiExchangeSimulator(seed=seed, config=config, clock=SimulatedClock(1_700_000_000.0))
    await sim.start()
    u = sim.urls
    clients = {
        "binance": Client(sim.binance_url(["btcusdt@bookTicker", "ethusdt@aggTrade",
                                           "btcusdt@depth@100ms", "ethusdt@markPrice@1s"])),
        "coinbase": Client(u["coinbase"], [json.dumps({
            "type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"],
            "channels": ["ticker", "matches", "level2_batch", "heartbeat"]})]),
        "kraken": Client(u["kraken"], [json.dumps({"method": "subscribe", "params": {
            "channel": ch, "symbol": ["BTC/USD", "ETH/USD"]}})
            for ch in ("ticker", "trade", "book")]),
        "bybit": Client(u["bybit"], [json.dumps({"op": "subscribe", "args": [
            "tickers.BTCUSDT", "publicTrade.ETHUSDT", "orderbook.50.BTCUSDT"]})]),
        "deribit": Client(u["deribit"], [json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": [
                "ticker.BTC-PERPETUAL.100ms", "book.ETH-PERPETUAL.100ms",
                "trades.BTC-PERPETUAL.100ms", "deribit_price_index.btc_usd"]}})]),
    }
    for c in clients.values():
        await c.__aenter__()
    await asyncio.sleep(RUN_S)
    await sim.stop()
    out = {}
    for exchange, c in clients.items():
        await c.close()
        keyed = {}
        for raw, msg in zip(c.texts, c.parsed()):
            key = _key(exchange, msg)
            if key is not None:
                keyed[key] = raw
        out[exchange] = keyed
    return out


def test_same_seed_same_messages_different_seed_different_market():
    first, second, other = (run(_one_run(7)), run(_one_run(7)), run(_one_run(8)))
    for exchange in first:
        common = first[exchange].keys() & second[exchange].keys()
        assert len(common) >= 10, exchange
        assert all(first[exchange][k] == second[exchange][k] for k in common), exchange
    # Another seed: another market (not one BTC bid in common).
    def bids(run_):
        return {json.loads(v)["data"]["b"] for k, v in run_["binance"].items()
                if k[0] == "btcusdt@bookTicker"}
    assert bids(first) & bids(second) and not bids(first) & bids(other)
