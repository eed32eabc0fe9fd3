"""The WebSocket API's fan-out: oracle-price messages published by the graph's sink to N clients.

The server is the real ``dataflows.api.ApiServer`` on 127.0.0.1 over a stand-in pipeline whose
``oracle_prices`` stream is emitted into as the graph does (two prices a message, BTC and ETH).
N WebSocket clients, in another process so they do not share the server's core, subscribe to
``oracle`` and count what they receive. The publisher emits as fast as the clients' queues allow
(it yields whenever the fullest queue is half full, so nobody is dropped) until every client has
every message.

Reported, in the same run:

- the reference: a bare ``json.dumps`` loop over the same messages (what the cheapest possible
  publisher would pay just to serialize them);
- messages per second delivered to all N clients, and the ratio to the reference;
- the graph's side: time spent inside ``emit`` per message (serialize once, ``put_nowait`` N
  times): what a live graph pays for the API, whatever the clients do.

    .venv/bin/python benchmarks/bench_api.py [N_MESSAGES] [N_CLIENTS]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOKEN = "bench-token"
T0 = 1_767_225_600.0


def _messages(n: int):
    from models.records import OraclePrice

    sources = ("binance:BTCUSDT", "coinbase:BTC-USD", "kraken:BTC/USD")
    return [[OraclePrice("BTC", T0 + i, 100_000.0 + i, 5.0, 3, "ok", "", sources),
             OraclePrice("ETH", T0 + i, 3_000.0 + i, 0.5, 3, "ok", "", sources)] for i in range(n)]


async def _clients(url: str, n_clients: int, n_messages: int) -> None:
    """The client process: ``n_clients`` connections, each reading ``n_messages`` data messages."""
    from websockets.asyncio.client import connect

    async def one() -> None:
        async with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                           compression=None, max_size=None) as ws:
            await ws.recv()  # auth ok
            await ws.send(json.dumps({"op": "subscribe", "topics": ["oracle"]}))
            await ws.recv()  # subscribed
            got = 0
            while got < n_messages:
                if json.loads(await ws.recv())["type"] == "data":
                    got += 1

    await asyncio.gather(*(one() for _ in range(n_clients)))


def bare_dumps(batches) -> float:
    from dataflows.api import price_json

    t = time.perf_counter()
    for prices in batches:
        json.dumps({"type": "data", "topic": "oracle", "data": [price_json(p) for p in prices]})
    return time.perf_counter() - t


async def fan_out(batches, n_clients: int) -> tuple[float, float]:
    from streamz import Stream

    from dataflows.api import ApiServer
    from dataflows.clock import SimulatedClock
    from dataflows.config import load_config

    config = load_config(env={}, overrides={"api.port": 0, "api.client_queue_size": 1024})
    graph = SimpleNamespace(raw=Stream(), oracle_prices=Stream(), alerts=Stream(),
                            premium_quotes=None)
    pipeline = SimpleNamespace(config=config, clock=SimulatedClock(T0), graph=graph,
                               desk_steps=None, views={})
    server = ApiServer(pipeline, token=TOKEN, env={})
    await server.start()
    clients = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--clients", f"ws://127.0.0.1:{server.port}/ws",
        str(n_clients), str(len(batches)))
    try:
        while sum("oracle" in c.topics for c in server.hub.clients) < n_clients:
            await asyncio.sleep(0.01)
        half = server.hub.queue_size // 2
        in_emit = 0.0
        t = time.perf_counter()
        for prices in batches:
            while max(server.hub.queue_depths(), default=0) >= half:
                await asyncio.sleep(0)
            started = time.perf_counter()
            graph.oracle_prices.emit(prices)
            in_emit += time.perf_counter() - started
        assert await clients.wait() == 0, "a client failed"
        elapsed = time.perf_counter() - t
        assert not server.hub.dropped, server.hub.dropped
    finally:
        if clients.returncode is None:
            clients.kill()
        await server.stop()
    return elapsed, in_emit


def main(n_messages: int, n_clients: int) -> None:
    batches = _messages(n_messages)
    reference = bare_dumps(batches)
    elapsed, in_emit = asyncio.run(fan_out(batches, n_clients))
    ref_rate, rate = n_messages / reference, n_messages / elapsed
    print(f"{n_messages:,} messages (2 oracle prices each) to {n_clients} WebSocket clients")
    print(f"  bare json.dumps loop           {ref_rate:>12,.0f} msg/s")
    print(f"  fan-out, every client got all  {rate:>12,.0f} msg/s "
          f"({rate * n_clients:,.0f} deliveries/s)  ratio {rate / ref_rate:.3f}")
    print(f"  graph side (inside emit)       {1e6 * in_emit / n_messages:>12.1f} us/msg "
          f"({1e6 * in_emit / n_messages / n_clients:.2f} us per client)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--clients"]:
        asyncio.run(_clients(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
             int(sys.argv[2]) if len(sys.argv) > 2 else 10)
