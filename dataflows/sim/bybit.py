"""Bybit v5 public linear websocket (``wss://stream.bybit.com/v5/public/linear``), as documented at
bybit-exchange.github.io/docs/v5 ("Connect", "Ticker", "Trade", "Orderbook").

- Path ``/v5/public/linear``. ``{"op":"subscribe","args":["tickers.BTCUSDT",...],"req_id":...}`` →
  ``{"success":true,"ret_msg":"","conn_id":...,"req_id":...,"op":"subscribe"}`` (``success``
  false with ``"error:handler not found,topic:..."`` for topics it does not serve); the same for
  ``unsubscribe``. ``{"op":"ping"}`` → ``{"success":true,"ret_msg":"pong","conn_id":...,
  "req_id":...,"op":"ping"}``. Bybit sends no heartbeats of its own.
- ``tickers.<symbol>``: ``{"topic","type":"snapshot"|"delta","data":{...},"cs":N,"ts":ms}``. The
  snapshot (on subscribing) has every field: symbol, tickDirection, price24hPcnt, lastPrice,
  prevPrice24h, highPrice24h, lowPrice24h, prevPrice1h, markPrice, indexPrice, openInterest,
  openInterestValue, turnover24h, volume24h, nextFundingTime, fundingRate, bid1Price, bid1Size,
  ask1Price, ask1Size; deltas (every 100 ms) carry ``symbol`` and only the fields that changed.
  ``cs`` (cross sequence) increases but is not consecutive.
- ``publicTrade.<symbol>``: ``{"topic","type":"snapshot","ts":ms,"data":[{"T":ms,"s","S":"Buy"|
  "Sell" (taker),"v","p","L":tick direction,"i":trade id (UUID),"BT":false}]}``.
- ``orderbook.1.<symbol>`` and ``orderbook.50.<symbol>``: a snapshot on subscribing, then deltas
  ``{"topic","type":"delta","ts":ms,"data":{"s","b":[["price","size"]],"a":[...],"u":N,"seq":N},
  "cts":ms}`` with the levels that changed within the depth (size "0" deletes); ``u`` +1 per
  message per topic (a ``skip_seq`` fault skips one).

All prices and sizes are decimal strings (BTCUSDT: price 0.10 tick printed with 2 decimals, size
0.001), times milliseconds. The perpetual trades around its mark: the shared market's index times
(1 + funding + premium), with Bybit's basis.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dataflows.sim.faults import VenueFaults
from dataflows.sim.market import (
    BookView,
    Quoter,
    base_asset,
    ladder_step_ticks,
    rng_for,
    uuid_from,
)
from dataflows.sim.server import ERROR, Conn, MsgSpec, SimContext, Venue, parse_json, periodic
from models.market_sim import next_funding_ts

EXCHANGE = "bybit"
TICKERS, TRADE, ORDERBOOK = "tickers", "publicTrade", "orderbook"
BOOK_DEPTHS = (1, 50)
SPECS = {"BTC": (0.1, 0.001, 2, 3), "ETH": (0.01, 0.01, 2, 2)}  # tick, lot, price dec, size dec

_TICKER_SPEC = MsgSpec(price=("data",))
_TRADE_SPEC = MsgSpec(price=("data", 0, "p"), qty=("data", 0, "v"))
_BOOK_SPEC = MsgSpec(price=("data", "u"))


class _Symbol:
    def __init__(self, symbol: str, asset: str, seed: int, spot: float) -> None:
        self.symbol = symbol
        self.asset = asset
        tick, lot, self.pdec, self.sdec = SPECS.get(asset, (0.01, 0.01, 2, 2))
        self.tick = tick
        rng = rng_for(seed, EXCHANGE, symbol)
        self.rng = rng
        self.quoter = Quoter(symbol, asset, tick, lot, 0.5, rng, quote_notional_usd=200_000.0,
                             trade_notional_usd=5_000.0, ladder_depth=50,
                             ladder_step_ticks=ladder_step_ticks(spot, tick, 0.3))
        self.views = {d: BookView(d) for d in BOOK_DEPTHS}
        self.u = {d: int(rng.integers(1_000_000, 50_000_000)) for d in BOOK_DEPTHS}
        self.pending_skip = {d: 0 for d in BOOK_DEPTHS}
        self.cs = int(rng.integers(10_000_000_000, 50_000_000_000))
        self.state: dict[str, str] = {}
        self.prev_price_24h = spot
        self.high, self.low = spot * 1.02, spot * 0.98
        self.volume = float(rng.uniform(50_000, 100_000)) * 97_000.0 / spot
        self.turnover = self.volume * spot
        self.open_interest = float(rng.uniform(40_000, 80_000)) * 97_000.0 / spot
        self.tick_direction = "ZeroPlusTick"

    def price(self, value: float) -> str:
        return f"{value:.{self.pdec}f}"

    def size(self, value: float) -> str:
        return f"{value:.{self.sdec}f}" if value else "0"

    def next_cs(self) -> int:
        self.cs += int(self.rng.integers(1, 40))
        return self.cs


class BybitVenue(Venue):
    name = EXCHANGE
    paths = ("/v5/public/linear",)
    data_kinds = (TICKERS, TRADE, ORDERBOOK)

    def __init__(self, ctx: SimContext, faults: VenueFaults, symbols: Iterable[str]) -> None:
        super().__init__(ctx, faults)
        self.symbols: dict[str, _Symbol] = {}
        for symbol in symbols:
            asset = base_asset(symbol)
            if asset not in self.market.specs:
                raise ValueError(f"bybit symbol {symbol!r}: no simulated market for its base asset")
            spot = self.market.specs[asset].spot_usd
            self.symbols[symbol] = _Symbol(symbol, asset, ctx.seed, spot)
        cfg = ctx.config
        self.quote_rate_hz = cfg.quote_rate_hz
        self.trade_rate_hz = cfg.trade_rate_hz
        self.perp_rate_hz = cfg.perp_rate_hz
        self._conn_rng = rng_for(ctx.seed, EXCHANGE, "connection-ids")

    # ---------------------------------------------------------------- generation
    def _mid(self, s: _Symbol) -> float:
        return self.market.perp_mark(s.asset, self.name) * (1.0 + self.faults.deviation)

    def timers(self):
        out = []
        for s in self.symbols.values():
            s.quoter.requote(self._mid(s))
            for d, view in s.views.items():
                view.update(s.quoter.ladder)
            s.state = self._ticker_state(s)
            if self.quote_rate_hz > 0:
                out.append((1.0 / self.quote_rate_hz,
                            periodic(1.0 / self.quote_rate_hz, lambda due, s=s: self._quote(s))))
            if self.trade_rate_hz > 0:
                out.append((s.quoter.trade_gap_s(self.trade_rate_hz), self._trade_timer(s)))
            if self.perp_rate_hz > 0:
                out.append((1.0 / self.perp_rate_hz,
                            periodic(1.0 / self.perp_rate_hz, lambda due, s=s: self._ticker(s))))
        return out

    def _ticker_state(self, s: _Symbol) -> dict[str, str]:
        q = s.quoter
        asset = s.asset
        mark = self.market.perp_mark(asset, self.name) * (1.0 + self.faults.deviation)
        index = self.market.venue_mid(self.name, asset) * (1.0 + self.faults.deviation)
        last = q.last_price
        return {
            "symbol": s.symbol, "tickDirection": s.tick_direction,
            "price24hPcnt": f"{last / s.prev_price_24h - 1.0:.6f}", "lastPrice": s.price(last),
            "prevPrice24h": s.price(s.prev_price_24h), "highPrice24h": s.price(s.high),
            "lowPrice24h": s.price(s.low), "prevPrice1h": s.price(s.prev_price_24h),
            "markPrice": s.price(mark), "indexPrice": s.price(index),
            "openInterest": s.size(s.open_interest),
            "openInterestValue": f"{s.open_interest * mark:.2f}",
            "turnover24h": f"{s.turnover:.4f}", "volume24h": s.size(s.volume),
            "nextFundingTime": str(int(next_funding_ts(self.ctx.now_ts) * 1000)),
            "fundingRate": f"{self.market.funding_rate(asset):.6f}",
            "bid1Price": s.price(q.bid), "bid1Size": s.size(q.bid_size),
            "ask1Price": s.price(q.ask), "ask1Size": s.size(q.ask_size),
        }

    def _ticker(self, s: _Symbol) -> None:
        new = self._ticker_state(s)
        delta = {k: v for k, v in new.items() if s.state.get(k) != v}
        s.state = new
        if not delta or self.stale:
            return
        topic = f"tickers.{s.symbol}"
        ts, ooo = self.event_ts(topic)
        msg = {"topic": topic, "type": "delta", "data": {"symbol": s.symbol, **delta},
               "cs": s.next_cs(), "ts": int(ts * 1000)}
        self.emit(topic, TICKERS, msg, _TICKER_SPEC, out_of_order=ooo)

    def _book_msg(self, s: _Symbol, depth: int, kind: str, changes, ts: float) -> dict[str, Any]:
        bids = [[s.price(k * s.tick), s.size(z)] for side, k, z in changes if side == "bid"]
        asks = [[s.price(k * s.tick), s.size(z)] for side, k, z in changes if side == "ask"]
        ms = int(ts * 1000)
        return {"topic": f"orderbook.{depth}.{s.symbol}", "type": kind, "ts": ms,
                "data": {"s": s.symbol, "b": bids, "a": asks, "u": s.u[depth], "seq": s.cs},
                "cts": ms}

    def _quote(self, s: _Symbol) -> None:
        s.quoter.requote(self._mid(s))
        s.quoter.take_book_changes()
        for depth, view in s.views.items():
            changes = view.update(s.quoter.ladder)
            if not changes:
                continue
            skipped = s.pending_skip[depth]
            s.u[depth] += 1 + skipped
            s.pending_skip[depth] = 1 if self.skip() else 0
            topic = f"orderbook.{depth}.{s.symbol}"
            ts, ooo = self.event_ts(topic)
            s.next_cs()
            if self.stale:
                continue
            self.emit(topic, ORDERBOOK, self._book_msg(s, depth, "delta", changes, ts), _BOOK_SPEC,
                      skipped_seq=skipped, out_of_order=ooo)

    def _trade_timer(self, s: _Symbol):
        def fire(due: float) -> float:
            before = s.quoter.last_price
            price, size, taker = s.quoter.trade()
            if price > before:
                s.tick_direction = "PlusTick"
            elif price < before:
                s.tick_direction = "MinusTick"
            else:
                s.tick_direction = ("ZeroPlusTick" if "Plus" in s.tick_direction
                                    else "ZeroMinusTick")
            s.volume += size
            s.turnover += size * price
            s.high, s.low = max(s.high, price), min(s.low, price)
            topic = f"publicTrade.{s.symbol}"
            ts, ooo = self.event_ts(topic)
            ms = int(ts * 1000)
            msg = {"topic": topic, "type": "snapshot", "ts": ms, "data": [{
                "T": ms, "s": s.symbol, "S": "Buy" if taker == "buy" else "Sell",
                "v": s.size(size), "p": s.price(price), "L": s.tick_direction,
                "i": uuid_from(s.rng), "BT": False}]}
            if not self.stale:
                self.emit(topic, TRADE, msg, _TRADE_SPEC, trade=True, out_of_order=ooo)
            return due + s.quoter.trade_gap_s(self.trade_rate_hz)
        return fire

    # ---------------------------------------------------------------- requests
    def on_open(self, conn: Conn) -> None:
        conn.state["conn_id"] = (f"{self._conn_rng.integers(0, 1 << 32):08x}-"
                                 f"{self._conn_rng.integers(0, 1 << 16):04x}-4"
                                 f"{self._conn_rng.integers(0, 1 << 12):03x}-a"
                                 f"{self._conn_rng.integers(0, 1 << 12):03x}-"
                                 f"{self._conn_rng.integers(0, 1 << 48):012x}")

    def _topic(self, arg: Any) -> tuple[str, _Symbol] | None:
        if not isinstance(arg, str):
            return None
        parts = arg.split(".")
        if len(parts) == 2 and parts[0] in (TICKERS, TRADE) and parts[1] in self.symbols:
            return parts[0], self.symbols[parts[1]]
        if (len(parts) == 3 and parts[0] == ORDERBOOK and parts[1] in {str(d) for d in BOOK_DEPTHS}
                and parts[2] in self.symbols):
            return ORDERBOOK, self.symbols[parts[2]]
        return None

    def on_text(self, conn: Conn, text: str | bytes) -> None:
        request = parse_json(text)
        conn_id = conn.state.get("conn_id", "")
        if not isinstance(request, dict):
            self.reply(conn, {"success": False, "ret_msg": "error:invalid request",
                              "conn_id": conn_id, "op": ""}, verdict=ERROR)
            return
        op, req_id = request.get("op"), request.get("req_id", "")
        if op == "ping":
            self.reply(conn, {"success": True, "ret_msg": "pong", "conn_id": conn_id,
                              "req_id": req_id, "op": "ping"})
            return
        if op not in ("subscribe", "unsubscribe"):
            self.reply(conn, {"success": False, "ret_msg": f"error:unknown op {op}",
                              "conn_id": conn_id, "req_id": req_id, "op": op}, verdict=ERROR)
            return
        args = request.get("args")
        if not isinstance(args, list) or not args:
            self.reply(conn, {"success": False, "ret_msg": "error:args is empty",
                              "conn_id": conn_id, "req_id": req_id, "op": op}, verdict=ERROR)
            return
        bad = [a for a in args if self._topic(a) is None]
        good = [a for a in args if self._topic(a) is not None]
        fresh = []
        for topic in good:
            if op == "subscribe":
                if topic not in conn.topics:
                    fresh.append(topic)
                self.server.subscribe(conn, topic)
            else:
                self.server.unsubscribe(conn, topic)
        if bad:
            self.reply(conn, {"success": False,
                              "ret_msg": "error:handler not found,topic:" + ",".join(map(str, bad)),
                              "conn_id": conn_id, "req_id": req_id, "op": op}, verdict=ERROR)
        else:
            self.reply(conn, {"success": True, "ret_msg": "", "conn_id": conn_id,
                              "req_id": req_id, "op": op})
        for topic in fresh:
            self._snapshot(conn, topic)

    def _snapshot(self, conn: Conn, topic: str) -> None:
        kind, s = self._topic(topic)
        ts = self.ctx.now_ts
        if kind == TICKERS:
            self.send(conn, TICKERS, {"topic": topic, "type": "snapshot", "data": dict(s.state),
                                      "cs": s.cs, "ts": int(ts * 1000)})
        elif kind == ORDERBOOK:
            depth = int(topic.split(".")[1])
            bids, asks = s.views[depth].snapshot()
            changes = [("bid", k, z) for k, z in bids] + [("ask", k, z) for k, z in asks]
            self.send(conn, ORDERBOOK, self._book_msg(s, depth, "snapshot", changes, ts))
