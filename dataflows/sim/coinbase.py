"""Coinbase Exchange's websocket feed (``wss://ws-feed.exchange.coinbase.com``), as documented
(docs.cdp.coinbase.com, "Exchange WebSocket channels") and recorded in
``../shared/data/recorded/COINBASE.ws.28.0``.

- One endpoint (``/``). ``{"type":"subscribe","product_ids":[...],"channels":[...]}`` (channels as
  names or ``{"name":...,"product_ids":[...]}``) is answered with a ``subscriptions`` message
  listing everything the connection is subscribed to; ``unsubscribe`` likewise. Bad requests get
  ``{"type":"error","message":...,"reason":...}``.
- ``ticker``: ``{"type":"ticker","sequence","product_id","price","open_24h","volume_24h","low_24h",
  "high_24h","volume_30d","best_bid","best_bid_size","best_ask","best_ask_size","side","time",
  "trade_id","last_size"}``; sent when the top of book changes. ``price``/``side``/``trade_id``/
  ``last_size`` describe the last trade (``side`` the taker's).
- ``matches``: ``{"type":"match","trade_id","maker_order_id","taker_order_id","side","size","price",
  "product_id","sequence","time"}``, ``side`` the MAKER's side (a taker buy is ``"sell"``); on
  subscribing, a ``last_match`` with the latest trade.
- ``heartbeat``: ``{"type":"heartbeat","sequence","last_trade_id","product_id","time"}`` every
  second per product (``sequence`` the last one used, not a new one).
- ``level2_batch`` (or ``level2``): a ``snapshot`` ``{"type":"snapshot","product_id","bids":
  [["price","size"],...],"asks":[...]}`` on subscribing, then ``l2update`` ``{"type":"l2update",
  "product_id","changes":[["buy"|"sell","price","size"],...],"time"}`` every 50 ms with the levels
  that changed (size "0.00000000" removes one).

``sequence`` is per product and shared by ``ticker`` and ``match``: it increases by exactly 1 per
message generated, so a client subscribed to both channels sees it contiguous; ``trade_id`` is +1
per match. A ``skip_seq`` fault loses one match: the next match's ``sequence`` and ``trade_id``
both skip one (heartbeats' ``last_trade_id`` tell the same). Prices are decimal strings on the
product's quote increment (0.01), sizes on its base increment (8 decimals); times RFC 3339 with
microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from dataflows.sim.faults import VenueFaults
from dataflows.sim.market import (
    Quoter,
    base_asset,
    decimals_of,
    iso_ms,
    ladder_step_ticks,
    rng_for,
    uuid_from,
)
from dataflows.sim.server import ERROR, Conn, MsgSpec, SimContext, Venue, parse_json, periodic

EXCHANGE = "coinbase"
TICKER, MATCH, LAST_MATCH, SNAPSHOT, L2UPDATE, HEARTBEAT = (
    "ticker", "match", "last_match", "snapshot", "l2update", "heartbeat")
CHANNELS = ("ticker", "matches", "heartbeat", "level2_batch", "level2")

_TICKER_SPEC = MsgSpec(price=("best_bid",), bid=("best_bid",), ask=("best_ask",))
_MATCH_SPEC = MsgSpec(price=("price",), qty=("size",))
_L2_SPEC = MsgSpec(price=("changes",))
TICK = 0.01
LOT = 1e-8


class _Product:
    def __init__(self, product: str, asset: str, seed: int, spot: float) -> None:
        self.product = product
        self.asset = asset
        rng = rng_for(seed, EXCHANGE, product)
        self.quoter = Quoter(product, asset, TICK, LOT, 1.0, rng, ladder_depth=20,
                             ladder_step_ticks=ladder_step_ticks(spot, TICK))
        self.rng = rng
        self.sequence = int(rng.integers(10_000_000_000, 90_000_000_000))
        self.trade_id = int(rng.integers(100_000_000, 900_000_000))
        self.open_24h = spot
        self.low_24h = spot * 0.98
        self.high_24h = spot * 1.02
        self.volume_24h = float(rng.uniform(5_000, 20_000)) * 97_000.0 / spot
        self.volume_30d = self.volume_24h * 30.0
        self.last_match: dict[str, Any] | None = None
        self.pdec = decimals_of(TICK)

    def next_sequence(self, skip: bool) -> tuple[int, int]:
        skipped = 1 if skip else 0
        self.sequence += 1 + skipped
        return self.sequence, skipped

    def price(self, value: float) -> str:
        return f"{value:.{self.pdec}f}"


def _size(value: float) -> str:
    return f"{value:.8f}"


class CoinbaseVenue(Venue):
    name = EXCHANGE
    paths = ("/",)
    data_kinds = (TICKER, MATCH, LAST_MATCH, SNAPSHOT, L2UPDATE)
    heartbeat_kinds = (HEARTBEAT,)

    def __init__(self, ctx: SimContext, faults: VenueFaults, products: Iterable[str]) -> None:
        super().__init__(ctx, faults)
        cfg = ctx.config
        self.products: dict[str, _Product] = {}
        for p in products:
            asset = base_asset(p)
            if asset not in self.market.specs:
                raise ValueError(f"coinbase product {p!r}: no simulated market for its base asset")
            self.products[p] = _Product(p, asset, ctx.seed, self.market.specs[asset].spot_usd)
        self.quote_rate_hz = cfg.quote_rate_hz
        self.trade_rate_hz = cfg.trade_rate_hz

    # ---------------------------------------------------------------- generation
    def timers(self):
        out = []
        for p in self.products.values():
            p.quoter.requote(self._mid(p))
            p.quoter.take_book_changes()  # the first book is the snapshot's, not a change
            if self.quote_rate_hz > 0:
                out.append((1.0 / self.quote_rate_hz,
                            periodic(1.0 / self.quote_rate_hz, lambda due, p=p: self._quote(p))))
            if self.trade_rate_hz > 0:
                out.append((p.quoter.trade_gap_s(self.trade_rate_hz), self._trade_timer(p)))
            out.append((0.05, periodic(0.05, lambda due, p=p: self._l2(p))))
            out.append((self.ctx.config.heartbeat_interval_s,
                        periodic(self.ctx.config.heartbeat_interval_s,
                                 lambda due, p=p: self._heartbeat(p))))
        return out

    def _mid(self, p: _Product) -> float:
        return self.market.venue_mid(self.name, p.asset) * (1.0 + self.faults.deviation)

    def _ticker(self, p: _Product, seq: int, ts: float) -> dict[str, Any]:
        q = p.quoter
        return {
            "type": "ticker", "sequence": seq, "product_id": p.product,
            "price": p.price(q.last_price), "open_24h": p.price(p.open_24h),
            "volume_24h": _size(p.volume_24h), "low_24h": p.price(p.low_24h),
            "high_24h": p.price(p.high_24h), "volume_30d": _size(p.volume_30d),
            "best_bid": p.price(q.bid), "best_bid_size": _size(q.bid_size),
            "best_ask": p.price(q.ask), "best_ask_size": _size(q.ask_size),
            "side": q.last_side, "time": iso_ms(ts), "trade_id": p.trade_id,
            "last_size": _size(q.last_size),
        }

    def _quote(self, p: _Product) -> None:
        changed = p.quoter.requote(self._mid(p))
        if not changed:
            return
        seq, skipped = p.next_sequence(False)
        ts, ooo = self.event_ts(f"ticker:{p.product}")
        if self.stale:
            return
        self.emit(f"ticker:{p.product}", TICKER, self._ticker(p, seq, ts), _TICKER_SPEC,
                  skipped_seq=skipped, out_of_order=ooo)

    def _trade_timer(self, p: _Product):
        def fire(due: float) -> float:
            price, size, taker = p.quoter.trade()
            # A skip_seq fault on a match loses one match: its sequence and its trade id.
            skip = self.skip()
            p.trade_id += 2 if skip else 1
            p.volume_24h += size
            p.volume_30d += size
            p.low_24h, p.high_24h = min(p.low_24h, price), max(p.high_24h, price)
            seq, skipped = p.next_sequence(skip)
            ts, ooo = self.event_ts(f"matches:{p.product}")
            match = {
                "type": "match", "trade_id": p.trade_id, "maker_order_id": uuid_from(p.rng),
                "taker_order_id": uuid_from(p.rng), "side": "sell" if taker == "buy" else "buy",
                "size": _size(size), "price": p.price(price), "product_id": p.product,
                "sequence": seq, "time": iso_ms(ts),
            }
            p.last_match = match
            if not self.stale:
                self.emit(f"matches:{p.product}", MATCH, match, _MATCH_SPEC, trade=True,
                          skipped_seq=skipped, out_of_order=ooo)
            return due + p.quoter.trade_gap_s(self.trade_rate_hz)
        return fire

    def _l2(self, p: _Product) -> None:
        changes = p.quoter.take_book_changes()
        if not changes or self.stale:
            return
        ts, ooo = self.event_ts(f"level2:{p.product}")
        msg = {"type": "l2update", "product_id": p.product,
               "changes": [["buy" if side == "bid" else "sell", p.price(k * TICK), _size(size)]
                           for side, k, size in changes],
               "time": iso_ms(ts)}
        for name in ("level2_batch", "level2"):
            self.emit(f"{name}:{p.product}", L2UPDATE, msg, _L2_SPEC, out_of_order=ooo)

    def _heartbeat(self, p: _Product) -> None:
        topic = f"heartbeat:{p.product}"
        if self.subscribed(topic):
            self.server.publish(topic, HEARTBEAT, self._dumps_heartbeat(p))

    def _dumps_heartbeat(self, p: _Product) -> bytes:
        return orjson.dumps({"type": "heartbeat", "sequence": p.sequence,
                             "last_trade_id": p.trade_id, "product_id": p.product,
                             "time": iso_ms(self.ctx.now_ts)})

    # ---------------------------------------------------------------- requests
    def on_text(self, conn: Conn, text: str | bytes) -> None:
        request = parse_json(text)
        if not isinstance(request, dict):
            self._error(conn, "Malformed JSON", "request is not a JSON object")
            return
        kind = request.get("type")
        if kind not in ("subscribe", "unsubscribe"):
            self._error(conn, "Failed to subscribe",
                        "Type has to be either subscribe or unsubscribe")
            return
        default_products = request.get("product_ids", [])
        channels = request.get("channels")
        if not isinstance(channels, list) or not channels:
            self._error(conn, "Failed to subscribe", "channels must be a non-empty list")
            return
        wanted: list[tuple[str, str]] = []
        for ch in channels:
            if isinstance(ch, str):
                name, prods = ch, default_products
            elif isinstance(ch, dict) and isinstance(ch.get("name"), str):
                name, prods = ch["name"], ch.get("product_ids", default_products)
            else:
                self._error(conn, "Failed to subscribe", f"invalid channel {ch!r}")
                return
            if name not in CHANNELS:
                self._error(conn, "Failed to subscribe", f"{name} is not a valid channel")
                return
            if not isinstance(prods, list) or not prods:
                self._error(conn, "Failed to subscribe", "product_ids must be a non-empty list")
                return
            for prod in prods:
                if prod not in self.products:
                    self._error(conn, "Failed to subscribe", f"{prod} is not a valid product")
                    return
                wanted.append((name, prod))
        fresh = []
        for name, prod in wanted:
            topic = f"{name}:{prod}"
            if kind == "subscribe":
                if topic not in conn.topics:
                    fresh.append((name, prod))
                self.server.subscribe(conn, topic)
            else:
                self.server.unsubscribe(conn, topic)
        self.reply(conn, self._subscriptions(conn))
        for name, prod in fresh:
            p = self.products[prod]
            if name in ("level2_batch", "level2"):
                bids, asks = p.quoter.ladder.snapshot()
                self.send(conn, SNAPSHOT, {
                    "type": "snapshot", "product_id": prod,
                    "bids": [[p.price(k * TICK), _size(s)] for k, s in bids],
                    "asks": [[p.price(k * TICK), _size(s)] for k, s in asks]})
            elif name == "matches" and p.last_match is not None:
                self.send(conn, LAST_MATCH, {**p.last_match, "type": "last_match"})

    def _subscriptions(self, conn: Conn) -> dict[str, Any]:
        by_channel: dict[str, list[str]] = {}
        for topic in conn.topics:
            name, _, prod = topic.partition(":")
            by_channel.setdefault(name, []).append(prod)
        return {"type": "subscriptions",
                "channels": [{"name": n, "product_ids": ps} for n, ps in by_channel.items()]}

    def _error(self, conn: Conn, message: str, reason: str) -> None:
        self.reply(conn, {"type": "error", "message": message, "reason": reason}, verdict=ERROR)
