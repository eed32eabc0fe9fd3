"""Kraken spot websockets v2 (``wss://ws.kraken.com/v2``), as documented at docs.kraken.com
("Spot Websockets (v2)": status, heartbeat, ticker, trade, book, ping).

- Path ``/v2``. On connect: ``{"channel":"status","data":[{"api_version":"v2","connection_id":N,
  "system":"online","version":"2.0.0"}],"type":"update"}``.
- ``{"method":"subscribe","params":{"channel":"ticker"|"trade"|"book","symbol":["BTC/USD",...],
  ...},"req_id":N}`` is acknowledged once per symbol: ``{"method":"subscribe","result":{"channel":
  ...,"snapshot":true,"symbol":"BTC/USD",...},"success":true,"time_in":...,"time_out":...,
  "req_id":N}``; a refusal has ``"success":false`` and ``"error"``. ``unsubscribe`` likewise.
  ``{"method":"ping","req_id":N}`` → ``{"method":"pong","req_id":N,"time_in":...,
  "time_out":...}``.
- ``ticker``: ``{"channel":"ticker","type":"snapshot"|"update","data":[{"symbol","bid","bid_qty",
  "ask","ask_qty","last","volume","vwap","low","high","change","change_pct","timestamp"}]}``; the
  snapshot on subscribing (``snapshot``, default true), updates on every trade
  (``event_trigger`` "trades", the default) or on every change of the best bid/offer ("bbo").
- ``trade``: ``{"channel":"trade","type":"update","data":[{"symbol","side","price","qty",
  "ord_type","trade_id","timestamp"}]}``, ``side`` the taker's, ``trade_id`` a sequence number per
  book (+1 per trade; a ``skip_seq`` fault skips one). ``snapshot`` (default false) sends the last
  trades (up to 50) on subscribing.
- ``book``: ``depth`` 10 (default), 25, 100, 500 or 1000; a snapshot on subscribing, then updates
  with the levels that changed within the subscribed depth (qty 0 removes one), each with
  ``checksum``: CRC32 of the top 10 asks then bids, price and qty printed at the pair's precision
  with the "." and leading zeros removed. The simulated book holds 25 levels a side.
- ``{"channel":"heartbeat"}`` about once a second when nothing else was sent to a connection that
  has a subscription.

Numbers are JSON numbers (prices at the pair's precision: BTC/USD 0.1, ETH/USD 0.01; quantities
8 decimals); times RFC 3339 with microseconds; BTC is spelled ``BTC``.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable
from typing import Any

from dataflows.sim.faults import VenueFaults
from dataflows.sim.market import BookView, Quoter, base_asset, iso_ms, ladder_step_ticks, rng_for
from dataflows.sim.server import ERROR, Conn, MsgSpec, SimContext, Venue, parse_json, periodic

EXCHANGE = "kraken"
TICKER, TRADE, BOOK, HEARTBEAT = "ticker", "trade", "book", "heartbeat"
DEPTHS = (10, 25, 100, 500, 1000)
LADDER_LEVELS = 25
QTY_DECIMALS = 8
PRICE_DECIMALS = {"BTC": 1, "ETH": 2}

_TICKER_SPEC = MsgSpec(price=("data", 0, "bid"), bid=("data", 0, "bid"), ask=("data", 0, "ask"))
_TRADE_SPEC = MsgSpec(price=("data", 0, "price"), qty=("data", 0, "qty"))
_BOOK_SPEC = MsgSpec(price=("data",))


class _Pair:
    def __init__(self, symbol: str, asset: str, seed: int, spot: float) -> None:
        self.symbol = symbol
        self.asset = asset
        self.pdec = PRICE_DECIMALS.get(asset, 2)
        self.tick = 10.0 ** -self.pdec
        rng = rng_for(seed, EXCHANGE, symbol)
        self.rng = rng
        self.quoter = Quoter(symbol, asset, self.tick, 10.0 ** -QTY_DECIMALS, 1.5, rng,
                             ladder_depth=LADDER_LEVELS,
                             ladder_step_ticks=ladder_step_ticks(spot, self.tick))
        self.views: dict[int, BookView] = {}
        self.trade_id = int(rng.integers(1_000_000, 90_000_000))
        self.recent: deque[dict[str, Any]] = deque(maxlen=50)
        self.open = spot
        self.low, self.high = spot * 0.98, spot * 1.02
        self.volume = float(rng.uniform(1_000, 5_000)) * 97_000.0 / spot
        self.vwap = spot

    def price(self, value: float) -> float:
        return round(value, self.pdec)

    def checksum(self, view: BookView) -> int:
        bids, asks = view.snapshot()
        parts = []
        for levels in (asks[:10], bids[:10]):
            for k, qty in levels:
                parts.append(f"{k * self.tick:.{self.pdec}f}".replace(".", "").lstrip("0"))
                parts.append(f"{qty:.{QTY_DECIMALS}f}".replace(".", "").lstrip("0"))
        return zlib.crc32("".join(parts).encode())

    def levels(self, items) -> list[dict[str, float]]:
        return [{"price": self.price(k * self.tick), "qty": round(q, QTY_DECIMALS)}
                for k, q in items]


class KrakenVenue(Venue):
    name = EXCHANGE
    paths = ("/v2",)
    data_kinds = (TICKER, TRADE, BOOK)
    heartbeat_kinds = (HEARTBEAT,)

    def __init__(self, ctx: SimContext, faults: VenueFaults, pairs: Iterable[str]) -> None:
        super().__init__(ctx, faults)
        self.pairs: dict[str, _Pair] = {}
        for symbol in pairs:
            asset = base_asset(symbol)
            if asset not in self.market.specs:
                raise ValueError(f"kraken pair {symbol!r}: no simulated market for its base asset")
            self.pairs[symbol] = _Pair(symbol, asset, ctx.seed, self.market.specs[asset].spot_usd)
        self.quote_rate_hz = ctx.config.quote_rate_hz
        self.trade_rate_hz = ctx.config.trade_rate_hz
        self._conn_ids = rng_for(ctx.seed, EXCHANGE, "connection-ids")

    # ---------------------------------------------------------------- generation
    def timers(self):
        out = []
        for p in self.pairs.values():
            p.quoter.requote(self._mid(p))
            p.quoter.take_book_changes()
            if self.quote_rate_hz > 0:
                out.append((1.0 / self.quote_rate_hz,
                            periodic(1.0 / self.quote_rate_hz, lambda due, p=p: self._quote(p))))
            if self.trade_rate_hz > 0:
                out.append((p.quoter.trade_gap_s(self.trade_rate_hz), self._trade_timer(p)))
        out.append((0.25, periodic(0.25, self._heartbeats)))
        return out

    def _mid(self, p: _Pair) -> float:
        return self.market.venue_mid(self.name, p.asset) * (1.0 + self.faults.deviation)

    def _ticker_item(self, p: _Pair, ts: float) -> dict[str, Any]:
        q = p.quoter
        return {
            "symbol": p.symbol, "bid": p.price(q.bid), "bid_qty": round(q.bid_size, QTY_DECIMALS),
            "ask": p.price(q.ask), "ask_qty": round(q.ask_size, QTY_DECIMALS),
            "last": p.price(q.last_price), "volume": round(p.volume, QTY_DECIMALS),
            "vwap": p.price(p.vwap), "low": p.price(p.low), "high": p.price(p.high),
            "change": p.price(q.last_price - p.open),
            "change_pct": round(100.0 * (q.last_price / p.open - 1.0), 2),
            "timestamp": iso_ms(ts),
        }

    def _emit_ticker(self, p: _Pair, trigger: str) -> None:
        topic = f"ticker/{trigger}:{p.symbol}"
        ts, ooo = self.event_ts(topic)
        msg = {"channel": "ticker", "type": "update", "data": [self._ticker_item(p, ts)]}
        self.emit(topic, TICKER, msg, _TICKER_SPEC, out_of_order=ooo)

    def _quote(self, p: _Pair) -> None:
        before = (p.quoter.bid_ticks, p.quoter.ask_ticks, p.quoter.bid_size, p.quoter.ask_size)
        p.quoter.requote(self._mid(p))
        p.quoter.take_book_changes()
        ladder = p.quoter.ladder
        updates = [(depth, view, view.update(ladder)) for depth, view in sorted(p.views.items())]
        if self.stale:
            return
        if before != (p.quoter.bid_ticks, p.quoter.ask_ticks, p.quoter.bid_size,
                      p.quoter.ask_size):
            self._emit_ticker(p, "bbo")
        for depth, view, changes in updates:
            if not changes:
                continue
            topic = f"book/{depth}:{p.symbol}"
            ts, ooo = self.event_ts(topic)
            bids = [(k, s) for side, k, s in changes if side == "bid"]
            asks = [(k, s) for side, k, s in changes if side == "ask"]
            item = {"symbol": p.symbol, "bids": p.levels(bids), "asks": p.levels(asks),
                    "checksum": p.checksum(view), "timestamp": iso_ms(ts)}
            self.emit(topic, BOOK, {"channel": "book", "type": "update", "data": [item]},
                      _BOOK_SPEC, out_of_order=ooo)

    def _trade_timer(self, p: _Pair):
        def fire(due: float) -> float:
            price, size, taker = p.quoter.trade()
            skipped = 1 if self.skip() else 0
            p.trade_id += 1 + skipped
            p.vwap = (p.vwap * p.volume + price * size) / (p.volume + size)
            p.volume += size
            p.low, p.high = min(p.low, price), max(p.high, price)
            topic = f"trade:{p.symbol}"
            ts, ooo = self.event_ts(topic)
            item = {"symbol": p.symbol, "side": taker, "price": p.price(price),
                    "qty": round(size, QTY_DECIMALS),
                    "ord_type": "market" if p.rng.random() < 0.7 else "limit",
                    "trade_id": p.trade_id, "timestamp": iso_ms(ts)}
            p.recent.append(item)
            if not self.stale:
                self.emit(topic, TRADE, {"channel": "trade", "type": "update", "data": [item]},
                          _TRADE_SPEC, trade=True, skipped_seq=skipped, out_of_order=ooo)
                self._emit_ticker(p, "trades")
            return due + p.quoter.trade_gap_s(self.trade_rate_hz)
        return fire

    def _heartbeats(self, due: float) -> None:
        idle = due - self.ctx.config.heartbeat_interval_s
        for conn in list(self.server.conns):
            if conn.topics and conn.last_sent_s <= idle:
                self.send(conn, HEARTBEAT, {"channel": "heartbeat"})

    # ---------------------------------------------------------------- requests
    def on_open(self, conn: Conn) -> None:
        conn_id = int(self._conn_ids.integers(1 << 62, 1 << 63, dtype="uint64"))
        self.reply(conn, {"channel": "status", "data": [{
            "api_version": "v2", "connection_id": conn_id, "system": "online",
            "version": "2.0.0"}], "type": "update"})

    def _answer(self, conn: Conn, method: str, req_id: Any, time_in: str, *, result=None,
                error: str | None = None, symbol: str | None = None) -> None:
        body: dict[str, Any] = {"method": method}
        if error is None:
            if result is not None:
                body["result"] = result
            body["success"] = True
        else:
            body["error"] = error
            body["success"] = False
            if symbol is not None:
                body["symbol"] = symbol
        body["time_in"] = time_in
        body["time_out"] = iso_ms(self.ctx.clock.now())
        if req_id is not None:
            body["req_id"] = req_id
        self.reply(conn, body, verdict=ERROR if error else "ok")

    def on_text(self, conn: Conn, text: str | bytes) -> None:
        time_in = iso_ms(self.ctx.clock.now())
        request = parse_json(text)
        if not isinstance(request, dict):
            self._answer(conn, "", None, time_in, error="Malformed request: not a JSON object")
            return
        method, req_id = request.get("method"), request.get("req_id")
        if method == "ping":
            self._answer(conn, "pong", req_id, time_in)
            return
        if method not in ("subscribe", "unsubscribe"):
            self._answer(conn, str(method), req_id, time_in, error="Method not found")
            return
        params = request.get("params")
        if not isinstance(params, dict):
            self._answer(conn, method, req_id, time_in, error="Missing params")
            return
        channel, symbols = params.get("channel"), params.get("symbol")
        if channel not in (TICKER, TRADE, BOOK):
            self._answer(conn, method, req_id, time_in, error=f"Channel {channel} not supported")
            return
        if not isinstance(symbols, list) or not symbols:
            self._answer(conn, method, req_id, time_in, error="Missing field: symbol")
            return
        depth = params.get("depth", 10)
        if channel == BOOK and depth not in DEPTHS:
            self._answer(conn, method, req_id, time_in, error=f"Invalid depth {depth}")
            return
        trigger = params.get("event_trigger", "trades")
        if channel == TICKER and trigger not in ("trades", "bbo"):
            self._answer(conn, method, req_id, time_in, error=f"Invalid event_trigger {trigger}")
            return
        snapshot = params.get("snapshot", channel != TRADE)
        for symbol in symbols:
            p = self.pairs.get(symbol)
            if p is None:
                self._answer(conn, method, req_id, time_in, symbol=symbol,
                             error=f"Currency pair not supported {symbol}")
                continue
            topic = {TICKER: f"ticker/{trigger}:{symbol}", TRADE: f"trade:{symbol}",
                     BOOK: f"book/{depth}:{symbol}"}[channel]
            result: dict[str, Any] = {"channel": channel}
            if channel == BOOK:
                result["depth"] = depth
            if channel == TICKER and method == "subscribe":
                result["event_trigger"] = trigger
            if method == "subscribe":
                result["snapshot"] = bool(snapshot)
            result["symbol"] = symbol
            if method == "unsubscribe":
                self.server.unsubscribe(conn, topic)
                self._answer(conn, method, req_id, time_in, result=result)
                continue
            self.server.subscribe(conn, topic)
            if channel == BOOK and depth not in p.views:
                p.views[depth] = BookView(depth)
                p.views[depth].update(p.quoter.ladder)
            self._answer(conn, method, req_id, time_in, result=result)
            if snapshot:
                self._snapshot(conn, p, channel, depth)

    def _snapshot(self, conn: Conn, p: _Pair, channel: str, depth: int) -> None:
        ts = self.ctx.now_ts
        if channel == TICKER:
            self.send(conn, TICKER, {"channel": "ticker", "type": "snapshot",
                                     "data": [self._ticker_item(p, ts)]})
        elif channel == TRADE:
            if p.recent:
                self.send(conn, TRADE, {"channel": "trade", "type": "snapshot",
                                        "data": list(p.recent)})
        else:
            view = p.views[depth]
            bids, asks = view.snapshot()
            self.send(conn, BOOK, {"channel": "book", "type": "snapshot", "data": [{
                "symbol": p.symbol, "bids": p.levels(bids), "asks": p.levels(asks),
                "checksum": p.checksum(view), "timestamp": iso_ms(ts)}]})
