"""WebsocketSource: batches, reconnects after the exchange goes away, hands on what it read."""

from __future__ import annotations

import asyncio

from dataflows.simulator import BinanceSimulator
from dataflows.ws_source import WebsocketSource


async def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_batches_reconnects_and_loses_nothing():
    async def scenario():
        sim = BinanceSimulator(quote_rate_hz=100.0, trade_rate_hz=20.0, seed=3, port=0)
        await sim.start()
        port = sim.port
        source = WebsocketSource(
            sim.url, "binance", batch_max_messages=16, batch_max_latency_s=0.02,
            reconnect_initial_s=0.05, reconnect_max_s=0.2, seed=1,
        )
        batches = source.sink_to_list()
        source.stopped = False
        task = asyncio.create_task(source.run())
        await asyncio.wait_for(source.connected.wait(), 5)
        await asyncio.sleep(1.0)
        await sim.stop()  # the exchange goes away
        first_sent = sim.sent_counts()["total"]
        await _wait_for(lambda: source.disconnects >= 1)

        sim2 = BinanceSimulator(quote_rate_hz=100.0, trade_rate_hz=20.0, seed=4, port=port)
        await sim2.start()
        await _wait_for(lambda: source.connects >= 2)
        await asyncio.sleep(0.5)
        await sim2.stop()
        total_sent = first_sent + sim2.sent_counts()["total"]
        await _wait_for(lambda: source.received >= total_sent)
        source.stop()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return batches, total_sent, source

    batches, total_sent, source = asyncio.run(scenario())
    assert source.connects == 2
    assert sum(len(b) for b in batches) == source.received == total_sent
    assert all(0 < len(b) <= 16 for b in batches)
    assert all(b.exchange == "binance" for b in batches)
    times = [t for b in batches for t in b.receive_ts.tolist()]
    assert times == sorted(times)


def test_cancelled_source_hands_on_buffered_messages():
    async def scenario():
        async with BinanceSimulator(quote_rate_hz=200.0, trade_rate_hz=0.0, seed=5, port=0) as sim:
            # A long latency keeps messages buffered: cancellation must still emit them.
            source = WebsocketSource(
                sim.url, "binance", batch_max_messages=10_000, batch_max_latency_s=60.0
            )
            batches = source.sink_to_list()
            source.stopped = False
            task = asyncio.create_task(source.run())
            await asyncio.wait_for(source.connected.wait(), 5)
            await _wait_for(lambda: source.received >= 20)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return batches, source.received

    batches, received = asyncio.run(scenario())
    assert received >= 20
    assert sum(len(b) for b in batches) == received


def test_backoff_grows_and_is_capped():
    source = WebsocketSource(
        "ws://127.0.0.1:9", "binance", reconnect_initial_s=0.5, reconnect_max_s=4.0, seed=2
    )
    for failures, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)]:
        delays = [source._backoff_s(failures) for _ in range(200)]
        assert max(delays) <= cap
        assert max(delays) > 0.5 * cap  # full jitter spreads over [0, cap]


def test_gives_up_after_max_reconnects_when_nothing_listens():
    async def scenario():
        source = WebsocketSource(
            "ws://127.0.0.1:9/stream?streams=x", "binance",
            reconnect_initial_s=0.01, reconnect_max_s=0.02, max_reconnects=2,
        )
        source.stopped = False
        await asyncio.wait_for(source.run(), 10)
        return source

    source = asyncio.run(scenario())
    assert source.connects == 0
    assert source.disconnects == 3


def test_a_silent_connection_is_closed_and_reopened():
    async def scenario():
        # No quotes and no trades: the exchange accepts the connection and then says nothing.
        async with BinanceSimulator(quote_rate_hz=0.0, trade_rate_hz=0.0, port=0) as sim:
            source = WebsocketSource(
                sim.url, "binance", silence_timeout_s=0.2, batch_max_latency_s=0.02,
                reconnect_initial_s=0.01, reconnect_max_s=0.02,
            )
            source.stopped = False
            task = asyncio.create_task(source.run())
            await _wait_for(lambda: source.connects >= 2, timeout_s=5)
            source.stop()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return source

    source = asyncio.run(scenario())
    assert source.connects >= 2
    assert source.disconnects >= 1


def test_a_busy_connection_with_single_message_batches_is_not_called_silent():
    async def scenario():
        async with BinanceSimulator(quote_rate_hz=100.0, trade_rate_hz=0.0, port=0) as sim:
            source = WebsocketSource(
                # A message every 10 ms; the silence limit is 50 of those, so a loaded machine's
                # pause does not pass for silence, and the run lasts three limits.
                sim.url, "binance", silence_timeout_s=0.5, batch_max_messages=1,
                batch_max_latency_s=0.02,
            )
            source.stopped = False
            task = asyncio.create_task(source.run())
            await asyncio.wait_for(source.connected.wait(), 5)
            await asyncio.sleep(1.5)
            source.stop()
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            return source

    source = asyncio.run(scenario())
    assert source.received > 100
    assert source.disconnects == 0


def test_a_peer_that_drops_at_once_meets_a_growing_backoff():
    from websockets.asyncio.server import serve

    async def scenario():
        async def hang_up(ws):
            await ws.close()

        async with serve(hang_up, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            source = WebsocketSource(
                f"ws://127.0.0.1:{port}/", "binance",
                reconnect_initial_s=0.01, reconnect_max_s=0.05, max_reconnects=3,
            )
            source.stopped = False
            await asyncio.wait_for(source.run(), 10)  # gives up: the failures were never reset
            return source

    source = asyncio.run(scenario())
    assert source.connects == 4 and source.disconnects == 4
