"""A streamz source that reads a websocket and emits ``RawBatch``es.

``streamz.Stream.from_websocket`` is a server and breaks on websockets >= 14 (DESIGN, pitfalls), so
this source is a client: ``run()`` reads ``websockets.connect(...)`` and awaits ``_emit`` for each
batch, which is the graph's backpressure. Messages are gathered into a batch until it holds
``batch_max_messages`` or its first message has waited ``batch_max_latency_s``.

Connections are kept up forever by default: on a close, an error or a silence longer than
``silence_timeout_s`` the source reconnects with exponential backoff and full jitter
(``reconnect_initial_s`` doubling up to ``reconnect_max_s``), and sends its subscription messages
again. Each connection and each drop is logged; ``connects`` and ``disconnects`` count them.
"""

from __future__ import annotations

import asyncio
import logging
import random

import numpy as np
import streamz
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from dataflows.clock import Clock, WallClock
from dataflows.logs import log_event
from models.records import RawBatch

log = logging.getLogger(__name__)


class WebsocketSource(streamz.Source):
    def __init__(
        self,
        url: str,
        exchange: str,
        *,
        clock: Clock | None = None,
        subscribe: tuple[str, ...] = (),
        batch_max_messages: int = 1000,
        batch_max_latency_s: float = 0.05,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        silence_timeout_s: float = 15.0,
        max_reconnects: int | None = None,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.clock = clock or WallClock()
        self.subscribe_messages = tuple(subscribe)
        self.batch_max_messages = batch_max_messages
        self.batch_max_latency_s = batch_max_latency_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.silence_timeout_s = silence_timeout_s
        self.max_reconnects = max_reconnects
        self.connects = 0
        self.disconnects = 0
        self.received = 0
        self.connected = asyncio.Event()
        self._rng = random.Random(seed)
        super().__init__(**kwargs)

    def _backoff_s(self, failures: int) -> float:
        cap = min(self.reconnect_max_s, self.reconnect_initial_s * 2 ** max(failures - 1, 0))
        return self._rng.uniform(0, cap)  # full jitter: reconnecting clients do not stampede

    async def run(self) -> None:
        failures = 0
        while not self.stopped:
            try:
                async with connect(self.url, max_size=2**24, open_timeout=10) as ws:
                    self.connects += 1
                    failures = 0
                    self.connected.set()
                    log_event(log, logging.INFO, "connected", exchange=self.exchange, url=self.url)
                    for message in self.subscribe_messages:
                        await ws.send(message)
                    await self._read(ws)
                    if self.stopped:
                        break
                    reason = "closed by peer"
            except (OSError, WebSocketException, asyncio.TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            if self.stopped:
                break
            self.disconnects += 1
            failures += 1
            if self.max_reconnects is not None and failures > self.max_reconnects:
                log_event(log, logging.ERROR, "giving up", exchange=self.exchange, reason=reason)
                break
            delay = self._backoff_s(failures)
            log_event(
                log, logging.WARNING, "disconnected, reconnecting",
                exchange=self.exchange, reason=reason, retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)

    async def _read(self, ws) -> None:
        times: list[float] = []
        messages: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = None
        while not self.stopped:
            timeout = self.silence_timeout_s
            if deadline is not None:
                timeout = max(0.0, min(timeout, deadline - loop.time()))
            try:
                message = await asyncio.wait_for(ws.recv(), timeout)
            except asyncio.CancelledError:
                # Shutting down: what was received is handed on, not lost. The graph's nodes are
                # synchronous, so emitting without awaiting completes before we re-raise.
                if messages:
                    self._emit(RawBatch(self.exchange, np.asarray(times), messages))
                raise
            except asyncio.TimeoutError:
                if not messages:
                    log_event(
                        log, logging.WARNING, "silent connection",
                        exchange=self.exchange, silence_s=self.silence_timeout_s,
                    )
                    return
                message = None
            except WebSocketException:
                if messages:
                    await self._flush(times, messages)
                raise
            if message is not None:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", errors="replace")
                if not messages:
                    deadline = loop.time() + self.batch_max_latency_s
                times.append(self.clock.now())
                messages.append(message)
                self.received += 1
            if messages and (
                len(messages) >= self.batch_max_messages or loop.time() >= deadline
            ):
                await self._flush(times, messages)
                times, messages, deadline = [], [], None
        if messages:
            await self._flush(times, messages)

    async def _flush(self, times: list[float], messages: list[str]) -> None:
        batch = RawBatch(self.exchange, np.asarray(times, dtype=np.float64), messages)
        pending = self._emit(batch)
        if pending:
            await asyncio.gather(*pending)
