"""Binance's wire format: spot combined streams, USD-M futures mark price, and the REST depth
snapshot; plus the standalone ``BinanceSimulator`` (the original simulator's API).

Byte for byte as recorded in ``../shared/data/recorded/BINANCE.ws.1.0`` and documented at
developers.binance.com ("WebSocket Streams", spot and USD-M futures):

- connect to ``ws://HOST:PORT/stream?streams=btcusdt@bookTicker/btcusdt@aggTrade/...``; names the
  simulator does not serve are accepted and silently never produce data, as on Binance; every
  data message is wrapped ``{"stream":"<name>","data":{...}}`` in compact JSON;
- ``<symbol>@bookTicker``: ``{"u":...,"s":"BTCUSDT","b":"97000.12000000","B":"0.51000000","a":...,
  "A":...}`` (``u`` +1 per message, per symbol);
- ``<symbol>@aggTrade``: ``{"e":"aggTrade","E":ms,"s":...,"a":id,"p":"...","q":"...","f":id,
  "l":id,"T":ms,"m":bool,"M":true}`` (``a`` +1 per message, ``f``..``l`` contiguous);
- ``<symbol>@depth@100ms``: ``{"e":"depthUpdate","E":ms,"s":...,"U":first,"u":last,
  "b":[["price","qty"],...],"a":[...]}`` every 100 ms when the book changed; each event's ``U`` is
  the previous event's ``u`` + 1 (a ``skip_seq`` fault makes it + 2); qty "0.00000000" removes a
  level. ``GET /api/v3/depth?symbol=BTCUSDT&limit=N`` answers ``{"lastUpdateId":...,"bids":[...],
  "asks":[...]}`` on the same port, consistent with the diffs;
- USD-M futures ``<symbol>@markPrice`` (every 3 s) and ``<symbol>@markPrice@1s``:
  ``{"e":"markPriceUpdate","E":ms,"s":"BTCUSDT","p":mark,"i":index,"P":estimated settle,
  "r":funding rate,"T":next funding ms}`` (served on the same endpoint as spot);
- control requests ``{"method":"SUBSCRIBE"|"UNSUBSCRIBE","params":[...],"id":N}`` are answered
  ``{"result":null,"id":N}``; ``LIST_SUBSCRIPTIONS`` with the list; ``GET_PROPERTY`` /
  ``SET_PROPERTY`` for ``combined``; bad requests ``{"error":{"code":C,"msg":...},"id":N}``.

Prices in the quote currency and quantities in coin, as decimal strings with 8 decimals on the
symbol's tick/lot grid; times are integer epoch milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import orjson

from dataflows.clock import Clock
from dataflows.sim.config import SimConfig
from dataflows.sim.faults import FaultPlan, VenueFaults
from dataflows.sim.market import (
    Ladder,
    MarketSpec,
    base_asset,
    ladder_step_ticks,
    market_spec_for,
    seed_sequence,
)
from dataflows.sim.server import (
    CROSSED,
    ERROR,
    MISSING_FIELD,
    NONNUMERIC_PRICE,
    NONPOSITIVE_QTY,
    TRUNCATED,
    Conn,
    MsgSpec,
    SimContext,
    SimulatorBase,
    Venue,
    first_value,
    periodic,
)
from models.market_sim import (
    GbmJumpParams,
    GbmJumpPath,
    PerpetualModel,
    PerpParams,
    bid_ask,
    next_funding_ts,
)

EXCHANGE = "binance"
BOOK_TICKER = "bookTicker"
AGG_TRADE = "aggTrade"
DEPTH = "depth"
MARK_PRICE = "markPrice"

# The original simulator's malformations (rings per stream kind, walked round-robin).
MALFORMED_KINDS = (TRUNCATED, CROSSED, NONPOSITIVE_QTY, NONNUMERIC_PRICE)
_SPECS = {
    BOOK_TICKER: MsgSpec(bid=("data", "b"), ask=("data", "a"), ring=(TRUNCATED, CROSSED)),
    AGG_TRADE: MsgSpec(price=("data", "p"), qty=("data", "q"),
                       ring=(TRUNCATED, NONPOSITIVE_QTY, NONNUMERIC_PRICE)),
    DEPTH: MsgSpec(price=("data", "U"), ring=(TRUNCATED, NONNUMERIC_PRICE, MISSING_FIELD)),
    MARK_PRICE: MsgSpec(price=("data", "p"), ring=(TRUNCATED, NONNUMERIC_PRICE, MISSING_FIELD)),
}
DEPTH_LEVELS = 20


def _fmt(value: float) -> str:
    """Binance's decimal strings: fixed point, 8 decimals."""
    return f"{value:.8f}"


class SymbolMarket:
    """One symbol's Binance state and message generator (no I/O, no clock: times are passed in).

    Standalone (``mid_source`` None) the mid follows its own ``GbmJumpPath``, stepped on every
    quote, so the price sequence depends only on the seed, the symbol and the number of quotes. In
    the multi-exchange simulator ``mid_source()`` gives the venue's mid from the shared market.
    Sizes, trade sides and arrival times come from a second generator; the depth ladder from a
    third (so adding depth changes nothing else).
    """

    def __init__(self, symbol: str, seed: int, spec: MarketSpec | None = None,
                 half_spread_bps: float = 1.0,
                 mid_source: Callable[[], float] | None = None) -> None:
        self.symbol = symbol.upper()
        self.spec = spec or market_spec_for(self.symbol)
        self.params = GbmJumpParams(spot_usd=self.spec.spot_usd, vol_annual=self.spec.vol_annual,
                                    half_spread_bps=half_spread_bps)
        path_seed, flow_seed, book_seed, perp_seed = seed_sequence(seed, self.symbol).spawn(4)
        self.path = GbmJumpPath(self.params, np.random.default_rng(path_seed))
        self.rng = np.random.default_rng(flow_seed)
        self.mid_source = mid_source
        # Ids start at plausible, seed-dependent values (Binance's are in the hundreds of millions).
        self.update_id = int(self.rng.integers(100_000_000, 500_000_000))
        self.agg_trade_id = int(self.rng.integers(1_000_000, 50_000_000))
        self.trade_id = int(self.rng.integers(10_000_000, 200_000_000))
        self.bid, self.ask = self._grid_quote(self.mid())
        # Depth: an L2 ladder with its own update-id space (U/u), changes accumulated per window.
        self._book_rng = np.random.default_rng(book_seed)
        tick = self.spec.tick_size
        self.ladder = Ladder(DEPTH_LEVELS, ladder_step_ticks(self.spec.spot_usd, tick),
                             self._book_rng,
                             tick, self.spec.lot_size, self.spec.quote_notional_usd / 4)
        bid_ticks, ask_ticks = round(self.bid / tick), round(self.ask / tick)
        self.ladder.update(bid_ticks, self.ladder._new_size(bid_ticks), ask_ticks,
                           self.ladder._new_size(ask_ticks))  # the book before the first diff
        self.depth_id = int(self._book_rng.integers(1_000_000_000, 5_000_000_000))
        self._window_first: int | None = None
        self._window: dict[tuple[str, int], float] = {}
        self._pending_skip = 0
        # Standalone perpetual (the multi-exchange simulator uses the shared market's).
        self.perp = PerpetualModel(PerpParams(), np.random.default_rng(perp_seed))

    @property
    def stream_names(self) -> tuple[str, str]:
        """``(<symbol>@bookTicker, <symbol>@aggTrade)`` in Binance's lower-case form."""
        s = self.symbol.lower()
        return f"{s}@{BOOK_TICKER}", f"{s}@{AGG_TRADE}"

    @property
    def depth_stream(self) -> str:
        return f"{self.symbol.lower()}@depth@100ms"

    @property
    def mark_streams(self) -> tuple[str, str]:
        """``(<symbol>@markPrice, <symbol>@markPrice@1s)``."""
        s = self.symbol.lower()
        return f"{s}@markPrice", f"{s}@markPrice@1s"

    def mid(self) -> float:
        return self.mid_source() if self.mid_source is not None else self.path.price

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
        """Advance the mid by ``dt_s`` seconds (standalone) or read it (shared market); the new top
        of book as bookTicker ``data``. The depth ladder follows the new quote."""
        mid = self.path.step(dt_s) if self.mid_source is None else self.mid_source()
        self.bid, self.ask = self._grid_quote(mid)
        self.update_id += 1
        data = {
            "u": self.update_id,
            "s": self.symbol,
            "b": _fmt(self.bid),
            "B": _fmt(self._size(self.spec.quote_notional_usd, self.bid)),
            "a": _fmt(self.ask),
            "A": _fmt(self._size(self.spec.quote_notional_usd, self.ask)),
        }
        self._update_book(data)
        return data

    def _update_book(self, data: dict[str, Any]) -> None:
        tick = self.spec.tick_size
        changes = self.ladder.update(round(self.bid / tick), float(data["B"]),
                                     round(self.ask / tick), float(data["A"]))
        if not changes:
            return
        self.depth_id += 1
        if self._window_first is None:
            self._window_first = self.depth_id
        for side, ticks, size in changes:
            self._window[(side, ticks)] = size

    def next_depth(self, event_ms: int, skip: bool = False) -> tuple[dict[str, Any] | None, int]:
        """The depth diff accumulated since the last call as depthUpdate ``data`` (None when the
        book did not change) and the number of update ids skipped before it. ``skip`` (a fault)
        burns one update id after this diff, so the next one starts 2 after this ``u``."""
        if self._window_first is None:
            return None, 0
        tick = self.spec.tick_size
        bids = [[_fmt(k * tick), _fmt(size)] for (side, k), size in
                sorted(self._window.items(), key=lambda kv: -kv[0][1]) if side == "bid"]
        asks = [[_fmt(k * tick), _fmt(size)] for (side, k), size in
                sorted(self._window.items(), key=lambda kv: kv[0][1]) if side == "ask"]
        data = {"e": "depthUpdate", "E": event_ms, "s": self.symbol, "U": self._window_first,
                "u": self.depth_id, "b": bids, "a": asks}
        skipped, self._pending_skip = self._pending_skip, 0
        self._window_first = None
        self._window = {}
        if skip:
            self.depth_id += 1
            self._pending_skip = 1
        return data, skipped

    def depth_snapshot(self, limit: int = 100) -> dict[str, Any]:
        """The REST ``/api/v3/depth`` answer: the ladder now, with ``lastUpdateId``."""
        tick = self.spec.tick_size
        bids, asks = self.ladder.snapshot()
        return {"lastUpdateId": self.depth_id,
                "bids": [[_fmt(k * tick), _fmt(s)] for k, s in bids[:limit]],
                "asks": [[_fmt(k * tick), _fmt(s)] for k, s in asks[:limit]]}

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

    def mark_price(self, event_ms: int, mark: float, index: float, funding_rate: float,
                   next_funding_ms: int) -> dict[str, Any]:
        """USD-M futures markPriceUpdate ``data``."""
        return {"e": "markPriceUpdate", "E": event_ms, "s": self.symbol, "p": _fmt(mark),
                "i": _fmt(index), "P": _fmt(index),
                "r": _fmt(funding_rate), "T": next_funding_ms}

    def next_trade_gap_s(self, rate_hz: float) -> float:
        """Seconds to the next trade: Poisson arrivals at ``rate_hz``."""
        return float(self.rng.exponential(1.0 / rate_hz))


class BinanceVenue(Venue):
    name = EXCHANGE
    paths = ("/stream",)
    data_kinds = (BOOK_TICKER, AGG_TRADE, DEPTH, MARK_PRICE)

    def __init__(self, ctx: SimContext, faults: VenueFaults, symbols: Iterable[str],
                 quote_rate_hz: float, trade_rate_hz: float, half_spread_bps: float = 1.0) -> None:
        super().__init__(ctx, faults)
        self.symbols = tuple(s.strip().upper() for s in symbols)
        if not self.symbols or any(not s for s in self.symbols):
            raise ValueError(f"symbols must be non-empty names, got {symbols!r}")
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError(f"duplicate symbols in {self.symbols!r}")
        if not (quote_rate_hz >= 0.0 and trade_rate_hz >= 0.0):
            raise ValueError("quote_rate_hz and trade_rate_hz must be >= 0")
        self.quote_rate_hz = float(quote_rate_hz)
        self.trade_rate_hz = float(trade_rate_hz)
        self.markets: dict[str, SymbolMarket] = {}
        for s in self.symbols:
            source = None
            asset = base_asset(s)
            if ctx.market is not None and asset in ctx.market.specs:
                source = self._mid_source(asset)
            self.markets[s] = SymbolMarket(s, ctx.seed, half_spread_bps=half_spread_bps,
                                           mid_source=source)
        self._stream_market: dict[str, tuple[str, SymbolMarket]] = {}
        for m in self.markets.values():
            book, trade = m.stream_names
            self._stream_market[book] = (BOOK_TICKER, m)
            self._stream_market[trade] = (AGG_TRADE, m)
            self._stream_market[m.depth_stream] = (DEPTH, m)
            for name in m.mark_streams:
                self._stream_market[name] = (MARK_PRICE, m)

    def _mid_source(self, asset: str) -> Callable[[], float]:
        def mid() -> float:
            return self.market.venue_mid(self.name, asset) * (1.0 + self.faults.deviation)
        return mid

    @property
    def streams(self) -> list[str]:
        """Every stream served: bookTicker and aggTrade first (the original simulator's)."""
        names = [n for m in self.markets.values() for n in m.stream_names]
        return names + [n for n, (k, _) in self._stream_market.items()
                        if k in (DEPTH, MARK_PRICE)]

    # ---------------------------------------------------------------- timers
    def timers(self):
        out = []
        for m in self.markets.values():
            if self.quote_rate_hz > 0.0:
                out.append((1.0 / self.quote_rate_hz, self._quote_timer(m)))
            if self.trade_rate_hz > 0.0:
                out.append((m.next_trade_gap_s(self.trade_rate_hz), self._trade_timer(m)))
        for m in self.markets.values():
            out.append((0.1, periodic(0.1, lambda due, m=m: self._depth(m))))
            out.append((1.0, periodic(1.0, lambda due, m=m: self._mark(m, due))))
        return out

    def _quote_timer(self, m: SymbolMarket):
        period = 1.0 / self.quote_rate_hz

        def fire(due: float) -> float:
            deviation = self.faults.deviation
            data = m.next_quote(period)
            if deviation and m.mid_source is None:  # standalone: deviate the printed prices
                data["b"] = _fmt(m.bid * (1 + deviation))
                data["a"] = _fmt(m.ask * (1 + deviation))
            if not self.stale:
                stream = m.stream_names[0]
                self.emit(stream, BOOK_TICKER, {"stream": stream, "data": data},
                          _SPECS[BOOK_TICKER])
            return due + period
        return fire

    def _trade_timer(self, m: SymbolMarket):
        def fire(due: float) -> float:
            stream = m.stream_names[1]
            ts, ooo = self.event_ts(stream)
            data = m.next_trade(int(ts * 1000.0))
            if self.faults.deviation and m.mid_source is None:
                data["p"] = _fmt(float(data["p"]) * (1 + self.faults.deviation))
            if not self.stale:
                self.emit(stream, AGG_TRADE, {"stream": stream, "data": data}, _SPECS[AGG_TRADE],
                          trade=True, out_of_order=ooo)
            return due + m.next_trade_gap_s(self.trade_rate_hz)
        return fire

    def _depth(self, m: SymbolMarket) -> None:
        stream = m.depth_stream
        ts, ooo = self.event_ts(stream)
        data, skipped = m.next_depth(int(ts * 1000.0), skip=self.skip())
        if data is None or self.stale:
            return
        self.emit(stream, DEPTH, {"stream": stream, "data": data}, _SPECS[DEPTH],
                  skipped_seq=skipped, out_of_order=ooo)

    def _mark(self, m: SymbolMarket, due: float) -> None:
        stream_3s, stream_1s = m.mark_streams
        ts, ooo = self.event_ts(stream_1s)
        asset = base_asset(m.symbol)
        if self.ctx.market is not None and asset in self.ctx.market.specs:
            index = self.market.index(asset)
            mark = self.market.perp_mark(asset, self.name) * (1.0 + self.faults.deviation)
            funding = self.market.funding_rate(asset)
        else:
            m.perp.step(1.0)
            index = m.mid()
            mark = m.perp.mark(index) * (1.0 + self.faults.deviation)
            funding = m.perp.funding_rate
        data = m.mark_price(int(ts * 1000.0), mark, index, funding,
                            int(next_funding_ts(ts) * 1000.0))
        if self.stale:
            return
        self.emit(stream_1s, MARK_PRICE, {"stream": stream_1s, "data": data}, _SPECS[MARK_PRICE],
                  out_of_order=ooo)
        if round(due) % 3 == 0:
            self.emit(stream_3s, MARK_PRICE, {"stream": stream_3s, "data": data},
                      _SPECS[MARK_PRICE], out_of_order=ooo)

    # ---------------------------------------------------------------- HTTP
    def http(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes] | None:
        if path == "/api/v3/ping":
            return 200, b"{}"
        if path == "/api/v3/time":
            return 200, orjson.dumps({"serverTime": int(self.ctx.clock.now() * 1000)})
        if path == "/api/v3/depth":
            symbol = first_value(query, "symbol").upper()
            market = self.markets.get(symbol)
            if market is None:
                return 400, orjson.dumps({"code": -1121, "msg": "Invalid symbol."})
            try:
                limit = int(first_value(query, "limit", "100"))
            except ValueError:
                limit = 100
            return 200, orjson.dumps(market.depth_snapshot(max(1, min(limit, 5000))))
        return None

    # ---------------------------------------------------------------- connections
    def on_open(self, conn: Conn) -> None:
        names = [n for value in conn.query.get("streams", []) for n in value.split("/") if n]
        for name in names:
            self.server.subscribe(conn, name)

    def on_text(self, conn: Conn, message: str | bytes) -> None:
        """Answer one client request the way Binance's stream endpoint does."""
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            self._reply_error(conn, 3, f"Invalid JSON: {exc}", None)
            return
        if not isinstance(request, dict):
            self._reply_error(conn, 2, "Invalid request: expected an object", None)
            return
        req_id = request.get("id")
        if not (isinstance(req_id, int) and not isinstance(req_id, bool) and req_id >= 0):
            self._reply_error(conn, 2, "Invalid request: request ID must be an unsigned integer",
                              None)
            return
        method = request.get("method")
        params = request.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not (isinstance(params, list)
                    and all(isinstance(p, str) and "@" in p for p in params)):
                self._reply_error(conn, 2, "Invalid request: invalid stream", req_id)
                return
            for name in params:
                if method == "SUBSCRIBE":
                    self.server.subscribe(conn, name)
                else:
                    self.server.unsubscribe(conn, name)
            self.reply(conn, {"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            self.reply(conn, {"result": list(conn.topics), "id": req_id})
        elif method == "GET_PROPERTY" and params == ["combined"]:
            self.reply(conn, {"result": True, "id": req_id})
        elif method == "SET_PROPERTY" and params == ["combined", True]:
            self.reply(conn, {"result": None, "id": req_id})
        elif method in ("GET_PROPERTY", "SET_PROPERTY"):
            # Raw (uncombined) payloads are not simulated.
            self._reply_error(conn, 0, "Unknown property", req_id)
        else:
            self._reply_error(
                conn, 2,
                f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
                "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
                req_id,
            )

    def _reply_error(self, conn: Conn, code: int, msg: str, req_id: int | None) -> None:
        self.reply(conn, {"error": {"code": code, "msg": msg}, "id": req_id}, verdict=ERROR)


class BinanceSimulator(SimulatorBase):
    """A Binance combined-stream server on loopback alone, each symbol on its own seeded market
    (the original simulator; ``MultiExchangeSimulator`` serves Binance from the shared market).

    Args:
        symbols: upper-case Binance symbols to simulate (``"BTCUSDT"``); defaults per base asset
            come from ``DEFAULT_MARKETS`` (BTC 97,000 / 55 % vol, ETH 3,100 / 70 % vol, else 100.0).
        seed: seeds every generator, per symbol, so runs are reproducible.
        quote_rate_hz: bookTicker messages per second per symbol (the mid moves on each one).
        trade_rate_hz: mean aggTrade messages per second per symbol (Poisson arrivals).
        malformed_rate: fraction of generated messages replaced by a malformed one, in [0, 1].
        host, port: where to listen; port 0 picks a free port (read ``.port`` after ``start()``).
        clock: source of event times (epoch seconds: ``clock.now()`` at start plus the schedule's
            time); pacing itself always uses the event loop's monotonic clock.
        half_spread_bps: quoted half spread around the mid, basis points.
        max_client_buffer_bytes: a client whose unsent buffer exceeds this gets messages skipped
            (counted in ``skipped``) rather than buffered without bound.
        close_timeout_s: how long ``stop()`` waits for each client's closing handshake.
        faults: further faults (``FaultPlan``) for the ``binance`` venue.
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
        faults: FaultPlan | None = None,
    ) -> None:
        if not 0.0 <= malformed_rate <= 1.0:
            raise ValueError(f"malformed_rate must be in [0, 1], got {malformed_rate!r}")
        plan = faults or FaultPlan()
        if malformed_rate > 0.0:
            plan = plan.with_rate("malformed", float(malformed_rate), EXCHANGE)
        ctx = SimContext(seed, clock, None, SimConfig(exchanges=(EXCHANGE,)))
        venue = BinanceVenue(ctx, VenueFaults(EXCHANGE, int(seed), plan), symbols,
                             quote_rate_hz, trade_rate_hz, half_spread_bps)
        super().__init__(ctx, [venue], host, {EXCHANGE: port}, plan,
                         max_client_buffer_bytes=max_client_buffer_bytes,
                         close_timeout_s=close_timeout_s)
        self.venue = venue
        self.seed = int(seed)
        self.symbols = venue.symbols
        self.quote_rate_hz = venue.quote_rate_hz
        self.trade_rate_hz = venue.trade_rate_hz
        self.malformed_rate = float(malformed_rate)
        self.markets = venue.markets

    @property
    def server(self):
        return self.servers[EXCHANGE]

    @property
    def sent(self):
        """Messages written to client sockets, summed over connections: (stream_kind, verdict)."""
        return self.server.sent

    @property
    def skipped(self):
        """Messages not written because the client's buffer was full: (stream_kind, verdict)."""
        return self.server.skipped

    @property
    def streams(self) -> list[str]:
        """bookTicker and aggTrade stream names, e.g. ``["btcusdt@bookTicker", ...]``."""
        return [n for m in self.markets.values() for n in m.stream_names]

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def base_url(self) -> str:
        """``ws://HOST:PORT`` of the running server."""
        return self.server.base_url

    def url_for(self, streams: Iterable[str]) -> str:
        """The combined-stream URL for ``streams``: ``ws://HOST:PORT/stream?streams=a/b/c``."""
        return f"{self.base_url}/stream?streams={'/'.join(streams)}"

    @property
    def url(self) -> str:
        """The combined-stream URL subscribing to every bookTicker and aggTrade stream."""
        return self.url_for(self.streams)

    @property
    def urls(self) -> dict[str, str]:
        return {EXCHANGE: self.server.base_url}

    def sent_counts(self, exchange: str | None = None) -> dict[str, int]:
        """Totals of messages written to sockets (over all connections): ``bookTicker``,
        ``aggTrade``, ``depth``, ``markPrice`` (well-formed only), ``malformed`` (all kinds),
        ``control`` (acks and error replies), ``repeated_trades``, and ``total`` (their sum); then
        ``skipped_seq``, ``out_of_order``, ``drops`` (not part of the total)."""
        return self.server.sent_counts()

    def malformed_counts(self) -> dict[str, int]:
        """Malformed messages written to sockets, per kind (``MALFORMED_KINDS`` and
        ``missing_field``)."""
        return self.server.malformed_counts()

