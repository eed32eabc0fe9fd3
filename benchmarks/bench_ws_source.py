"""Websocket ingestion over loopback: ``WebsocketSource`` against a bare websockets client.

A local server sends N prebuilt Binance messages as fast as it can. The reference is a plain
``async for message in ws`` loop counting messages; the figure is the streamz source (batching,
receive timestamps, the silence watchdog) feeding a counting sink. Same server, same run.

    .venv/bin/python benchmarks/bench_ws_source.py [N_MESSAGES]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _messages import binance_messages  # noqa: E402

from dataflows.ws_source import WebsocketSource  # noqa: E402


async def _blast_server(messages: list[str]):
    async def handler(ws):
        for m in messages:
            await ws.send(m)
        await ws.close()

    return await serve(handler, "127.0.0.1", 0, compression=None)


async def plain_client(url: str, n: int) -> float:
    t = time.perf_counter()
    count = 0
    async with connect(url, compression=None, max_size=2**24) as ws:
        async for _ in ws:
            count += 1
    assert count == n, count
    return time.perf_counter() - t


async def source_client(url: str, n: int) -> float:
    source = WebsocketSource(url, "binance", max_reconnects=0, reconnect_initial_s=0.01)
    got = [0]
    source.sink(lambda batch: got.__setitem__(0, got[0] + len(batch)))
    source.stopped = False
    t = time.perf_counter()
    await source.run()  # returns after the server closes (max_reconnects=0: no retry)
    assert got[0] == n, got[0]
    return time.perf_counter() - t


async def main(n: int) -> None:
    messages = binance_messages(n)
    server = await _blast_server(messages)
    url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    plain, source = [], []
    for _ in range(3):
        plain.append(await plain_client(url, n))
        source.append(await source_client(url, n))
    server.close()
    await server.wait_closed()
    tp, ts = min(plain), min(source)
    print(f"{n:,} Binance messages over loopback, best of 3\n")
    print(
        f"WebsocketSource → sink {n / ts:>10,.0f} msg/s   plain websockets loop {n / tp:>10,.0f} msg/s"
        f"   ratio {tp / ts:5.3f}"
    )


if __name__ == "__main__":
    import logging

    logging.disable(logging.ERROR)  # "giving up" after the server closes is the expected end
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
