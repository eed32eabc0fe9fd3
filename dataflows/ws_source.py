"""A streamz source that reads a websocket and emits ``RawBatch``es.

``streamz.Stream.from_websocket`` is a server and breaks on websockets >= 14 (DESIGN, pitfalls), so
this source is a client: ``run()`` reads ``websockets.connect(...)`` and awaits ``_emit`` for each
batch, which is the graph's backpressure. Messages are gathered into a batch until it holds
``batch_max_messages`` or its first message has waited ``batch_max_latency_s``.

What to say on the connection comes from a ``FeedProtocol`` (dataflows/adapters/base.py): its
subscriptions after every (re)connect, its replies to heartbeats, the requests its adapter queues
(a re-subscribe after a book gap), and a keep-alive ping where the exchange wants one.

Connections are kept up forever by default: on a close, an error or a silence longer than
``silence_timeout_s`` the source reconnects with exponential backoff and full jitter
(``reconnect_initial_s`` doubling up to ``reconnect_max_s``), and subscribes again. Each
connection, drop and silence is logged, counted (``connects``, ``disconnects``, ``silences``) and
emitted as a ``ConnectionEvent`` on ``health``, which the graph turns into rows of ``gaps``.
"""

from __future__ import annotations

import asyncio
import logging
import random

import numpy as np
import streamz
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from dataflows.adapters.base import FeedProtocol
from dataflows.clock import Clock, WallClock
from dataflows.logs import log_event
from models.records import ConnectionEvent, RawBatch

log = logging.getLogger(__name__)

# A closing handshake with a peer that is busy sending can take its full timeout: keep shutdown short.
CLOSE_TIMEOUT_S = 1.0
# A connection that lasted this long resets the backoff.
STABLE_CONNECTION_S = 5.0


class WebsocketSource(streamz.Source):
    def __init__(
        self,
        protocol: FeedProtocol | str,
        exchange: str,
        *,
        clock: Clock | None = None,
        label: str | None = None,
        batch_max_messages: int = 1000,
        batch_max_latency_s: float = 0.05,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        silence_timeout_s: float = 15.0,
        max_reconnects: int | None = None,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        self.protocol = FeedProtocol(protocol) if isinstance(protocol, str) else protocol
        self.exchange = exchange
        self.label = label or exchange
        self.clock = clock or WallClock()
        self.batch_max_messages = batch_max_messages
        self.batch_max_latency_s = batch_max_latency_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.silence_timeout_s = silence_timeout_s
        self.max_reconnects = max_reconnects
        self.connects = 0
        self.disconnects = 0
        self.silences = 0
        self.received = 0
        self.health = streamz.Stream(stream_name=f"{self.label} health")
        self.connected = asyncio.Event()
        self._rng = random.Random(seed)
        super().__init__(**kwargs)

    def _backoff_s(self, failures: int) -> float:
        cap = min(self.reconnect_max_s, self.reconnect_initial_s * 2 ** max(failures - 1, 0))
        return self._rng.uniform(0, cap)  # full jitter: reconnecting clients do not stampede

    @property
    def url(self) -> str:
        return self.protocol.url()

    def _event(self, kind: str, detail: str = "") -> None:
        self.health.emit(ConnectionEvent(self.exchange, self.label, kind, self.clock.now(), detail))

    async def run(self) -> None:
        failures = 0
        while not self.stopped:
            self._silent = False
            try:
                async with connect(
                    self.url, max_size=2**24, open_timeout=10, close_timeout=CLOSE_TIMEOUT_S
                ) as ws:
                    self.connects += 1
                    opened_at = asyncio.get_running_loop().time()
                    self.connected.set()
                    log_event(log, logging.INFO, "connected", exchange=self.exchange, url=self.url)
                    self._event("connected", self.url)
                    for message in self.protocol.on_open():
                        await ws.send(message)
                    await self._read(ws)
                    if self.stopped:
                        break
                    reason = "silent" if self._silent else "closed by peer"
                    # Only a connection that held counts as a recovery: a peer that accepts and
                    # drops at once must still meet a growing backoff, not a reconnect storm.
                    if asyncio.get_running_loop().time() - opened_at >= STABLE_CONNECTION_S:
                        failures = 0
            except (OSError, WebSocketException, asyncio.TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            if self.stopped:
                break
            self.disconnects += 1
            self._event("disconnected", reason)
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
        """Read until the connection ends; hand on every message received, in batches.

        The read loop does as little as possible per message (append, count); a timer task flushes
        a batch whose first message has waited ``batch_max_latency_s`` and closes a connection
        silent for ``silence_timeout_s``. A per-message ``wait_for`` would cost half the rate.
        """
        loop = asyncio.get_running_loop()
        self._times, self._messages = [], []
        self._first_at = self._last_at = loop.time()
        timer = asyncio.create_task(self._timer(ws), name=f"{self.exchange} batch timer")
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", errors="replace")
                if not self._messages:
                    self._first_at = loop.time()
                self._times.append(self.clock.now())
                self._messages.append(message)
                self.received += 1
                for reply in self.protocol.on_message(message):
                    await ws.send(reply)
                if len(self._messages) >= self.batch_max_messages:
                    await self._flush()
                    await self._send_queued(ws)
                    # recv() returns without suspending while frames are queued, so a busy feed
                    # would starve every other task (timers, the dashboards): yield once a batch.
                    await asyncio.sleep(0)
        except asyncio.CancelledError:
            # Shutting down: what was received is handed on, not lost. The graph's nodes are
            # synchronous, so emitting without awaiting completes before we re-raise.
            if self._messages:
                self._emit(self._take_batch())
            raise
        finally:
            timer.cancel()
        await self._flush()

    async def _timer(self, ws) -> None:
        loop = asyncio.get_running_loop()
        period = min(self.batch_max_latency_s / 2, self.silence_timeout_s / 4)
        seen = self.received
        ping_every = self.protocol.ping_interval_s
        next_ping = loop.time() + ping_every if ping_every else None
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            if self.received != seen:
                seen, self._last_at = self.received, now
            if self._messages and now - self._first_at >= self.batch_max_latency_s:
                await self._flush()
            elif now - self._last_at >= self.silence_timeout_s:
                log_event(
                    log, logging.WARNING, "silent connection, closing",
                    exchange=self.exchange, silence_s=self.silence_timeout_s,
                )
                self.silences += 1
                self._silent = True
                self._event("silent", f"no message for {self.silence_timeout_s:g} s")
                await ws.close()
                return
            await self._send_queued(ws)
            if next_ping is not None and now >= next_ping:
                next_ping = now + ping_every
                await ws.send(self.protocol.ping_message())

    async def _send_queued(self, ws) -> None:
        for request in self.protocol.outgoing():
            await ws.send(request)

    def _take_batch(self) -> RawBatch:
        batch = RawBatch(self.exchange, np.asarray(self._times, dtype=np.float64), self._messages)
        self._times, self._messages = [], []
        return batch

    async def _flush(self) -> None:
        if not self._messages:
            return
        pending = self._emit(self._take_batch())
        if pending:
            await asyncio.gather(*pending)
