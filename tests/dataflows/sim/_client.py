"""Test helpers: talk to the simulator like a feed does, and read what came back.

``Client`` connects to a URL, sends a protocol's opening requests (or given requests), answers
what the protocol answers (Deribit ``test_request``), and records every received text frame with
its receive time until told to stop or the server closes the connection (``closed`` then holds
the ``ConnectionClosed`` exception: ``rcvd`` is the server's close frame, None when the
connection was cut without one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import numpy as np
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from models.records import RawBatch


def run(coro, timeout_s: float = 30.0):
    """Run a scenario with ``asyncio.run``, bounded in time (a hang fails, not stalls)."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout_s)
    return asyncio.run(bounded())


class Client:
    def __init__(self, url: str, requests: Iterable[str] = (), protocol=None) -> None:
        self.url = url
        self.protocol = protocol
        self.requests = list(requests)
        self.messages: list[tuple[float, str]] = []
        self.closed: BaseException | None = None
        self._task: asyncio.Task | None = None
        self.ws = None
        self.connected = asyncio.Event()

    async def __aenter__(self) -> "Client":
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _run(self) -> None:
        try:
            async with connect(self.url, max_size=1 << 24, compression=None) as ws:
                self.ws = ws
                opening = list(self.protocol.on_open()) if self.protocol else []
                for request in opening + self.requests:
                    await ws.send(request)
                self.connected.set()
                async for raw in ws:
                    self.messages.append((time.time(), raw))
                    if self.protocol is not None:
                        for reply in self.protocol.on_message(raw) + self.protocol.outgoing():
                            await ws.send(reply)
                # A clean close ends the iteration without raising: keep why it closed.
                self.closed = ws.protocol.close_exc
        except ConnectionClosed as exc:
            self.closed = exc
        finally:
            self.connected.set()

    async def send(self, request: str | dict) -> None:
        await self.ws.send(request if isinstance(request, str) else orjson.dumps(request).decode())

    async def wait_for(self, predicate, timeout_s: float = 5.0) -> None:
        """Wait until ``predicate(self.messages)`` holds."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not predicate(self.messages):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("condition not met; last messages: "
                                   + repr([m for _, m in self.messages[-3:]])[:500])
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, 10)

    @property
    def texts(self) -> list[str]:
        return [m for _, m in self.messages]

    def parsed(self) -> list:
        out = []
        for raw in self.texts:
            try:
                out.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                out.append(None)
        return out

    def batch(self, exchange: str) -> RawBatch:
        return RawBatch(exchange, np.asarray([t for t, _ in self.messages], dtype=np.float64),
                        [m for _, m in self.messages])
