"""A local Binance: a websockets server on loopback that speaks Binance spot's combined-stream format.

The real exchanges are unreachable from these machines, so the feeds, the graph and the integration
tests run against this simulator instead. It is a fake only in where the prices come from (a seeded
``models.market_sim`` path per symbol); the wire protocol is Binance's, byte for byte as recorded in
``../shared/data/recorded/BINANCE.ws.1.0``:

- connect to ``ws://HOST:PORT/stream?streams=btcusdt@bookTicker/btcusdt@aggTrade/...``; stream
  names are ``<lower-case symbol>@bookTicker`` and ``<lower-case symbol>@aggTrade``; names the
  simulator does not serve are accepted and silently never produce data, as on Binance;
- every data message is wrapped as ``{"stream":"<name>","data":{...}}`` in compact JSON;
- bookTicker data ``{"u":...,"s":"BTCUSDT","b":"97000.12000000","B":"0.51000000","a":...,"A":...}``;
- aggTrade data ``{"e":"aggTrade","E":ms,"s":...,"a":id,"p":"...","q":"...","f":id,"l":id,
  "T":ms,"m":bool,"M":true}``;
- live control requests ``{"method":"SUBSCRIBE"|"UNSUBSCRIBE","params":[...],"id":N}`` are answered
  ``{"result":null,"id":N}``; ``LIST_SUBSCRIPTIONS`` with the list; ``GET_PROPERTY`` /
  ``SET_PROPERTY`` for ``combined``; bad requests with ``{"error":{"code":C,"msg":...},"id":N}``.

Conventions: prices in the symbol's quote currency, quantities in the base asset (coin), both as
decimal strings with 8 decimals on the symbol's tick/lot grid; event times ``E``/``T`` are integer
epoch milliseconds read from the injected clock. Per symbol, ``u`` (bookTicker update id) and ``a``
(aggregate trade id) increase by exactly 1 per message generated, and ``f``..``l`` (trade ids) are
contiguous across aggTrades, so a client can detect every message it did not receive.

Reproducibility: the market of each symbol, its trade flow, and the malformed-message choices all
come from ``numpy`` generators seeded from ``(seed, symbol)``; ticks are processed in the order of
their *scheduled* times, not of when the event loop got round to them, so two runs with the same
seed generate the same messages (with a ``SimulatedClock`` even the timestamps agree). A client
sees the part of that sequence generated while it was subscribed.

Accounting (DESIGN principle 3): ``sent`` counts every message actually written to a client socket,
summed over connections, keyed by ``(stream_kind, verdict)``; a message skipped because the client
is too slow to drain its buffer is counted in ``skipped`` instead. ``sent_counts()`` summarises.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from dataflows.clock import Clock, WallClock
from models.market_sim import GbmJumpParams, GbmJumpPath, bid_ask

__all__ = [
    "BOOK_TICKER",
    "AGG_TRADE",
    "MALFORMED_KINDS",
    "BinanceSimulator",
    "MarketSpec",
    "SymbolMarket",
    "market_spec_for",
    "run_simulator",
]

log = logging.getLogger(__name__)

BOOK_TICKER = "bookTicker"
AGG_TRADE = "aggTrade"
CONTROL = "control"
OK = "ok"
ERROR = "error"

# Malformations, applied per stream kind in round-robin order (each ring only holds the kinds
# that make sense for that message: a crossed book needs a quote, a bad quantity a trade).
TRUNCATED = "truncated"
CROSSED = "crossed"
NONPOSITIVE_QTY = "nonpositive_qty"
NONNUMERIC_PRICE = "nonnumeric_price"
MALFORMED_KINDS = (TRUNCATED, CROSSED, NONPOSITIVE_QTY, NONNUMERIC_PRICE)
_MALFORMED_RING = {
    BOOK_TICKER: (TRUNCATED, CROSSED),
    AGG_TRADE: (TRUNCATED, NONPOSITIVE_QTY, NONNUMERIC_PRICE),
}

# Quote currencies whose prices the USD table below applies to.
_USD_QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USD")


@dataclass(frozen=True)
class MarketSpec:
    """Defaults for one simulated base asset.

    Attributes:
        spot_usd: starting mid (USD-like quote currency).
        vol_annual: annualized volatility as a fraction.
        tick_size: price grid (quote currency); bids round down to it, asks up.
        lot_size: quantity grid (coin); every quantity is at least one lot.
        quote_notional_usd: median size shown at the best bid/ask, in USD.
        trade_notional_usd: median aggregate-trade size, in USD.
    """

    spot_usd: float
    vol_annual: float
    tick_size: float = 0.01
    lot_size: float = 0.001
    quote_notional_usd: float = 50_000.0
    trade_notional_usd: float = 2_000.0


DEFAULT_MARKETS: dict[str, MarketSpec] = {
    "BTC": MarketSpec(spot_usd=97_000.0, vol_annual=0.55, tick_size=0.01, lot_size=0.00001),
    "ETH": MarketSpec(spot_usd=3_100.0, vol_annual=0.70, tick_size=0.01, lot_size=0.0001),
}
UNKNOWN_MARKET = MarketSpec(spot_usd=100.0, vol_annual=0.80, tick_size=0.01, lot_size=0.001)


def market_spec_for(symbol: str) -> MarketSpec:
    """The defaults for ``symbol`` (e.g. ``"BTCUSDT"`` → the BTC row); unknown → ``UNKNOWN_MARKET``.

    Only USD-like quote currencies use the table (an ``ETHBTC`` is not priced at 3,100).
    """
    symbol = symbol.upper()
    for quote in _USD_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return DEFAULT_MARKETS.get(symbol[: -len(quote)], UNKNOWN_MARKET)
    return UNKNOWN_MARKET


def _fmt(value: float) -> str:
    """Binance's decimal strings: fixed point, 8 decimals."""
    return f"{value:.8f}"


def _symbol_seed(seed: int, symbol: str) -> np.random.SeedSequence:
    # crc32, not hash(): str hashes are salted per process and would break reproducibility.
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(symbol.encode())])


class SymbolMarket:
    """One symbol's market state and message generator (no I/O, no clock: times are passed in).

    The mid follows a ``GbmJumpPath`` with its own generator, so the price sequence depends only on
    the seed, the symbol and the number of quote ticks; sizes, trade sides and trade arrival times
    come from a second generator.
    """

    def __init__(self, symbol: str, seed: int, spec: MarketSpec | None = None,
                 half_spread_bps: float = 1.0) -> None:
        self.symbol = symbol.upper()
        self.spec = spec or market_spec_for(self.symbol)
        self.params = GbmJumpParams(spot_usd=self.spec.spot_usd, vol_annual=self.spec.vol_annual,
                                    half_spread_bps=half_spread_bps)
        path_seed, flow_seed = _symbol_seed(seed, self.symbol).spawn(2)
        self.path = GbmJumpPath(self.params, np.random.default_rng(path_seed))
        self.rng = np.random.default_rng(flow_seed)
        # Ids start at plausible, seed-dependent values (Binance's are in the hundreds of millions).
        self.update_id = int(self.rng.integers(100_000_000, 500_000_000))
        self.agg_trade_id = int(self.rng.integers(1_000_000, 50_000_000))
        self.trade_id = int(self.rng.integers(10_000_000, 200_000_000))
        self.bid, self.ask = self._grid_quote(self.path.price)

    @property
    def stream_names(self) -> tuple[str, str]:
        """``(<symbol>@bookTicker, <symbol>@aggTrade)`` in Binance's lower-case form."""
        s = self.symbol.lower()
        return f"{s}@{BOOK_TICKER}", f"{s}@{AGG_TRADE}"

    def _grid_quote(self, mid: float) -> tuple[float, float]:
        tick = self.spec.tick_size
        raw_bid, raw_ask = bid_ask(mid, self.params.half_spread_bps)
        bid_ticks = max(1, math.floor(raw_bid / tick))
        ask_ticks = max(bid_ticks + 1, math.ceil(raw_ask / tick))  # never crossed, never locked
        return bid_ticks * tick, ask_ticks * tick

    def _size(self, notional_usd: float, price: float) -> float:
        # Log-normal around the median notional, on the lot grid, at least one lot.
        coin = notional_usd * math.exp(self.rng.normal(0.0, 1.0)) / price
        lot = self.spec.lot_size
        return max(1, round(coin / lot)) * lot

    def next_quote(self, dt_s: float) -> dict[str, Any]:
        """Advance the mid by ``dt_s`` seconds; the new top of book as bookTicker ``data``."""
        self.bid, self.ask = self._grid_quote(self.path.step(dt_s))
        self.update_id += 1
        return {
            "u": self.update_id,
            "s": self.symbol,
            "b": _fmt(self.bid),
            "B": _fmt(self._size(self.spec.quote_notional_usd, self.bid)),
            "a": _fmt(self.ask),
            "A": _fmt(self._size(self.spec.quote_notional_usd, self.ask)),
        }

    def next_trade(self, event_ms: int) -> dict[str, Any]:
        """An aggregate trade at the current touch as aggTrade ``data``, stamped ``event_ms``.

        ``m`` (buyer is maker) true means a taker sold into the bid; false, a taker bought the ask.
        """
        buyer_is_maker = bool(self.rng.random() < 0.5)
        price = self.bid if buyer_is_maker else self.ask
        n_fills = int(self.rng.integers(1, 4))
        qty = self._size(self.spec.trade_notional_usd, price)
        self.agg_trade_id += 1
        first = self.trade_id + 1
        self.trade_id += n_fills
        return {
            "e": "aggTrade",
            "E": event_ms,
            "s": self.symbol,
            "a": self.agg_trade_id,
            "p": _fmt(price),
            "q": _fmt(qty),
            "f": first,
            "l": self.trade_id,
            "T": event_ms,
            "m": buyer_is_maker,
            "M": True,
        }

    def next_trade_gap_s(self, rate_hz: float) -> float:
        """Seconds to the next trade: Poisson arrivals at ``rate_hz``."""
        return float(self.rng.exponential(1.0 / rate_hz))


def _malform(kind: str, stream: str, data: dict[str, Any], rng: np.random.Generator) -> bytes:
    """The deliberately bad text for ``kind`` (still valid UTF-8, so still a text frame)."""
    if kind == TRUNCATED:
        full = orjson.dumps({"stream": stream, "data": data})
        # Cutting anywhere before the final brace leaves the outer object unclosed: never valid.
        return full[: int(rng.integers(1, len(full) - 1))]
    bad = dict(data)
    if kind == CROSSED:
        bad["b"], bad["a"] = data["a"], data["b"]  # ask > bid strictly, so now bid > ask
    elif kind == NONPOSITIVE_QTY:
        bad["q"] = "0.00000000" if rng.random() < 0.5 else "-" + data["q"]
    elif kind == NONNUMERIC_PRICE:
        bad["p"] = "abc"
    else:  # pragma: no cover - the rings only hold known kinds
        raise ValueError(kind)
    return orjson.dumps({"stream": stream, "data": bad})


class BinanceSimulator:
    """A Binance spot combined-stream server on loopback, driven by seeded market models.

    Args:
        symbols: upper-case Binance symbols to simulate (``"BTCUSDT"``); defaults per base asset
            come from ``DEFAULT_MARKETS`` (BTC 97,000 / 55 % vol, ETH 3,100 / 70 % vol, else 100.0).
        seed: seeds every generator, per symbol, so runs are reproducible.
        quote_rate_hz: bookTicker messages per second per symbol (the mid moves on each one).
        trade_rate_hz: mean aggTrade messages per second per symbol (Poisson arrivals).
        malformed_rate: fraction of generated messages replaced by a malformed one, in [0, 1].
        host, port: where to listen; port 0 picks a free port (read ``.port`` after ``start()``).
        clock: source of event times (``.now()`` in epoch seconds); pacing itself always uses the
            event loop's monotonic clock, so a ``SimulatedClock`` only changes the timestamps.
        half_spread_bps: quoted half spread around the mid, basis points.
        max_client_buffer_bytes: a client whose unsent buffer exceeds this gets messages skipped
            (counted in ``skipped``) rather than buffered without bound.
        close_timeout_s: how long ``stop()`` waits for each client's closing handshake.
    """

    def __init__(
        self,
        symbols: Iterable[str] = ("BTCUSDT", "ETHUSDT"),
        seed: int = 7,
        quote_rate_hz: float = 20.0,
        trade_rate_hz: float = 5.0,
        malformed_rate: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock | None = None,
        half_spread_bps: float = 1.0,
        max_client_buffer_bytes: int = 1 << 20,
        close_timeout_s: float = 2.0,
    ) -> None:
        self.symbols = tuple(s.strip().upper() for s in symbols)
        if not self.symbols or any(not s for s in self.symbols):
            raise ValueError(f"symbols must be non-empty names, got {symbols!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"duplicate symbols in {self.symbols!r}")
        if not (quote_rate_hz >= 0.0 and trade_rate_hz >= 0.0):
            raise ValueError("quote_rate_hz and trade_rate_hz must be >= 0")
        if not 0.0 <= malformed_rate <= 1.0:
            raise ValueError(f"malformed_rate must be in [0, 1], got {malformed_rate!r}")
        self.seed = int(seed)
        self.quote_rate_hz = float(quote_rate_hz)
        self.trade_rate_hz = float(trade_rate_hz)
        self.malformed_rate = float(malformed_rate)
        self.host = host
        self.clock: Clock = clock or WallClock()
        self.max_client_buffer_bytes = int(max_client_buffer_bytes)
        self.close_timeout_s = close_timeout_s

        self.markets = {s: SymbolMarket(s, self.seed, half_spread_bps=half_spread_bps)
                        for s in self.symbols}
        self._stream_kind: dict[str, tuple[str, SymbolMarket]] = {}
        for market in self.markets.values():
            book, trade = market.stream_names
            self._stream_kind[book] = (BOOK_TICKER, market)
            self._stream_kind[trade] = (AGG_TRADE, market)
        # Server-level generator for the malformed choices (not per symbol: one stream of decisions
        # in schedule order, itself deterministic).
        self._malformed_rng = np.random.default_rng(
            np.random.SeedSequence([self.seed & 0xFFFFFFFF, zlib.crc32(b"malformed")]))
        self._malformed_cursor = {kind: 0 for kind in _MALFORMED_RING}

        #: messages written to client sockets, summed over connections: (stream_kind, verdict) → n.
        #: verdict is "ok", a malformed kind, or for "control" either "ok" or "error".
        self.sent: Counter[tuple[str, str]] = Counter()
        #: messages not written because the client's buffer was full: (stream_kind, verdict) → n.
        self.skipped: Counter[tuple[str, str]] = Counter()
        #: set once the server is listening (``.port`` and ``.url`` are valid from then on).
        self.started = asyncio.Event()

        self._requested_port = int(port)
        self._port: int | None = None
        self._server: Server | None = None
        self._producer: asyncio.Task[None] | None = None
        # stream name → connections subscribed; connection → its subscriptions in request order.
        self._subscribers: dict[str, set[ServerConnection]] = {}
        self._subscriptions: dict[ServerConnection, dict[str, None]] = {}

    # ------------------------------------------------------------------ addresses

    @property
    def streams(self) -> list[str]:
        """Every stream name served, e.g. ``["btcusdt@bookTicker", "btcusdt@aggTrade", ...]``."""
        return list(self._stream_kind)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``ws://HOST:PORT`` of the running server."""
        return f"ws://{self.host}:{self.port}"

    def url_for(self, streams: Iterable[str]) -> str:
        """The combined-stream URL for ``streams``: ``ws://HOST:PORT/stream?streams=a/b/c``."""
        return f"{self.base_url}/stream?streams={'/'.join(streams)}"

    @property
    def url(self) -> str:
        """The combined-stream URL subscribing to every stream served."""
        return self.url_for(self.streams)

    # ------------------------------------------------------------------ counters

    def sent_counts(self) -> dict[str, int]:
        """Totals of messages written to sockets (over all connections): ``bookTicker`` and
        ``aggTrade`` (well-formed only), ``malformed`` (all kinds, either stream), ``control``
        (acks and error replies) and ``total`` (their sum)."""
        counts = {BOOK_TICKER: 0, AGG_TRADE: 0, "malformed": 0, CONTROL: 0}
        for (kind, verdict), n in self.sent.items():
            if kind == CONTROL:
                counts[CONTROL] += n
            elif verdict == OK:
                counts[kind] += n
            else:
                counts["malformed"] += n
        counts["total"] = sum(counts.values())
        return counts

    def malformed_counts(self) -> dict[str, int]:
        """Malformed messages written to sockets, per kind (``MALFORMED_KINDS``)."""
        counts = dict.fromkeys(MALFORMED_KINDS, 0)
        for (kind, verdict), n in self.sent.items():
            if kind != CONTROL and verdict != OK:
                counts[verdict] += n
        return counts

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and start producing ticks. Raises ``RuntimeError`` if already started."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._check_path,
            # Binance does not compress market streams; plain frames keep the bytes comparable.
            compression=None,
            close_timeout=self.close_timeout_s,
        )
        self._port = self._server.sockets[0].getsockname()[1]
        self._producer = asyncio.create_task(self._produce(), name="binance-simulator-producer")
        self.started.set()
        log.info("binance simulator listening on %s", self.base_url)

    async def stop(self) -> None:
        """Stop producing, close every client (code 1001, after its pending data), stop listening.

        Idempotent. After it returns, ``sent`` no longer changes.
        """
        producer, self._producer = self._producer, None
        try:
            if producer is not None:
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer  # re-raises here if the producer had crashed
        finally:
            server, self._server = self._server, None
            if server is not None:
                server.close()
                await server.wait_closed()
            self._port = None
            self.started.clear()

    async def __aenter__(self) -> BinanceSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ connections

    def _check_path(self, connection: ServerConnection, request: Any) -> Any:
        # Only the combined-stream endpoint is simulated; raw /ws/<stream> endpoints get a 404
        # rather than a connection that silently never delivers.
        if urlsplit(request.path).path.rstrip("/") != "/stream":
            return connection.respond(HTTPStatus.NOT_FOUND,
                                      "the simulator serves /stream?streams=... only\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path).query)
        names = [n for value in query.get("streams", []) for n in value.split("/") if n]
        self._subscriptions[ws] = {}
        self._subscribe(ws, names)
        try:
            async for message in ws:
                self._on_request(ws, message)
        except ConnectionClosed:
            pass  # abrupt disconnects are normal for a market-data server
        finally:
            for name in self._subscriptions.pop(ws, {}):
                self._subscribers.get(name, set()).discard(ws)

    def _subscribe(self, ws: ServerConnection, names: Iterable[str]) -> None:
        for name in names:
            self._subscriptions[ws][name] = None
            self._subscribers.setdefault(name, set()).add(ws)

    def _unsubscribe(self, ws: ServerConnection, names: Iterable[str]) -> None:
        for name in names:
            self._subscriptions[ws].pop(name, None)
            self._subscribers.get(name, set()).discard(ws)

    def _on_request(self, ws: ServerConnection, message: str | bytes) -> None:
        """Answer one client request the way Binance's stream endpoint does."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            self._reply_error(ws, 3, f"Invalid JSON: {exc}", None)
            return
        if not isinstance(request, dict):
            self._reply_error(ws, 2, "Invalid request: expected an object", None)
            return
        req_id = request.get("id")
        if not (isinstance(req_id, int) and not isinstance(req_id, bool) and req_id >= 0):
            self._reply_error(ws, 2, "Invalid request: request ID must be an unsigned integer",
                              None)
            return
        method = request.get("method")
        params = request.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not (isinstance(params, list)
                    and all(isinstance(p, str) and "@" in p for p in params)):
                self._reply_error(ws, 2, "Invalid request: invalid stream", req_id)
                return
            if method == "SUBSCRIBE":
                self._subscribe(ws, params)
            else:
                self._unsubscribe(ws, params)
            self._reply(ws, {"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            self._reply(ws, {"result": list(self._subscriptions[ws]), "id": req_id})
        elif method == "GET_PROPERTY" and params == ["combined"]:
            self._reply(ws, {"result": True, "id": req_id})
        elif method == "SET_PROPERTY" and params == ["combined", True]:
            self._reply(ws, {"result": None, "id": req_id})
        elif method in ("GET_PROPERTY", "SET_PROPERTY"):
            # Raw (uncombined) payloads are not simulated.
            self._reply_error(ws, 0, "Unknown property", req_id)
        else:
            self._reply_error(
                ws, 2,
                f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
                "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
                req_id,
            )

    def _reply(self, ws: ServerConnection, body: dict[str, Any], verdict: str = OK) -> None:
        # Control replies ignore the slow-client limit: dropping an ack would wedge the client.
        self._write(ws, orjson.dumps(body), (CONTROL, verdict), limit=None)

    def _reply_error(self, ws: ServerConnection, code: int, msg: str, req_id: int | None) -> None:
        self._reply(ws, {"error": {"code": code, "msg": msg}, "id": req_id}, verdict=ERROR)

    def _write(self, ws: ServerConnection, payload: bytes, key: tuple[str, str],
               limit: int | None) -> bool:
        """Write one text frame now (synchronously) and count it; False if not written.

        Synchronous writes (websockets' ``broadcast`` on a single connection) mean a message is
        either in the socket's buffer and counted, or neither: no await can be cancelled between
        the write and the count.
        """
        if ws.state is not State.OPEN:
            return False
        if limit is not None and ws.transport.get_write_buffer_size() > limit:
            self.skipped[key] += 1
            return False
        try:
            broadcast([ws], payload, text=True, raise_exceptions=True)
        except ExceptionGroup:
            return False
        self.sent[key] += 1
        return True

    # ------------------------------------------------------------------ ticks

    def _schedule(self) -> Iterator[tuple[float, str, SymbolMarket]]:
        """Tick events ``(due_s, kind, market)`` in order of scheduled time from 0, forever.

        Quotes are periodic per symbol; trades arrive as a Poisson process per symbol. Ties go
        to the earlier-pushed event, so the order depends on nothing but the seed and the rates.
        """
        heap: list[tuple[float, int, str, str]] = []
        seq = 0
        for symbol, market in self.markets.items():
            if self.quote_rate_hz > 0.0:
                heap.append((1.0 / self.quote_rate_hz, seq, BOOK_TICKER, symbol))
                seq += 1
            if self.trade_rate_hz > 0.0:
                heap.append((market.next_trade_gap_s(self.trade_rate_hz), seq, AGG_TRADE, symbol))
                seq += 1
        heapq.heapify(heap)
        while heap:
            due, _, kind, symbol = heapq.heappop(heap)
            market = self.markets[symbol]
            yield due, kind, market
            if kind == BOOK_TICKER:
                nxt = due + 1.0 / self.quote_rate_hz
            else:
                nxt = due + market.next_trade_gap_s(self.trade_rate_hz)
            heapq.heappush(heap, (nxt, seq, kind, symbol))
            seq += 1

    async def _produce(self) -> None:
        """The single producer: sleep to each event's due time, generate once, send to all."""
        loop = asyncio.get_running_loop()
        try:
            await self._run_schedule(loop, loop.time())
        except Exception:
            # Say so at once: otherwise a dead producer looks like a quiet market until stop().
            log.exception("binance simulator producer failed")
            raise

    async def _run_schedule(self, loop: asyncio.AbstractEventLoop, origin: float) -> None:
        """Process ``_schedule()`` against the loop's monotonic clock, ``origin`` being time 0."""
        max_lag_s = 2.0  # behind by more than this (a paused process): shift, don't burst
        burst = 0
        for due, kind, market in self._schedule():
            delay = origin + due - loop.time()
            if delay > 0.0:
                burst = 0
                await asyncio.sleep(delay)
            elif delay < -max_lag_s:
                origin -= delay  # resume on schedule from now; the ticks are late, not lost
            else:
                burst += 1
                if burst >= 256:  # catching up: still let the clients' handlers run
                    burst = 0
                    await asyncio.sleep(0)
            self._tick(kind, market)

    def _tick(self, kind: str, market: SymbolMarket) -> None:
        """Generate one message for ``market`` and write it to every subscriber of its stream."""
        if kind == BOOK_TICKER:
            stream = market.stream_names[0]
            data = market.next_quote(1.0 / self.quote_rate_hz)
        else:
            stream = market.stream_names[1]
            data = market.next_trade(int(self.clock.now() * 1000.0))
        # Draw the malformed decision for every generated message, subscribed or not, so the
        # choices do not depend on who happens to be connected.
        verdict = OK
        if self.malformed_rate > 0.0 and self._malformed_rng.random() < self.malformed_rate:
            ring = _MALFORMED_RING[kind]
            verdict = ring[self._malformed_cursor[kind] % len(ring)]
            self._malformed_cursor[kind] += 1
            payload = _malform(verdict, stream, data, self._malformed_rng)
        else:
            payload = None
        subscribers = self._subscribers.get(stream)
        if not subscribers:
            return
        if payload is None:
            payload = orjson.dumps({"stream": stream, "data": data})
        for ws in list(subscribers):
            self._write(ws, payload, (kind, verdict), self.max_client_buffer_bytes)


async def run_simulator(sim: BinanceSimulator, duration_s: float | None = None) -> dict[str, int]:
    """Run ``sim`` for ``duration_s`` seconds (``None``: until cancelled), then stop it cleanly.

    Prints nothing; ``sim.started`` is set once ``sim.url`` is valid. Returns ``sim.sent_counts()``
    (when cancelled, the cancellation propagates after the server has stopped).
    """
    async with sim:
        if duration_s is None:
            await asyncio.Future()  # wait forever; cancellation ends the run
        else:
            await asyncio.sleep(duration_s)
    return sim.sent_counts()
