"""The simulator's machinery: one deterministic scheduler, websocket servers on loopback (one port
per exchange), per-message counting, and fault application.

Shape of a run. ``MultiExchangeSimulator`` (``dataflows/sim/__init__.py``) builds one
``SharedMarket``, one ``Venue`` per exchange (the wire format: ``dataflows/sim/<exchange>.py``),
one ``ExchangeServer`` per venue, and one ``Scheduler``. The scheduler is the only producer: a
heap of timers ``(due_s, fire)`` processed in order of their *scheduled* time (ties in the order
they were added), sleeping on the event loop's monotonic clock until each is due. So the sequence
of market states, generated messages and fault draws depends only on the seed and the
configuration, never on the event loop's timing; with a ``SimulatedClock`` even the timestamps
agree, because event times are ``t0 + due_s`` (``t0`` the clock's reading at start). One
exception by design: Deribit's option tickers go round-robin over the options *subscribed*, so
which option is sent when also depends on the subscriptions (and per-connection snapshots and
acknowledgements on when the client asked).

Counting (DESIGN principle 3). Every frame written to a client socket is counted once, in
``ExchangeServer.sent[(kind, verdict)]`` (verdict "ok", a malformed kind, or "repeat" for the second
copy of a repeated trade), summed over connections. A frame is written synchronously (websockets'
``broadcast`` on one connection), so a message is either in the socket buffer and counted, or
neither. Frames not written are counted apart: ``skipped`` (the client's buffer was over the
limit), ``withheld`` (the venue was stalled). ``meta`` counts properties of written frames and
events: ``skipped_seq`` (sequence numbers skipped by the frames written), ``out_of_order`` (frames
stamped before their predecessor), ``drops`` (connections cut by a drop fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from dataflows.clock import Clock, WallClock
from dataflows.sim.faults import VenueFaults
from dataflows.sim.market import SharedMarket

log = logging.getLogger(__name__)

OK = "ok"
ERROR = "error"
REPEAT = "repeat"
CONTROL = "control"

# Malformations. Each message kind has a ring of the kinds that make sense for it (a crossed book
# needs a bid and an ask, a bad quantity a quantity); the ring is walked round-robin.
TRUNCATED = "truncated"
NONNUMERIC_PRICE = "nonnumeric_price"
MISSING_FIELD = "missing_field"
CROSSED = "crossed"
NONPOSITIVE_QTY = "nonpositive_qty"
MALFORMED_KINDS = (TRUNCATED, CROSSED, NONPOSITIVE_QTY, NONNUMERIC_PRICE, MISSING_FIELD)

META_KEYS = ("skipped_seq", "out_of_order", "drops")

Path = tuple  # keys and list indexes into a message


@dataclass(frozen=True)
class MsgSpec:
    """Where a message keeps the fields a malformation touches (paths of keys / indexes), and the
    ring of malformed kinds for it (default: every kind its paths allow)."""

    price: Path | None = None
    qty: Path | None = None
    bid: Path | None = None
    ask: Path | None = None
    ring: tuple[str, ...] | None = None

    def kinds(self) -> tuple[str, ...]:
        if self.ring is not None:
            return self.ring
        out = [TRUNCATED]
        if self.price is not None:
            out += [NONNUMERIC_PRICE, MISSING_FIELD]
        if self.bid is not None and self.ask is not None:
            out.append(CROSSED)
        if self.qty is not None:
            out.append(NONPOSITIVE_QTY)
        return tuple(out)


def _get(obj: Any, path: Path) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _set(obj: Any, path: Path, value: Any) -> None:
    _get(obj, path[:-1])[path[-1]] = value


def malform(kind: str, obj: Any, spec: MsgSpec, rng) -> bytes:
    """The deliberately bad text of ``obj`` for malformation ``kind`` (still valid UTF-8)."""
    full = orjson.dumps(obj)
    if kind == TRUNCATED:
        # Cutting anywhere before the final bracket leaves the outer value unclosed: never valid.
        return full[: int(rng.integers(1, len(full) - 1))]
    bad = orjson.loads(full)  # a deep copy
    if kind == NONNUMERIC_PRICE:
        _set(bad, spec.price, "abc")
    elif kind == MISSING_FIELD:
        del _get(bad, spec.price[:-1])[spec.price[-1]]
    elif kind == CROSSED:
        bid, ask = _get(bad, spec.bid), _get(bad, spec.ask)
        _set(bad, spec.bid, ask)
        _set(bad, spec.ask, bid)
    elif kind == NONPOSITIVE_QTY:
        qty = _get(bad, spec.qty)
        if isinstance(qty, str):
            _set(bad, spec.qty, "0" if rng.random() < 0.5 else "-" + qty.lstrip("-"))
        else:
            _set(bad, spec.qty, 0 if rng.random() < 0.5 else -abs(qty))
    else:  # pragma: no cover - rings only hold known kinds
        raise ValueError(kind)
    return orjson.dumps(bad)


# --------------------------------------------------------------------------- time and schedule


class SimContext:
    """What every venue shares: the seed, the clock, the market, the configuration, and the
    schedule's current time. ``now_ts`` (epoch seconds) is the event time of the timer being
    fired: ``t0 + sim_s + shift_s``."""

    def __init__(self, seed: int, clock: Clock | None, market: SharedMarket | None,
                 config: Any) -> None:
        self.seed = int(seed)
        self.clock: Clock = clock or WallClock()
        self.market = market
        self.config = config
        self.t0 = self.clock.now()
        self.sim_s = 0.0
        self.shift_s = 0.0

    @property
    def now_ts(self) -> float:
        return self.t0 + self.sim_s + self.shift_s

    def restart(self) -> None:
        self.t0 = self.clock.now()
        self.sim_s = 0.0
        self.shift_s = 0.0


Fire = Callable[[float], "float | None"]


class Scheduler:
    """Timers in order of scheduled time (see the module docstring). ``fire(due_s)`` returns the
    timer's next due time, or None when it is done."""

    MAX_LAG_S = 2.0  # behind by more than this (a paused process): shift, don't burst

    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx
        self._heap: list[tuple[float, int, Fire]] = []
        self._seq = itertools.count()

    def add(self, due_s: float, fire: Fire) -> None:
        heapq.heappush(self._heap, (float(due_s), next(self._seq), fire))

    def run_until(self, end_s: float) -> None:
        """Fire every timer due up to ``end_s`` now, without sleeping (tests, benchmarks)."""
        while self._heap and self._heap[0][0] <= end_s:
            self._fire_next()

    def _fire_next(self) -> None:
        due, _, fire = heapq.heappop(self._heap)
        self.ctx.sim_s = due
        nxt = fire(due)
        if nxt is not None:
            heapq.heappush(self._heap, (nxt, next(self._seq), fire))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        origin = loop.time() - self.ctx.sim_s
        burst = 0
        while self._heap:
            due = self._heap[0][0]
            delay = origin + due - loop.time()
            if delay > 0.0:
                burst = 0
                await asyncio.sleep(delay)
            elif delay < -self.MAX_LAG_S:
                origin -= delay  # resume on schedule from now; the ticks are late, not lost
                self.ctx.shift_s -= delay
            else:
                burst += 1
                if burst >= 256:  # catching up: still let the clients' handlers run
                    burst = 0
                    await asyncio.sleep(0)
            self._fire_next()


def periodic(period_s: float, fn: Callable[[float], None]) -> Fire:
    """A timer firing ``fn(due)`` every ``period_s``."""
    def fire(due: float) -> float:
        fn(due)
        return due + period_s
    return fire


# --------------------------------------------------------------------------- connections


class Conn:
    """One client connection: its websocket, its topics, and per-venue state in ``state``."""

    _ids = itertools.count(1)

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.id = next(self._ids)
        self.topics: dict[str, None] = {}
        self.state: dict[str, Any] = {}
        self.last_sent_s = 0.0  # schedule time of the last frame written (heartbeat logic)

    @property
    def path(self) -> str:
        return urlsplit(self.ws.request.path).path if self.ws.request else "/"

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.ws.request.path).query) if self.ws.request else {}


class Venue:
    """An exchange's wire format and message generation. Subclasses set ``name``, ``paths``,
    ``data_kinds`` (the kinds reported by ``sent_counts``, besides "control") and implement the
    hooks. ``emit`` sends a generated message to a topic's subscribers with the rate faults
    applied; ``send``/``reply`` write to one connection."""

    name = ""
    paths: tuple[str, ...] = ("/",)
    data_kinds: tuple[str, ...] = ()
    heartbeat_kinds: tuple[str, ...] = ()

    def __init__(self, ctx: SimContext, faults: VenueFaults) -> None:
        self.ctx = ctx
        self.faults = faults
        self.server: ExchangeServer | None = None
        self._ring_cursor: Counter[str] = Counter()
        self._last_ts: dict[str, float] = {}

    # ---------------------------------------------------------------- hooks
    def timers(self) -> list[tuple[float, Fire]]:
        return []

    def http(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes] | None:
        """An HTTP GET answer ``(status, JSON body)``, or None (not an HTTP endpoint)."""
        return None

    def on_open(self, conn: Conn) -> None: ...

    def on_text(self, conn: Conn, text: str | bytes) -> None: ...

    def on_close(self, conn: Conn) -> None: ...

    # ---------------------------------------------------------------- helpers for subclasses
    @property
    def market(self) -> SharedMarket:
        assert self.ctx.market is not None
        return self.ctx.market

    @property
    def stale(self) -> bool:
        return self.faults.stale

    def subscribed(self, topic: str) -> bool:
        return self.server is not None and bool(self.server.subscribers.get(topic))

    def event_ts(self, stream: str) -> tuple[float, bool]:
        """The event time for the next message of ``stream``: now, or, when an out-of-order fault
        is drawn, 0.5-2 s before the stream's previous message. Returns ``(ts, out_of_order)``."""
        ts = self.ctx.now_ts
        ooo = self.faults.draw("out_of_order")
        if ooo:
            ts = min(ts, self._last_ts.get(stream, ts)) - float(
                self.faults.detail_rng.uniform(0.5, 2.0))
        else:
            self._last_ts[stream] = ts
        return ts, ooo

    def skip(self) -> bool:
        """Draw a skip_seq fault: True means "skip one sequence number before the next"."""
        return self.faults.draw("skip_seq")

    def emit(self, topic: str, kind: str, obj: Any, spec: MsgSpec | None = None, *,
             trade: bool = False, skipped_seq: int = 0, out_of_order: bool = False,
             payload: bytes | None = None) -> int:
        """Send ``obj`` to ``topic``'s subscribers, with the malformed and repeat faults drawn
        (always, subscribers or not, so the draws do not depend on who is connected). Returns
        the number of frames written."""
        verdict = OK
        if spec is not None and self.faults.draw("malformed"):
            ring = spec.kinds()
            verdict = ring[self._ring_cursor[kind] % len(ring)]
            self._ring_cursor[kind] += 1
            payload = malform(verdict, obj, spec, self.faults.detail_rng)
        repeat = trade and verdict == OK and self.faults.draw("repeat_trades")
        server = self.server
        if server is None or not server.subscribers.get(topic):
            return 0
        if payload is None:
            payload = orjson.dumps(obj)
        n = server.publish(topic, kind, payload, verdict, skipped_seq=skipped_seq,
                           out_of_order=out_of_order and verdict == OK)
        if repeat:
            n += server.publish(topic, kind, payload, REPEAT)
        return n

    def send(self, conn: Conn, kind: str, obj: Any, verdict: str = OK) -> bool:
        """Write one message to one connection now (snapshots, acks); no rate faults."""
        assert self.server is not None
        payload = obj if isinstance(obj, bytes) else orjson.dumps(obj)
        return self.server.send(conn, kind, payload, verdict)

    def reply(self, conn: Conn, obj: Any, verdict: str = OK) -> bool:
        return self.send(conn, CONTROL, obj, verdict)


class ExchangeServer:
    """One venue's websocket server on loopback (its own port), with its connections and counters.

    ``url`` is ``ws://HOST:PORT`` + the venue's main path; HTTP GETs the venue answers
    (``Venue.http``) are served on the same port.
    """

    def __init__(self, venue: Venue, host: str = "127.0.0.1", port: int = 0, *,
                 max_client_buffer_bytes: int = 1 << 22, close_timeout_s: float = 2.0) -> None:
        self.venue = venue
        venue.server = self
        self.host = host
        self.requested_port = int(port)
        self.max_client_buffer_bytes = int(max_client_buffer_bytes)
        self.close_timeout_s = close_timeout_s
        self.conns: dict[Conn, None] = {}
        self._by_ws: dict[ServerConnection, Conn] = {}
        self.subscribers: dict[str, dict[Conn, None]] = {}
        self.sent: Counter[tuple[str, str]] = Counter()
        self.skipped: Counter[tuple[str, str]] = Counter()
        self.withheld: Counter[tuple[str, str]] = Counter()
        self.meta: Counter[str] = Counter({k: 0 for k in META_KEYS})
        self.http_requests = 0
        self.stalled = False
        self._server: Server | None = None
        self._port: int | None = None

    # ---------------------------------------------------------------- addresses
    @property
    def name(self) -> str:
        return self.venue.name

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"the {self.name} simulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        path = self.venue.paths[0]
        return self.base_url + ("" if path == "/" else path)

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"the {self.name} simulator is already started")
        self._server = await serve(
            self._handle, self.host, self.requested_port, process_request=self._process_request,
            # Exchanges do not compress market streams; plain frames keep the bytes comparable.
            compression=None, close_timeout=self.close_timeout_s, max_size=1 << 22,
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self._port = None

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---------------------------------------------------------------- requests
    def _process_request(self, connection: ServerConnection, request: Any) -> Any:
        split = urlsplit(request.path)
        path = split.path.rstrip("/") or "/"
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if not upgrade:
            answer = self.venue.http(path, parse_qs(split.query))
            if answer is not None:
                self.http_requests += 1
                status, body = answer
                response = connection.respond(HTTPStatus(status), "")
                del response.headers["Content-Type"]
                del response.headers["Content-Length"]
                response.headers["Content-Type"] = "application/json"
                response.headers["Content-Length"] = str(len(body))
                response.body = body
                return response
        if path not in self.venue.paths:
            return connection.respond(
                HTTPStatus.NOT_FOUND,
                f"the {self.name} simulator serves {', '.join(self.venue.paths)} only\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Conn(ws)
        self.conns[conn] = None
        self._by_ws[ws] = conn
        try:
            self.venue.on_open(conn)
            async for message in ws:
                self.venue.on_text(conn, message)
        except ConnectionClosed:
            pass  # abrupt disconnects are normal for a market-data server
        finally:
            self.venue.on_close(conn)
            for topic in list(conn.topics):
                self.unsubscribe(conn, topic)
            self.conns.pop(conn, None)
            self._by_ws.pop(ws, None)

    # ---------------------------------------------------------------- subscriptions
    def subscribe(self, conn: Conn, topic: str) -> None:
        conn.topics[topic] = None
        self.subscribers.setdefault(topic, {})[conn] = None

    def unsubscribe(self, conn: Conn, topic: str) -> None:
        conn.topics.pop(topic, None)
        subs = self.subscribers.get(topic)
        if subs is not None:
            subs.pop(conn, None)
            if not subs:
                del self.subscribers[topic]

    # ---------------------------------------------------------------- writing
    def _write(self, conn: Conn, payload: bytes, key: tuple[str, str], limit: int | None) -> bool:
        ws = conn.ws
        if ws.state is not State.OPEN or "dropped" in conn.state:
            return False
        if self.stalled:
            self.withheld[key] += 1
            return False
        if limit is not None and ws.transport.get_write_buffer_size() > limit:
            self.skipped[key] += 1
            return False
        try:
            broadcast([ws], payload, text=True, raise_exceptions=True)
        except ExceptionGroup:
            return False
        self.sent[key] += 1
        conn.last_sent_s = self.venue.ctx.sim_s
        return True

    def publish(self, topic: str, kind: str, payload: bytes, verdict: str = OK, *,
                skipped_seq: int = 0, out_of_order: bool = False) -> int:
        n = 0
        for conn in list(self.subscribers.get(topic, ())):
            if self._write(conn, payload, (kind, verdict), self.max_client_buffer_bytes):
                n += 1
        if n:
            if skipped_seq:
                self.meta["skipped_seq"] += skipped_seq * n
            if out_of_order:
                self.meta["out_of_order"] += n
        return n

    def send(self, conn: Conn, kind: str, payload: bytes, verdict: str = OK) -> bool:
        # Replies and snapshots ignore the slow-client limit: dropping one would wedge the client.
        return self._write(conn, payload, (kind, verdict), None)

    def drop_all(self, mode: str = "abort") -> int:
        """Cut every open connection: "abort" without a close frame (the TCP connection is closed
        under the client: it sees 1006), "close" with a close frame (1011). Nothing more is
        written to a dropped connection, and an abort waits for the frames already counted to
        leave the transport's buffer, so every counted frame reaches the client."""
        n = 0
        for conn in list(self.conns):
            ws = conn.ws
            if ws.state is not State.OPEN or conn.state.get("dropped"):
                continue
            n += 1
            conn.state["dropped"] = True
            if mode == "close":
                asyncio.ensure_future(ws.close(1011, "simulated drop"))
            else:
                self._abort_when_flushed(ws, deadline=asyncio.get_running_loop().time() + 2.0)
        self.meta["drops"] += n
        return n

    def _abort_when_flushed(self, ws: ServerConnection, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if ws.transport.get_write_buffer_size() == 0 or loop.time() > deadline:
            ws.transport.abort()
        else:
            loop.call_later(0.005, self._abort_when_flushed, ws, deadline)

    # ---------------------------------------------------------------- counters
    def sent_counts(self) -> dict[str, int]:
        """Frames written, by kind (see ``MultiExchangeSimulator.sent_counts``)."""
        counts = {kind: 0 for kind in self.venue.data_kinds + self.venue.heartbeat_kinds}
        counts.update({CONTROL: 0, "malformed": 0, "repeated_trades": 0})
        for (kind, verdict), n in self.sent.items():
            if verdict == REPEAT:
                counts["repeated_trades"] += n
            elif kind == CONTROL:
                counts[CONTROL] += n
            elif verdict == OK:
                counts[kind] = counts.get(kind, 0) + n
            else:
                counts["malformed"] += n
        counts["total"] = sum(counts.values())
        counts.update({k: self.meta[k] for k in META_KEYS})
        return counts

    def malformed_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(MALFORMED_KINDS, 0)
        for (kind, verdict), n in self.sent.items():
            if kind != CONTROL and verdict not in (OK, REPEAT):
                counts[verdict] = counts.get(verdict, 0) + n
        return counts


def parse_json(text: str | bytes) -> Any:
    """``orjson.loads`` that returns None instead of raising (bad client requests)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def first_value(query: dict[str, list[str]], key: str, default: str = "") -> str:
    values = query.get(key)
    return values[0] if values else default


# --------------------------------------------------------------------------- a whole simulator


class SimulatorBase:
    """Servers for some venues, one scheduler, timed faults and the run's lifecycle.

    Subclasses build the venues (``_build``) and may add market timers; ``start()`` binds every
    server (all or none), fixes ``t0`` from the clock, schedules every timer and starts the single
    producer; ``stop()`` stops producing, then closes every client (code 1001, after its pending
    data) and stops listening. ``async with`` does both.
    """

    def __init__(self, ctx: SimContext, venues: list[Venue], host: str, ports: dict[str, int],
                 faults: Any, *, max_client_buffer_bytes: int, close_timeout_s: float) -> None:
        self.ctx = ctx
        self.host = host
        self.fault_plan = faults
        self.venues = {v.name: v for v in venues}
        self.servers = {
            v.name: ExchangeServer(v, host, ports.get(v.name, 0),
                                   max_client_buffer_bytes=max_client_buffer_bytes,
                                   close_timeout_s=close_timeout_s)
            for v in venues
        }
        #: set once every server is listening (``urls`` valid from then on).
        self.started = asyncio.Event()
        self.scheduler: Scheduler | None = None
        self._producer: asyncio.Task | None = None
        self._timers_made = False

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    # ---------------------------------------------------------------- lifecycle
    def _market_timers(self) -> list[tuple[float, Fire]]:
        return []

    def _fault_timers(self) -> list[tuple[float, Fire]]:
        out: list[tuple[float, Fire]] = []
        for t in getattr(self.fault_plan, "timed", ()):
            if t.venue not in self.servers:
                continue
            out.append((t.at_s, self._fault_action(t, start=True)))
            if t.end_s is not None and t.kind != "drop":
                out.append((t.end_s, self._fault_action(t, start=False)))
        return out

    def _fault_action(self, t: Any, start: bool) -> Fire:
        def fire(due: float) -> None:
            if t.kind == "drop":
                self.drop(t.venue, t.mode)
            elif t.kind == "stall":
                self.servers[t.venue].stalled = start
            elif t.kind == "stale":
                self.venues[t.venue].faults.stale = start
            elif t.kind == "deviate":
                self.venues[t.venue].faults.deviation = t.pct if start else 0.0
            log.info("simulator fault %s %s on %s at %.3f s", t.kind,
                     "start" if start else "end", t.venue, due)
            return None
        return fire

    def _build_schedule(self) -> Scheduler:
        scheduler = Scheduler(self.ctx)
        for due, fire in self._market_timers():
            scheduler.add(due, fire)
        for venue in self.venues.values():
            for due, fire in venue.timers():
                scheduler.add(due, fire)
        for due, fire in self._fault_timers():
            scheduler.add(due, fire)
        return scheduler

    def drive(self, until_s: float) -> None:
        """Run the schedule up to ``until_s`` seconds of simulation time at once, without sockets
        or sleeping (nothing is sent: no client can be connected). The market, every venue's
        state and every fault draw advance exactly as in a live run: tests and benchmarks use it
        to look at what a seed produces. Not after ``start()``."""
        if self._producer is not None:
            raise RuntimeError("drive() is for a simulator that is not started")
        if self.scheduler is None:
            self.ctx.restart()
            self.scheduler = self._build_schedule()
            self._timers_made = True
        self.scheduler.run_until(until_s)

    async def start(self) -> None:
        """Bind every server and start producing. Raises ``RuntimeError`` if already started, and
        whatever binding raised (``OSError``: port taken) after closing what was opened."""
        if self._producer is not None or any(s.running for s in self.servers.values()):
            raise RuntimeError("the simulator is already started")
        if self._timers_made:
            raise RuntimeError("a simulator runs once; make a new one")
        try:
            for server in self.servers.values():
                await server.start()
        except BaseException:
            for server in self.servers.values():
                await server.stop()
            raise
        self.ctx.restart()
        self.scheduler = self._build_schedule()
        self._timers_made = True
        self._producer = asyncio.create_task(self._produce(), name="exchange-simulator-producer")
        self.started.set()
        log.info("exchange simulator listening: %s", self.urls)

    async def _produce(self) -> None:
        try:
            assert self.scheduler is not None
            await self.scheduler.run()
        except Exception:
            # Say so at once: otherwise a dead producer looks like a quiet market until stop().
            log.exception("exchange simulator producer failed")
            raise

    async def stop(self) -> None:
        """Idempotent. After it returns, the counters no longer change."""
        producer, self._producer = self._producer, None
        try:
            if producer is not None:
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer  # re-raises here if the producer had crashed
        finally:
            for server in self.servers.values():
                await server.stop()
            self.started.clear()

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- addresses
    @property
    def urls(self) -> dict[str, str]:
        """The websocket URL per exchange (see ``MultiExchangeSimulator``)."""
        return {name: server.url for name, server in self.servers.items()}

    # ---------------------------------------------------------------- counters
    def sent_counts(self, exchange: str | None = None) -> dict:
        """Frames written per kind for ``exchange``; without one, ``{exchange: counts}``."""
        if exchange is None:
            return {name: server.sent_counts() for name, server in self.servers.items()}
        return self.servers[exchange].sent_counts()

    def withheld_counts(self, exchange: str) -> dict[str, int]:
        """Messages generated but not written: by the stall fault (``stalled``) and because the
        client's buffer was full (``slow_client``)."""
        server = self.servers[exchange]
        return {"stalled": sum(server.withheld.values()),
                "slow_client": sum(server.skipped.values())}

    # ---------------------------------------------------------------- faults, now
    def drop(self, exchange: str, mode: str = "abort") -> int:
        """Cut every connection of ``exchange`` now; returns how many."""
        return self.servers[exchange].drop_all(mode)

    def stall(self, exchange: str, seconds: float | None) -> None:
        """Stop ``exchange`` sending anything for ``seconds`` (None: until ``stall(ex, 0)``)."""
        server = self.servers[exchange]
        server.stalled = seconds is None or seconds > 0
        if seconds:
            asyncio.get_running_loop().call_later(seconds, setattr, server, "stalled", False)

    def set_stale(self, exchange: str, stale: bool = True) -> None:
        self.venues[exchange].faults.stale = stale

    def set_deviation(self, exchange: str, pct: float) -> None:
        """``exchange``'s prices off by ``pct`` (fraction: 0.05 = 5 % high); 0 to end."""
        self.venues[exchange].faults.deviation = pct

    def set_fault_rate(self, kind: str, rate: float, exchange: str | None = None) -> None:
        """Set a rate fault (``malformed``, ``skip_seq``, ``repeat_trades``, ``out_of_order``)
        for one exchange or all."""
        for name, venue in self.venues.items():
            if exchange is None or name == exchange:
                venue.faults.set_rate(kind, rate)
