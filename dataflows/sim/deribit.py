"""Deribit's JSON-RPC websocket API v2 (``wss://www.deribit.com/ws/api/v2``) and its HTTP GET
twin, as documented at docs.deribit.com and recorded in ``../shared/data/recorded/DERIBIT.ws.1.0``
and ``deribit_ws_*.json``.

- Path ``/ws/api/v2``. Requests ``{"jsonrpc":"2.0","id":N,"method":...,"params":{...}}`` are
  answered ``{"jsonrpc":"2.0","id":N,"result":...,"usIn":us,"usOut":us,"usDiff":us,
  "testnet":false}`` or with ``"error":{"code":...,"message":...}``. Methods: ``public/subscribe``
  and ``public/unsubscribe`` (result: the channels), ``public/unsubscribe_all``,
  ``public/set_heartbeat`` (``interval`` >= 10 s, configurable) and ``public/disable_heartbeat``,
  ``public/test``, ``public/hello``, ``public/get_time``, ``public/get_instruments``
  (``currency``, ``kind``, ``expired``), ``public/get_index_price``.
- HTTP: ``GET /api/v2/public/<method>?<params>`` answers the same JSON-RPC object (no ``id``), e.g.
  ``/api/v2/public/get_instruments?currency=BTC&kind=option``.
- Heartbeats: after ``set_heartbeat`` the server sends ``{"jsonrpc":"2.0","method":"heartbeat",
  "params":{"type":"test_request"}}`` every interval; a client that has not answered the previous
  one with ``public/test`` by the next is disconnected, as on Deribit.
- Notifications ``{"jsonrpc":"2.0","method":"subscription","params":{"channel":...,"data":...}}``
  on public channels (interval ``100ms`` or ``agg2``; ``raw`` needs authentication and is
  refused):

  * ``ticker.<instrument>.100ms``: options with ``underlying_price`` (the expiry's forward),
    ``underlying_index``, ``mark_price``/``best_bid_price``/``best_ask_price`` in coin, amounts in
    contracts, ``mark_iv``/``bid_iv``/``ask_iv`` in percent, ``greeks`` (delta, gamma, vega per
    vol point, theta per day, rho), ``open_interest``, ``index_price``, ``stats``; perpetuals
    (``BTC-PERPETUAL``, ``ETH-PERPETUAL``) with prices in USD, amounts in USD, and
    ``current_funding``/``funding_8h`` (per-8-hour fractions) and ``interest_value``;
  * ``book.<instrument>.100ms``: a ``snapshot`` on subscribing, then ``change`` messages
    ``{"type","timestamp","prev_change_id","instrument_name","change_id","bids":[[action,price,
    amount]],"asks":[...]}`` (action ``new``/``change``/``delete``); ``change_id`` increases, not
    consecutively, and each change's ``prev_change_id`` is the previous ``change_id`` (a
    ``skip_seq`` fault makes it point at a change never sent);
  * ``trades.<instrument>.100ms`` and ``trades.<kind>.<currency>.100ms`` (kind ``option``,
    ``future``, ``any``): a LIST of trades with ``trade_seq`` (+1 per trade per instrument),
    ``trade_id``, ``price``, ``amount``, ``direction`` (taker), ``index_price``, ``mark_price``,
    ``iv`` (options), ``tick_direction``, ``contracts``, ``timestamp``;
  * ``deribit_price_index.btc_usd`` / ``eth_usd``: ``{"index_name","price","timestamp"}``.

Option chain (``models/option_chain.py``): per currency, dailies, weeklies, monthlies and
quarterlies at 08:00 UTC with strikes around the forward, quoted from an SSVI surface (negative
skew, upward term structure), re-priced every ``chain_refresh_s`` and re-listed when an expiry
passes. Option tickers are bounded by ``option_rate_hz`` in total: a round-robin over the
subscribed options (ticker or book), each at most every ``option_min_interval_s``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from dataflows.sim.faults import VenueFaults
from dataflows.sim.market import Quoter, ladder_step_ticks, rng_for
from dataflows.sim.server import (
    ERROR,
    Conn,
    MsgSpec,
    SimContext,
    Venue,
    first_value,
    parse_json,
    periodic,
)
from models.option_chain import (
    BTC_SURFACE,
    ETH_SURFACE,
    MIN_PRICE,
    TICK_LARGE,
    TICK_SMALL,
    TICK_STEP_ABOVE,
    ChainQuotes,
    ChainSpec,
    SurfaceParams,
    build_chain,
    quote_chain,
    tick_for,
)

EXCHANGE = "deribit"
TICKER, OPTION_TICKER, BOOK, TRADES, INDEX, HEARTBEAT = (
    "ticker", "option_ticker", "book", "trades", "index", "heartbeat")
INTERVALS = ("100ms", "agg2")
SURFACES = {"BTC": BTC_SURFACE, "ETH": ETH_SURFACE}
PERP = {  # tick, contract size (USD), amount notional, price decimals
    "BTC": (0.5, 10.0, 1),
    "ETH": (0.05, 1.0, 2),
}
VERSION = "1.2.26"
FAR_FUTURE_MS = 32503708800000  # Deribit's expiration_timestamp of perpetuals (year 3000)

_NOTE = ("params", "data")
_TICKER_SPEC = MsgSpec(price=_NOTE + ("mark_price",), bid=_NOTE + ("best_bid_price",),
                       ask=_NOTE + ("best_ask_price",))
_BOOK_SPEC = MsgSpec(price=_NOTE + ("change_id",))
_TRADES_SPEC = MsgSpec(price=_NOTE + (0, "price"), qty=_NOTE + (0, "amount"))
_INDEX_SPEC = MsgSpec(price=_NOTE + ("price",))


def _note(channel: str, data: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "subscription",
            "params": {"channel": channel, "data": data}}


def _ms(ts: float) -> int:
    return int(ts * 1000.0)


@dataclass
class _Book:
    """Levels last sent for one instrument (price → amount) and its change ids."""

    change_id: int
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)
    pending_skip: bool = False

    def diff(self, bids: dict[float, float], asks: dict[float, float]):
        out = []
        for old, new in ((self.bids, bids), (self.asks, asks)):
            side = []
            for price in sorted(set(old) | set(new), reverse=old is self.bids):
                if price not in new:
                    side.append(["delete", price, 0.0])
                elif price not in old:
                    side.append(["new", price, new[price]])
                elif old[price] != new[price]:
                    side.append(["change", price, new[price]])
            out.append(side)
        self.bids, self.asks = dict(bids), dict(asks)
        return out

    def snapshot(self):
        return ([["new", p, a] for p, a in sorted(self.bids.items(), reverse=True)],
                [["new", p, a] for p, a in sorted(self.asks.items())])


class _Option:
    """Per-option state that is not in the vectorized quote: open interest, book, trades."""

    def __init__(self, seed: int, name: str, z: float, oi_scale: float) -> None:
        self.rng = rng_for(seed, EXCHANGE, name)
        self.open_interest = round(oi_scale * float(self.rng.lognormal(0.0, 0.6))
                                   * math.exp(-0.5 * z * z) + 0.1, 1)
        self.book = _Book(int(self.rng.integers(10_000_000_000, 60_000_000_000)))
        self.trade_seq = int(self.rng.integers(1, 5_000))
        self.last_ticker_s = -1e9
        self.volume = 0.0
        self.low = math.nan
        self.high = math.nan
        self.last_price: float | None = None

    def amount(self) -> float:
        return round(max(0.1, float(self.rng.lognormal(2.0, 1.0))), 1)


class _Chain:
    """One currency's listed options and their latest vectorized quote."""

    def __init__(self, currency: str, spec: ChainSpec, id_base: int) -> None:
        self.currency = currency
        self.spec = spec
        self.index = {name: i for i, name in enumerate(spec.names)}
        self.ids = {name: id_base + i for i, name in enumerate(spec.names)}
        self.quotes: ChainQuotes | None = None
        futures = {e.code for e in spec.expiries if e.period == "month"}
        self.underlying = [
            f"{currency}-{spec.expiries[j].code}" if spec.expiries[j].code in futures
            else f"SYN.{currency}-{spec.expiries[j].code}" for j in spec.expiry_index]


class _Perp:
    def __init__(self, currency: str, seed: int, spot: float) -> None:
        self.currency = currency
        self.name = f"{currency}-PERPETUAL"
        tick, contract, self.pdec = PERP.get(currency, (0.01, 1.0, 2))
        self.tick = tick
        self.contract = contract
        rng = rng_for(seed, EXCHANGE, self.name)
        self.rng = rng
        self.quoter = Quoter(self.name, currency, tick, 1e-8, 0.3, rng,
                             quote_notional_usd=300_000.0, trade_notional_usd=20_000.0,
                             ladder_depth=10, ladder_step_ticks=ladder_step_ticks(spot, tick, 0.5),
                             size_in_usd=contract)
        self.book = _Book(int(rng.integers(10_000_000_000, 60_000_000_000)))
        self.trade_seq = int(rng.integers(100_000_000, 300_000_000))
        self.open_interest = float(rng.uniform(0.8e9, 1.2e9)) * spot / 97_000.0
        self.volume = float(rng.uniform(8_000, 12_000)) * 97_000.0 / spot
        self.open = spot
        self.high, self.low = spot * 1.02, spot * 0.98
        self.funding_8h = 0.0

    def price(self, value: float) -> float:
        return round(value, self.pdec)


class DeribitVenue(Venue):
    name = EXCHANGE
    paths = ("/ws/api/v2",)
    data_kinds = (TICKER, OPTION_TICKER, BOOK, TRADES, INDEX)
    heartbeat_kinds = (HEARTBEAT,)

    def __init__(self, ctx: SimContext, faults: VenueFaults, currencies: Iterable[str]) -> None:
        super().__init__(ctx, faults)
        self.currencies = tuple(c.upper() for c in currencies)
        for c in self.currencies:
            if c not in self.market.specs:
                raise ValueError(f"deribit currency {c!r}: no simulated market for it")
        cfg = ctx.config
        self.cfg = cfg
        self.perps = {c: _Perp(c, ctx.seed, self.market.specs[c].spot_usd) for c in self.currencies}
        self.chains: dict[str, _Chain] = {}
        self.options: dict[str, _Option] = {}
        self._trade_id = int(rng_for(ctx.seed, EXCHANGE, "trade-ids").integers(200_000_000,
                                                                               400_000_000))
        self._option_rng = rng_for(ctx.seed, EXCHANGE, "option-trades")
        self._rr: list[str] = []
        self._rr_dirty = True
        self._rr_pos = 0
        self._next_instrument_id = 100_000

    # ---------------------------------------------------------------- chain
    def surface(self, currency: str) -> SurfaceParams:
        return SURFACES.get(currency, BTC_SURFACE)

    def _spot(self, currency: str) -> float:
        return self.market.index(currency) * (1.0 + self.faults.deviation)

    def _list(self, currency: str) -> None:
        now = self.ctx.now_ts
        spec = build_chain(currency, self._spot(currency), now, self.surface(currency),
                           self.cfg.option_carry_annual, self.cfg.strikes_per_expiry)
        old = self.chains.get(currency)
        chain = _Chain(currency, spec, self._next_instrument_id)
        if old is not None:  # keep ids of instruments still listed
            chain.ids.update({n: i for n, i in old.ids.items() if n in chain.index})
        self._next_instrument_id += len(spec.names)
        self.chains[currency] = chain
        self._rr_dirty = True
        self._requote(currency)

    def _requote(self, currency: str) -> None:
        chain = self.chains[currency]
        now = self.ctx.now_ts
        if chain.spec.expiries and chain.spec.expiries[0].ts <= now + 60.0:
            self._list(currency)  # an expiry passed (or is about to): list the new chain
            return
        chain.quotes = quote_chain(chain.spec, self._spot(currency), now, self.surface(currency),
                                   self.cfg.option_carry_annual)

    def option(self, name: str) -> tuple[_Chain, int, _Option] | None:
        currency = name.split("-", 1)[0]
        chain = self.chains.get(currency)
        if chain is None or name not in chain.index:
            return None
        i = chain.index[name]
        opt = self.options.get(name)
        if opt is None:
            q = chain.quotes
            z = float(np.log(chain.spec.strike[i] / q.forward[i])
                      / (q.mark_iv[i] * math.sqrt(q.T[i])))
            opt = self.options[name] = _Option(self.ctx.seed, name, z,
                                               1000.0 if currency == "BTC" else 5000.0)
            opt.book.bids, opt.book.asks = self._refresh_option_book(chain, i, opt)
        return chain, i, opt

    def instruments(self, currency: str | None, kind: str | None) -> list[dict[str, Any]]:
        """``public/get_instruments`` entries."""
        out = []
        for c in self.currencies:
            if currency not in (None, "", "any") and currency.upper() != c:
                continue
            if kind in (None, "", "future"):
                perp = self.perps[c]
                out.append({
                    "tick_size": perp.tick, "taker_commission": 0.0005,
                    "settlement_period": "perpetual", "settlement_currency": c,
                    "quote_currency": "USD", "price_index": f"{c.lower()}_usd",
                    "min_trade_amount": perp.contract, "max_liquidation_commission": 0.0075,
                    "max_leverage": 50, "maker_commission": 0.0, "kind": "future",
                    "is_active": True, "instrument_name": perp.name,
                    "instrument_id": 210_000 + self.currencies.index(c),
                    "future_type": "reversed", "instrument_type": "reversed",
                    "expiration_timestamp": FAR_FUTURE_MS, "creation_timestamp": 1534242287000,
                    "counter_currency": "USD", "contract_size": perp.contract,
                    "block_trade_tick_size": 0.01, "block_trade_min_trade_amount": 200000,
                    "block_trade_commission": 0.00025, "base_currency": c})
            if kind in (None, "", "option"):
                chain = self.chains[c]
                spec = chain.spec
                for i, name in enumerate(spec.names):
                    exp = spec.expiries[spec.expiry_index[i]]
                    out.append({
                        "tick_size": TICK_SMALL,
                        "tick_size_steps": [{"above_price": TICK_STEP_ABOVE,
                                             "tick_size": TICK_LARGE}],
                        "taker_commission": 0.0003, "strike": float(spec.strike[i]),
                        "settlement_period": exp.period, "settlement_currency": c,
                        "rfq": False, "quote_currency": c, "price_index": f"{c.lower()}_usd",
                        "option_type": "call" if spec.is_call[i] else "put",
                        "min_trade_amount": 0.1 if c == "BTC" else 1.0,
                        "maker_commission": 0.0003, "kind": "option", "is_active": True,
                        "instrument_name": name, "instrument_id": chain.ids[name],
                        "expiration_timestamp": _ms(exp.ts),
                        "creation_timestamp": _ms(spec.created_ts) - 86_400_000,
                        "counter_currency": "USD", "contract_size": 1.0,
                        "block_trade_tick_size": 0.0001, "block_trade_min_trade_amount": 25,
                        "block_trade_commission": 0.00015, "base_currency": c})
        return out

    # ---------------------------------------------------------------- timers
    def timers(self):
        cfg = self.cfg
        out = []
        for c in self.currencies:
            self._list(c)
            perp = self.perps[c]
            perp.quoter.requote(self._perp_mid(perp))
            perp.quoter.take_book_changes()
            perp.book.bids, perp.book.asks = self._perp_levels(perp)
            if cfg.perp_rate_hz > 0:
                out.append((1.0 / cfg.perp_rate_hz,
                            periodic(1.0 / cfg.perp_rate_hz, lambda due, p=perp: self._perp(p))))
            if cfg.trade_rate_hz > 0:
                out.append((perp.quoter.trade_gap_s(cfg.trade_rate_hz),
                            self._perp_trade_timer(perp)))
            if cfg.index_rate_hz > 0:
                out.append((1.0 / cfg.index_rate_hz,
                            periodic(1.0 / cfg.index_rate_hz, lambda due, c=c: self._index(c))))
            out.append((cfg.chain_refresh_s,
                        periodic(cfg.chain_refresh_s, lambda due, c=c: self._requote(c))))
        if cfg.option_rate_hz > 0:
            out.append((1.0 / cfg.option_rate_hz,
                        periodic(1.0 / cfg.option_rate_hz, self._option_round_robin)))
        if cfg.option_trade_rate_hz > 0:
            out.append((float(self._option_rng.exponential(1.0 / cfg.option_trade_rate_hz)),
                        self._option_trade_timer))
        out.append((0.25, periodic(0.25, self._heartbeats)))
        return out

    def _emit_all(self, channels: list[str], kind: str, data: Any, spec: MsgSpec | None, **kw):
        for ch in channels:
            self.emit(ch, kind, _note(ch, data), spec, **kw)

    def _variants(self, base: str) -> list[str]:
        return [f"{base}.{iv}" for iv in INTERVALS]

    def _index(self, currency: str) -> None:
        if self.stale:
            return
        name = f"{currency.lower()}_usd"
        ts, ooo = self.event_ts(f"deribit_price_index.{name}")
        data = {"timestamp": _ms(ts), "price": round(self._spot(currency), 2), "index_name": name}
        ch = f"deribit_price_index.{name}"
        self.emit(ch, INDEX, _note(ch, data), _INDEX_SPEC, out_of_order=ooo)

    # ---------------------------------------------------------------- perpetuals
    def _perp_mid(self, perp: _Perp) -> float:
        return self.market.perp_mark(perp.currency, self.name) * (1.0 + self.faults.deviation)

    def _perp_levels(self, perp: _Perp) -> tuple[dict[float, float], dict[float, float]]:
        bids, asks = perp.quoter.ladder.snapshot()
        return ({perp.price(k * perp.tick): a for k, a in bids},
                {perp.price(k * perp.tick): a for k, a in asks})

    def _perp_ticker(self, perp: _Perp, ts: float) -> dict[str, Any]:
        c = perp.currency
        q = perp.quoter
        index = round(self._spot(c), 2)
        mark = round(self._perp_mid(perp), 2)
        funding = self.market.funding_rate(c)
        perp.funding_8h = funding
        damped = math.copysign(max(0.0, abs(funding) - 0.00025), funding)
        last = perp.price(q.last_price)
        return {
            "timestamp": _ms(ts), "state": "open",
            "stats": {"high": perp.price(perp.high), "low": perp.price(perp.low),
                      "price_change": round(100.0 * (last / perp.open - 1.0), 4),
                      "volume": round(perp.volume, 8), "volume_usd": round(perp.volume * mark, 0),
                      "volume_notional": round(perp.volume * mark, 0)},
            "index_price": index, "instrument_name": perp.name, "last_price": last,
            "settlement_price": round(perp.open, 2),
            "min_price": perp.price(mark * 0.985), "max_price": perp.price(mark * 1.015),
            "open_interest": round(perp.open_interest, 0), "mark_price": mark,
            "interest_value": round(funding * 3 * 365 / 100, 12),
            "best_ask_price": perp.price(q.ask), "best_bid_price": perp.price(q.bid),
            "estimated_delivery_price": index, "best_ask_amount": q.ask_size,
            "best_bid_amount": q.bid_size, "current_funding": round(damped, 8),
            "funding_8h": round(funding, 8),
        }

    def _book_change(self, name: str, book: _Book, bids: dict, asks: dict, ts: float):
        """The ``change`` data for a book moving to ``bids``/``asks`` (None if nothing changed),
        and the number of change ids skipped (a ``skip_seq`` fault drawn at the previous change)."""
        new_bids, new_asks = book.diff(bids, asks)
        if not new_bids and not new_asks:
            return None, 0
        rng = self.faults.detail_rng
        prev = book.change_id
        skipped = 0
        if book.pending_skip:  # a change the client never gets
            prev += int(rng.integers(1, 30))
            skipped = 1
        book.pending_skip = self.skip()
        book.change_id = prev + int(rng.integers(1, 30))
        return ({"type": "change", "timestamp": _ms(ts), "prev_change_id": prev,
                 "instrument_name": name, "change_id": book.change_id,
                 "bids": new_bids, "asks": new_asks}, skipped)

    def _perp(self, perp: _Perp) -> None:
        perp.quoter.requote(self._perp_mid(perp))
        perp.quoter.take_book_changes()
        base_t, base_b = f"ticker.{perp.name}", f"book.{perp.name}"
        ts, ooo = self.event_ts(base_t)
        bids, asks = self._perp_levels(perp)
        change, skipped = self._book_change(perp.name, perp.book, bids, asks, ts)
        if self.stale:
            return
        self._emit_all(self._variants(base_t), TICKER, self._perp_ticker(perp, ts), _TICKER_SPEC,
                       out_of_order=ooo)
        if change is not None:
            self._emit_all(self._variants(base_b), BOOK, change, _BOOK_SPEC, skipped_seq=skipped)

    def _next_trade_id(self) -> str:
        self._trade_id += 1
        return str(self._trade_id)

    def _perp_trade_timer(self, perp: _Perp):
        def fire(due: float) -> float:
            before = perp.quoter.last_price
            price, amount, taker = perp.quoter.trade()
            perp.volume += amount / price
            perp.high, perp.low = max(perp.high, price), min(perp.low, price)
            skipped = 1 if self.skip() else 0
            perp.trade_seq += 1 + skipped
            ts, ooo = self.event_ts(f"trades.{perp.name}")
            trade = {
                "timestamp": _ms(ts), "price": perp.price(price), "amount": amount,
                "direction": taker, "index_price": round(self._spot(perp.currency), 2),
                "instrument_name": perp.name, "trade_seq": perp.trade_seq,
                "mark_price": round(self._perp_mid(perp), 2),
                "tick_direction": 0 if price > before else 2 if price < before else 1,
                "contracts": amount / perp.contract, "trade_id": self._next_trade_id()}
            if not self.stale:
                channels = (self._variants(f"trades.{perp.name}")
                            + self._variants(f"trades.future.{perp.currency}")
                            + self._variants(f"trades.any.{perp.currency}"))
                self._emit_all(channels, TRADES, [trade], _TRADES_SPEC, trade=True,
                               skipped_seq=skipped, out_of_order=ooo)
            return due + perp.quoter.trade_gap_s(self.cfg.trade_rate_hz)
        return fire

    # ---------------------------------------------------------------- options
    def _subscribed_options(self) -> list[str]:
        if self._rr_dirty:
            names = set()
            for topic in self.server.subscribers if self.server else ():
                kind, _, rest = topic.partition(".")
                if kind in ("ticker", "book"):
                    name = rest.rsplit(".", 1)[0]
                    if name in self.options or self.option(name) is not None:
                        names.add(name)
            # Chain order (expiry, strike, call first), so the round-robin is reproducible.
            order = {n: (c, i) for c, chain in self.chains.items() for n, i in chain.index.items()}
            self._rr = sorted(names, key=lambda n: order[n])
            self._rr_dirty = False
            self._rr_pos = 0 if not self._rr else self._rr_pos % len(self._rr)
        return self._rr

    def _refresh_option_book(self, chain: _Chain, i: int, opt: _Option) -> tuple[dict, dict]:
        q = chain.quotes
        bids: dict[float, float] = {}
        asks: dict[float, float] = {}
        bid, ask = float(q.bid_coin[i]), float(q.ask_coin[i])
        if bid >= MIN_PRICE:
            for level in range(3):
                price = round(bid - level * float(tick_for(bid)), 4)
                if price >= MIN_PRICE:
                    bids[price] = opt.book.bids.get(price) or opt.amount()
        for level in range(3):
            price = round(ask + level * float(tick_for(ask)), 4)
            asks[price] = opt.book.asks.get(price) or opt.amount()
        if bids:
            bids[max(bids)] = opt.amount()
        asks[min(asks)] = opt.amount()
        return bids, asks

    def _option_ticker(self, chain: _Chain, i: int, opt: _Option, ts: float) -> dict[str, Any]:
        q = chain.quotes
        c = chain.currency
        index = round(self._spot(c), 2)
        bid, ask = float(q.bid_coin[i]), float(q.ask_coin[i])
        best_bid = max(opt.book.bids) if opt.book.bids else 0.0
        best_ask = min(opt.book.asks) if opt.book.asks else 0.0
        return {
            "underlying_price": round(float(q.forward[i]), 2),
            "underlying_index": chain.underlying[i],
            "timestamp": _ms(ts),
            "stats": {"volume": round(opt.volume, 1), "price_change": None,
                      "low": None if math.isnan(opt.low) else opt.low,
                      "high": None if math.isnan(opt.high) else opt.high},
            "state": "open", "settlement_price": round(float(q.mark_coin[i]), 8),
            "open_interest": opt.open_interest, "min_price": MIN_PRICE,
            "max_price": round(float(q.mark_coin[i]) + 0.05, 4),
            "mark_price": round(float(q.mark_coin[i]), 6),
            "mark_iv": round(100.0 * float(q.mark_iv[i]), 2),
            "last_price": opt.last_price, "interest_rate": 0.0,
            "instrument_name": chain.spec.names[i], "index_price": index,
            "greeks": {"vega": round(float(q.vega[i]), 5), "theta": round(float(q.theta[i]), 5),
                       "rho": round(float(q.rho[i]), 5), "gamma": round(float(q.gamma[i]), 5),
                       "delta": round(float(q.delta[i]), 5)},
            "estimated_delivery_price": index,
            "bid_iv": round(100.0 * float(q.bid_iv[i]), 2) if bid > 0 else 0.0,
            "best_bid_price": best_bid,
            "best_bid_amount": opt.book.bids.get(best_bid, 0.0),
            "best_ask_price": best_ask,
            "best_ask_amount": opt.book.asks.get(best_ask, 0.0),
            "ask_iv": round(100.0 * float(q.ask_iv[i]), 2) if ask > 0 else 0.0,
        }

    def _option_round_robin(self, due: float) -> None:
        names = self._subscribed_options()
        if not names:
            return
        for _ in range(len(names)):
            name = names[self._rr_pos % len(names)]
            self._rr_pos = (self._rr_pos + 1) % len(names)
            found = self.option(name)
            if found is None:  # expired and de-listed
                self._rr_dirty = True
                return
            chain, i, opt = found
            if due - opt.last_ticker_s < self.cfg.option_min_interval_s - 1e-9:
                continue
            opt.last_ticker_s = due
            self._emit_option(chain, i, opt)
            return

    def _emit_option(self, chain: _Chain, i: int, opt: _Option) -> None:
        name = chain.spec.names[i]
        ts, ooo = self.event_ts(f"ticker.{name}")
        bids, asks = self._refresh_option_book(chain, i, opt)
        change, skipped = self._book_change(name, opt.book, bids, asks, ts)
        if self.stale:
            return
        self._emit_all(self._variants(f"ticker.{name}"), OPTION_TICKER,
                       self._option_ticker(chain, i, opt, ts), _TICKER_SPEC, out_of_order=ooo)
        if change is not None:
            self._emit_all(self._variants(f"book.{name}"), BOOK, change, _BOOK_SPEC,
                           skipped_seq=skipped)

    def _option_trade_timer(self, due: float) -> float:
        rng = self._option_rng
        currency = self.currencies[int(rng.integers(0, len(self.currencies)))]
        chain = self.chains[currency]
        i = int(rng.integers(0, len(chain.spec.names)))
        name = chain.spec.names[i]
        _, _, opt = self.option(name)
        q = chain.quotes
        taker = "buy" if rng.random() < 0.5 else "sell"
        price = float(q.ask_coin[i] if taker == "buy" or q.bid_coin[i] <= 0 else q.bid_coin[i])
        amount = round(max(0.1, float(rng.lognormal(0.5, 1.0))), 1)
        before = opt.last_price
        opt.last_price = price
        opt.volume += amount
        opt.low = price if math.isnan(opt.low) else min(opt.low, price)
        opt.high = price if math.isnan(opt.high) else max(opt.high, price)
        change = amount * (1.0 if rng.random() < 0.6 else -0.5)
        opt.open_interest = max(round(opt.open_interest + change, 1), 0.0)
        skipped = 1 if self.skip() else 0
        opt.trade_seq += 1 + skipped
        ts, ooo = self.event_ts(f"trades.{name}")
        trade = {
            "trade_seq": opt.trade_seq, "trade_id": self._next_trade_id(), "timestamp": _ms(ts),
            "tick_direction": 1 if before is None else 0 if price > before else 2 if price < before
            else 1,
            "price": price, "mark_price": round(float(q.mark_coin[i]), 6),
            "iv": round(100.0 * float(q.mark_iv[i]), 2), "instrument_name": name,
            "index_price": round(self._spot(currency), 2), "direction": taker, "amount": amount,
            "contracts": amount}
        if not self.stale:
            channels = (self._variants(f"trades.{name}")
                        + self._variants(f"trades.option.{currency}")
                        + self._variants(f"trades.any.{currency}"))
            self._emit_all(channels, TRADES, [trade], _TRADES_SPEC, trade=True,
                           skipped_seq=skipped, out_of_order=ooo)
        return due + float(rng.exponential(1.0 / self.cfg.option_trade_rate_hz))

    # ---------------------------------------------------------------- heartbeats
    def _heartbeats(self, due: float) -> None:
        for conn in list(self.server.conns):
            interval = conn.state.get("hb_interval")
            if not interval or due < conn.state["hb_next"]:
                continue
            if conn.state.get("hb_waiting"):
                # Deribit closes a connection that did not answer the last test_request.
                conn.state["hb_interval"] = None
                asyncio.ensure_future(conn.ws.close(1000, "heartbeat test_request not answered"))
                continue
            conn.state["hb_waiting"] = True
            conn.state["hb_next"] = due + interval
            self.send(conn, HEARTBEAT, {"jsonrpc": "2.0", "method": "heartbeat",
                                        "params": {"type": "test_request"}})

    # ---------------------------------------------------------------- requests
    def _answer(self, request_id: Any, us_in: int, result: Any = None,
                error: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0"}
        if request_id is not None:
            body["id"] = request_id
        if error is None:
            body["result"] = result
        else:
            body["error"] = error
        us_out = int(self.ctx.clock.now() * 1e6)
        body.update({"usIn": us_in, "usOut": us_out, "usDiff": max(0, us_out - us_in),
                     "testnet": False})
        return body

    def _call(self, method: str, params: dict[str, Any], conn: Conn | None):
        """``(result, error)`` for one method; ``conn`` None for HTTP (no subscriptions)."""
        if method == "public/test":
            if conn is not None:
                conn.state["hb_waiting"] = False
            return {"version": VERSION}, None
        if method == "public/hello":
            return {"version": VERSION}, None
        if method == "public/get_time":
            return int(self.ctx.clock.now() * 1000), None
        if method == "public/get_instruments":
            currency = params.get("currency")
            kind = params.get("kind")
            expired = str(params.get("expired", "false")).lower() == "true"
            if currency not in (None, "any") and str(currency).upper() not in self.currencies:
                return None, {"code": -32602, "message": "Invalid params",
                              "data": {"reason": "wrong format", "param": "currency"}}
            if kind not in (None, "future", "option", "spot", "future_combo", "option_combo"):
                return None, {"code": -32602, "message": "Invalid params",
                              "data": {"reason": "wrong format", "param": "kind"}}
            return ([] if expired else self.instruments(currency, kind)), None
        if method == "public/get_index_price":
            name = str(params.get("index_name", ""))
            cur = name.split("_")[0].upper()
            if cur not in self.currencies:
                return None, {"code": -32602, "message": "Invalid params",
                              "data": {"reason": "wrong format", "param": "index_name"}}
            price = round(self._spot(cur), 2)
            return {"index_price": price, "estimated_delivery_price": price}, None
        if conn is None:
            return None, {"code": -32601, "message": "Method not found"}
        if method == "public/set_heartbeat":
            interval = params.get("interval")
            minimum = self.cfg.deribit_min_heartbeat_s
            if not isinstance(interval, (int, float)) or isinstance(interval, bool) \
                    or interval < minimum:
                return None, {"code": -32602, "message": "Invalid params",
                              "data": {"reason": f"must be a number >= {minimum:g}",
                                       "param": "interval"}}
            conn.state.update(hb_interval=float(interval), hb_next=self.ctx.sim_s + interval,
                              hb_waiting=False)
            return "ok", None
        if method == "public/disable_heartbeat":
            conn.state["hb_interval"] = None
            return "ok", None
        if method in ("public/subscribe", "public/unsubscribe"):
            channels = params.get("channels")
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                return None, {"code": -32602, "message": "Invalid params",
                              "data": {"reason": "must be a list of strings", "param": "channels"}}
            if method == "public/unsubscribe":
                gone = [c for c in channels if c in conn.topics]
                for c in gone:
                    self.server.unsubscribe(conn, c)
                self._rr_dirty = True
                return gone, None
            if any(c.endswith(".raw") for c in channels):
                return None, {"code": 13778,
                              "message": "raw_subscriptions_not_available_for_unauthorized"}
            accepted = [c for c in dict.fromkeys(channels) if self._valid_channel(c)]
            fresh = [c for c in accepted if c not in conn.topics]
            for c in accepted:
                self.server.subscribe(conn, c)
            self._rr_dirty = True
            conn.state.setdefault("fresh", []).extend(fresh)
            return accepted, None
        if method == "public/unsubscribe_all":
            for c in list(conn.topics):
                self.server.unsubscribe(conn, c)
            self._rr_dirty = True
            return "ok", None
        return None, {"code": -32601, "message": "Method not found"}

    def _valid_channel(self, channel: str) -> bool:
        parts = channel.split(".")
        if len(parts) == 2 and parts[0] == "deribit_price_index":
            return parts[1] in {f"{c.lower()}_usd" for c in self.currencies}
        if parts[-1] not in INTERVALS:
            return False
        if len(parts) == 3 and parts[0] in ("ticker", "book", "trades"):
            name = parts[1]
            if name in {p.name for p in self.perps.values()}:
                return True
            return self.option(name) is not None
        if len(parts) == 4 and parts[0] == "trades":
            return parts[1] in ("option", "future", "any") and parts[2] in self.currencies
        return False

    def _book_snapshot(self, conn: Conn, channel: str) -> None:
        name = channel.split(".")[1]
        perp = next((p for p in self.perps.values() if p.name == name), None)
        if perp is not None:
            book = perp.book
        else:
            found = self.option(name)
            if found is None:
                return
            book = found[2].book
        bids, asks = book.snapshot()
        self.send(conn, BOOK, _note(channel, {
            "type": "snapshot", "timestamp": _ms(self.ctx.now_ts), "instrument_name": name,
            "change_id": book.change_id, "bids": bids, "asks": asks}))

    def on_text(self, conn: Conn, text: str | bytes) -> None:
        us_in = int(self.ctx.clock.now() * 1e6)
        request = parse_json(text)
        if not isinstance(request, dict):
            self.reply(conn, self._answer(None, us_in, error={"code": -32700,
                                                                "message": "Parse error"}),
                       verdict=ERROR)
            return
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params") or {}
        if not isinstance(method, str) or not isinstance(params, dict):
            self.reply(conn, self._answer(request_id, us_in, error={
                "code": -32600, "message": "Invalid Request"}), verdict=ERROR)
            return
        result, error = self._call(method, params, conn)
        self.reply(conn, self._answer(request_id, us_in, result, error),
                   verdict=ERROR if error else "ok")
        for channel in conn.state.pop("fresh", []):
            if channel.startswith("book."):
                self._book_snapshot(conn, channel)

    def http(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes] | None:
        prefix = "/api/v2/"
        if not path.startswith(prefix):
            return None
        method = path[len(prefix):]
        params = {k: first_value(query, k) for k in query}
        us_in = int(self.ctx.clock.now() * 1e6)
        result, error = self._call(method, params, None)
        status = 200 if error is None else 400
        return status, orjson.dumps(self._answer(None, us_in, result, error))

