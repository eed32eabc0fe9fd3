"""Deribit JSON-RPC websocket notifications → normalized batches; the connection protocol; and
the subscription manager that spreads option channels over connections.

Wire format (JSON-RPC 2.0 over one websocket, ``wss://www.deribit.com/ws/api/v2``):

- Notifications are ``{"jsonrpc": "2.0", "method": "subscription", "params": {"channel": ...,
  "data": ...}}`` (docs.deribit.com/articles/notifications). Answers to our requests carry the
  request's ``id`` and a ``result`` or an ``error``; they are control messages, as are
  ``{"method": "heartbeat", "params": {"type": "heartbeat" | "test_request"}}``.
- ``ticker.<instrument>.<interval>`` (docs.deribit.com/subscriptions/upcoming/market-data/
  tickerinstrument_nameinterval). ``interval`` is ``100ms`` or ``agg2`` for anyone; ``raw`` needs an
  authenticated connection (the 2021 recording used ``.raw``; both are read). Option tickers carry
  ``best_bid_price``/``best_ask_price``/``mark_price`` in coin (inverse options), amounts in
  contracts of one coin, ``mark_iv``/``bid_iv``/``ask_iv`` in PERCENT, ``underlying_price`` (the
  forward the IV is quoted on), ``index_price``, ``open_interest`` and ``greeks`` → one
  ``option_tickers`` row, IVs divided by 100. Perpetual tickers add ``current_funding`` and
  ``funding_8h``; futures add ``interest_value``.
- ``book.<instrument>.<interval>`` (docs.deribit.com/subscriptions/orderbook/
  bookinstrument_nameinterval): ``{"type": "snapshot" | "change", "change_id", "prev_change_id"
  (changes only), "bids"/"asks": [[action, price, amount]], "timestamp"}``, ``action`` one of
  ``new``/``change``/``delete``. A change is in order when its ``prev_change_id`` is the last
  ``change_id`` seen. Grouped books ``book.<instrument>.<group>.<depth>.<interval>`` send the top
  ``depth`` levels in full each time as ``[price, amount]`` pairs; their rows are snapshots.
- ``trades.<instrument>.<interval>`` and ``trades.<kind>.<currency>.<interval>``: ``data`` is a
  LIST of trades (``trade_id``, ``trade_seq`` consecutive per instrument, ``price``, ``amount``,
  ``direction`` = the taker's side, ``timestamp``, ``instrument_name``, ``index_price``, ``iv``).
- ``deribit_price_index.<index_name>``: ``{"index_name": "btc_usd", "price", "timestamp"}``.

Units and conventions (DESIGN.md pitfalls; docs/adapters.md):

- Times are milliseconds on the wire → epoch seconds. Option expiry is the name's date at 08:00 UTC.
- Sizes: "For perpetuals and futures, ``amount`` is in USD units. For options, ``amount`` is in
  the corresponding cryptocurrency contracts" (book channel page; the same for trades and ticker
  amounts, per the ``min_trade_amount`` field description). hedgeflow stores sizes in coin, so
  for inverse (coin-settled) perpetuals and futures ``size_coin = amount_usd / price``; option
  and linear (``BTC_USDC-...``) amounts are already coin.
- No bid / no ask: Deribit sends price 0 with amount 0 (and ``bid_iv``/``ask_iv`` 0). That side is
  stored as NaN (price, size and IV), never as a 0 price. An IV of exactly 0 is likewise "no IV":
  NaN (the same meaning as ``models.pricing.implied_vol``'s NaN).
- Funding (support.deribit.com "Funding Specifications"): Deribit funds continuously, every
  millisecond, and expresses its funding rate as an 8-hour rate. ``current_funding`` is the rate
  accruing now (per 8 h, after the ±0.025% damper, so often exactly 0); ``funding_8h`` is the
  funding accrued over the trailing 8 hours (the figure Deribit shows as "Funding 8h", the
  ``interest_8h`` of its funding history). ``funding_rate`` is ``funding_8h`` (a per-8h fraction,
  comparable with other venues' 8-hourly settled rates), ``current_funding`` only when
  ``funding_8h`` is absent; ``next_funding_ts`` is NaN (no discrete funding times).
- ``asset`` comes from the instrument name (``BTC-PERPETUAL`` → BTC, ``ETH_USDC-PERPETUAL`` → ETH);
  ``quote_ccy`` is "USD" (inverse instruments and options, per the adapter contract) or the
  settlement currency of linear ones ("USDC"). Option trade prices stay in coin, as received.
- Linear (USDC-settled) option tickers are ignored: their premiums are in USDC, not coin, and
  ``option_tickers`` holds coin premiums. Channels hedgeflow does not use (DVOL, mark-price
  streams, platform state, ...) are ignored; an unknown channel is quarantined.

Sequencing: book changes are chained per channel with ``SequenceTracker.check_chain``. A snapshot
resets the chain. A change whose ``prev_change_id`` is not the last ``change_id`` (or a change
before any snapshot) is a "book" gap: the rows are kept, a gap row is written, and the adapter
asks the channel's ``DeribitProtocol`` to re-subscribe (``public/unsubscribe`` then
``public/subscribe``) so a fresh snapshot arrives. A change at or before the last id is stale and
quarantined. Trades are checked per instrument on ``trade_seq`` ("sequence" gaps); a repeat is
quarantined as stale.

Connection (docs.deribit.com/api-reference/session-management/public-set_heartbeat and
.../supporting/public-test): after connecting, ``public/set_heartbeat`` (interval ≥ 10 s) and
``public/subscribe`` requests; the server then sends ``test_request`` heartbeats, which must be
answered with a ``public/test`` request or the server closes the connection.

Subscriptions (plan 003, Appendix A): at most 500 channels per connection, at most 10
connections per IP. ``SubscriptionManager`` turns ``public/get_instruments`` results into the
channels wanted and assigns them to connections; ``diff`` keeps channels where they are and
yields what to subscribe and unsubscribe on each connection as options list and expire.
``public/get_instruments`` is rate-limited to about 1 request/second sustained.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from dataflows.adapters.base import (
    json_object,
    BatchBuilder,
    FeedProtocol,
    Malformed,
    field,
    integer,
    num,
    opt_num,
    text,
)
from dataflows.config import HedgeflowError
from models.deribit import expiry_ts, parse_option_name
from models.records import NormalizedBatch, RawBatch
from models.sequence import SequenceTracker

EXCHANGE = "deribit"
DEFAULT_WS_URL = "wss://www.deribit.com/ws/api/v2"
DEFAULT_HTTP_URL = "https://www.deribit.com"
PUBLIC_INTERVAL = "100ms"  # ".raw" needs an authenticated connection
MAX_CHANNELS_PER_CONNECTION = 500  # plan 003, Appendix A
MAX_CONNECTIONS = 10  # per IP address, plan 003, Appendix A
MAX_CHANNELS_PER_REQUEST = 100
MIN_HEARTBEAT_INTERVAL_S = 10

_CURRENCY = re.compile(r"^[A-Z0-9]{2,10}$")
_GREEKS = ("delta", "gamma", "vega", "theta", "rho")
_IGNORED_CHANNELS = frozenset({
    "announcements", "platform_state", "deribit_price_ranking", "deribit_price_statistics",
    "deribit_volatility_index", "estimated_expiration_price", "markprice", "perpetual", "quote",
    "incremental_ticker", "chart", "instrument", "block_rfq", "block_trade_confirmations",
    "user", "rfq",
})


class DeribitError(HedgeflowError):
    """Deribit could not be asked or answered something we cannot use (instrument list)."""


# --------------------------------------------------------------------------- instruments


@dataclass(frozen=True, slots=True)
class DeribitInstrument:
    """What an instrument name says. ``kind``: "option", "future" or "perpetual". ``linear``:
    settled in a stablecoin (``BTC_USDC-PERPETUAL``), amounts in coin; otherwise inverse (settled
    in the coin, futures amounts in USD). ``expiry_utc`` and ``strike_usd`` are NaN where they do
    not apply; ``is_call`` is None for non-options."""

    name: str
    asset: str
    kind: str
    linear: bool
    quote_ccy: str
    expiry_utc: float
    strike_usd: float
    is_call: bool | None

    @property
    def amounts_in_usd(self) -> bool:
        """True where Deribit gives amounts in USD (inverse perpetuals and futures)."""
        return self.kind != "option" and not self.linear


def expiry_from_code(code: str) -> float:
    """``24SEP21`` → epoch seconds of 2021-09-24 08:00 UTC (Deribit's expiry time)."""
    try:
        return expiry_ts(code)
    except ValueError as exc:
        raise Malformed(f"instrument: expiry {code!r}: {exc}") from None


def parse_instrument(name: str) -> DeribitInstrument:
    """Parse ``BTC-24SEP21-40000-C``, ``BTC-24SEP21``, ``BTC-PERPETUAL``, ``ETH_USDC-PERPETUAL``,
    ``XRP_USDC-30JUN25-0d625-C`` (``d`` is a decimal point in strikes). Malformed otherwise."""
    if not isinstance(name, str):
        raise Malformed(f"instrument: name is not a string: {name!r}")
    return _parse_instrument(name)


@lru_cache(maxsize=8192)
def _parse_instrument(name: str) -> DeribitInstrument:
    parts = name.split("-")
    head = parts[0]
    base, sep, settle = head.partition("_")
    if not _CURRENCY.match(base) or (sep and not _CURRENCY.match(settle)):
        raise Malformed(f"instrument: unrecognized instrument name {name!r}")
    linear = bool(sep)
    quote_ccy = settle if linear else "USD"
    nan = math.nan
    if len(parts) == 2 and parts[1] == "PERPETUAL":
        return DeribitInstrument(name, base, "perpetual", linear, quote_ccy, nan, nan, None)
    if len(parts) == 2:
        return DeribitInstrument(name, base, "future", linear, quote_ccy,
                                 expiry_from_code(parts[1]), nan, None)
    if len(parts) == 4:
        try:
            option = parse_option_name(name)
        except ValueError as exc:
            raise Malformed(f"instrument: {exc}") from None
        return DeribitInstrument(name, base, "option", linear, quote_ccy, option.expiry_ts,
                                 option.strike_usd, option.is_call)
    raise Malformed(f"instrument: unrecognized instrument name {name!r}")


# --------------------------------------------------------------------------- JSON-RPC requests


def rpc_request(method: str, params: Mapping[str, Any] | None, request_id: int) -> str:
    """One JSON-RPC 2.0 request as text."""
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": method, "params": dict(params or {})}
    ).decode()


def get_instruments_request(currency: str, kind: str = "option", request_id: int = 1,
                            expired: bool = False) -> str:
    """The ``public/get_instruments`` request to send over the websocket."""
    return rpc_request("public/get_instruments",
                       {"currency": currency, "kind": kind, "expired": expired}, request_id)


# --------------------------------------------------------------------------- connection protocol


class DeribitProtocol(FeedProtocol):
    """How one Deribit connection talks.

    ``on_open`` sends ``public/set_heartbeat`` then ``public/subscribe`` for the connection's
    channels, at most ``max_channels_per_request`` per request; request ids increase over the
    protocol's life. ``on_message`` answers a ``test_request`` heartbeat with ``public/test``.
    ``subscribe``/``unsubscribe`` change the channel set while running (queued requests, and a
    reconnect subscribes the current set); ``resubscribe`` queues unsubscribe + subscribe of one
    channel (the adapter calls it after a book gap).
    """

    exchange = EXCHANGE

    def __init__(self, url: str = DEFAULT_WS_URL, channels: Iterable[str] = (),
                 heartbeat_interval_s: int = 30,
                 max_channels_per_request: int = MAX_CHANNELS_PER_REQUEST) -> None:
        super().__init__(url)
        if heartbeat_interval_s < MIN_HEARTBEAT_INTERVAL_S:
            raise ValueError(
                f"Deribit heartbeat interval must be at least {MIN_HEARTBEAT_INTERVAL_S} s, "
                f"got {heartbeat_interval_s}")
        if max_channels_per_request < 1:
            raise ValueError("max_channels_per_request must be at least 1")
        self.heartbeat_interval_s = heartbeat_interval_s
        self.max_channels_per_request = max_channels_per_request
        self._channels: dict[str, None] = dict.fromkeys(channels)
        self._next_id = 1

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._channels)

    def owns(self, channel: str) -> bool:
        return channel in self._channels

    def next_id(self) -> int:
        request_id, self._next_id = self._next_id, self._next_id + 1
        return request_id

    def request(self, method: str, params: Mapping[str, Any] | None = None) -> str:
        return rpc_request(method, params, self.next_id())

    def _channel_requests(self, method: str, channels: Sequence[str]) -> list[str]:
        n = self.max_channels_per_request
        return [self.request(method, {"channels": list(channels[i:i + n])})
                for i in range(0, len(channels), n)]

    def on_open(self) -> list[str]:
        out = [self.request("public/set_heartbeat", {"interval": self.heartbeat_interval_s})]
        return out + self._channel_requests("public/subscribe", self.channels)

    def on_message(self, raw: str) -> list[str]:
        if "test_request" not in raw:  # cheap: nearly every message stops here
            return []
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(msg, dict):
            return []
        params = msg.get("params")
        if (msg.get("method") == "heartbeat" and isinstance(params, dict)
                and params.get("type") == "test_request"):
            return [self.request("public/test", {})]
        return []

    def subscribe(self, channels: Iterable[str]) -> None:
        new = [c for c in dict.fromkeys(channels) if c not in self._channels]
        self._channels.update(dict.fromkeys(new))
        for req in self._channel_requests("public/subscribe", new):
            self.queue(req)

    def unsubscribe(self, channels: Iterable[str]) -> None:
        gone = [c for c in dict.fromkeys(channels) if c in self._channels]
        for c in gone:
            del self._channels[c]
        for req in self._channel_requests("public/unsubscribe", gone):
            self.queue(req)

    def resubscribe(self, channel: str) -> None:
        """Ask again for ``channel`` (a book after a gap: the new subscription starts with a
        snapshot)."""
        self._channels.setdefault(channel, None)
        self.queue(self.request("public/unsubscribe", {"channels": [channel]}))
        self.queue(self.request("public/subscribe", {"channels": [channel]}))


# --------------------------------------------------------------------------- adapter


def _ms(data: dict, key: str, kind: str) -> float:
    return num(data, key, kind) / 1e3


def _id(data: dict, key: str, kind: str) -> int:
    """A sequence number / change id that fits the int64 ``sequence`` column."""
    value = integer(data, key, kind)
    if not -(2**63) <= value < 2**63:
        raise Malformed(f"{kind}: field '{key}' is out of the 64-bit range: {value}")
    return value


def _dict(value: Any, kind: str) -> dict:
    if not isinstance(value, dict):
        raise Malformed(f"{kind}: data is not an object: {type(value).__name__}")
    return value


def _iv(data: dict, key: str, kind: str) -> float:
    """Percent → fraction; 0 (Deribit's "none") → NaN."""
    v = opt_num(data, key, kind)
    return math.nan if v == 0.0 else v / 100.0


def _book_side(data: dict, price_key: str, amount_key: str, kind: str) -> tuple[float, float]:
    """(price, amount) of a ticker's best bid or ask; Deribit's 0/0 for an empty side → NaN."""
    price, amount = opt_num(data, price_key, kind), opt_num(data, amount_key, kind)
    if math.isnan(price) or (price == 0.0 and (amount == 0.0 or math.isnan(amount))):
        return math.nan, math.nan
    return price, amount


def _coin(inst: DeribitInstrument, amount: float, price: float) -> float:
    """An amount as coin: inverse perpetuals and futures count USD."""
    if inst.amounts_in_usd:
        return amount / price if price else math.nan
    return amount


def _level(entry: Any, kind: str) -> tuple[float, float]:
    """(price, amount) of ``[action, price, amount]`` (``delete`` → 0) or ``[price, amount]``."""
    if isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str):
        action, values = entry[0], entry[1:]
        if action not in ("new", "change", "delete"):
            raise Malformed(f"{kind}: unknown book action {action!r}")
    elif isinstance(entry, (list, tuple)) and len(entry) == 2:
        action, values = "", entry
    else:
        raise Malformed(f"{kind}: a book level is not [action, price, amount] or [price, amount]: "
                        f"{entry!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise Malformed(f"{kind}: a book level is not numeric: {entry!r}")
        try:
            out.append(float(v))
        except (ValueError, OverflowError):
            raise Malformed(f"{kind}: a book level is not numeric: {entry!r}") from None
    price, amount = out
    return price, (0.0 if action == "delete" else amount)


def _named(data: dict, channel_instrument: str, kind: str) -> str:
    """The instrument a data object is about; it must agree with its channel's."""
    name = data.get("instrument_name", channel_instrument)
    if name != channel_instrument:
        raise Malformed(f"{kind}: instrument_name {name!r} differs from channel's "
                        f"{channel_instrument!r}")
    return channel_instrument


class DeribitAdapter:
    """Deribit notifications → rows. ``protocols``: the connections' ``DeribitProtocol``s (one,
    several, or none; ``attach`` adds more later); a book gap re-subscribes the channel on the
    protocol that owns it (or the first one)."""

    exchange = EXCHANGE

    def __init__(self, protocol: DeribitProtocol | Sequence[DeribitProtocol] | None = None) -> None:
        self.protocols: list[DeribitProtocol] = []
        if isinstance(protocol, DeribitProtocol):
            self.protocols.append(protocol)
        elif protocol is not None:
            self.protocols.extend(protocol)
        self.book_ids = SequenceTracker()  # key: book channel
        self.trade_seqs = SequenceTracker()  # key: instrument
        self._book_ts: dict[str, float] = {}
        self._trade_ts: dict[str, float] = {}
        self._resubscribing: set[str] = set()
        self.resubscribes = 0

    def attach(self, *protocols: DeribitProtocol) -> None:
        self.protocols.extend(protocols)

    def normalize(self, batch: RawBatch) -> NormalizedBatch:
        b = BatchBuilder(batch.exchange or EXCHANGE)
        for receive_ts, raw in zip(batch.receive_ts.tolist(), batch.messages):
            with b.message(receive_ts, raw):
                self._message(b, raw)
        return b.build()

    def _message(self, b: BatchBuilder, raw: str) -> None:
        msg = json_object(raw)
        method = msg.get("method")
        if method == "subscription":
            params = msg.get("params")
            if not isinstance(params, dict):
                raise Malformed("subscription: params is not an object")
            channel = params.get("channel")
            if not isinstance(channel, str) or not channel:
                raise Malformed("subscription: missing channel")
            if "data" not in params:
                raise Malformed(f"subscription {channel}: missing data")
            self._notification(b, channel, params["data"])
        elif method == "heartbeat":
            b.control()
        elif "id" in msg and ("result" in msg or "error" in msg):
            b.control()
        else:
            raise Malformed("unrecognized message: not a notification, heartbeat or response")

    def _notification(self, b: BatchBuilder, channel: str, data: Any) -> None:
        parts = channel.split(".")
        head = parts[0]
        if head == "ticker" and len(parts) == 3:
            self._ticker(b, parts[1], data)
        elif head == "book" and len(parts) in (3, 5):
            self._book(b, channel, parts[1], data, grouped=len(parts) == 5)
        elif head == "trades" and len(parts) in (3, 4):
            self._trades(b, channel, data)
        elif head == "deribit_price_index" and len(parts) == 2:
            self._index(b, data)
        elif head in _IGNORED_CHANNELS:
            b.ignored()
        else:
            raise Malformed(f"unknown channel {channel!r}")

    # ------------------------------------------------------------------- ticker
    def _ticker(self, b: BatchBuilder, channel_instrument: str, data: Any) -> None:
        kind = "ticker"
        data = _dict(data, kind)
        inst = parse_instrument(_named(data, channel_instrument, kind))
        ts = _ms(data, "timestamp", kind)
        bid, bid_amount = _book_side(data, "best_bid_price", "best_bid_amount", kind)
        ask, ask_amount = _book_side(data, "best_ask_price", "best_ask_amount", kind)
        if inst.kind == "option":
            if inst.linear:
                b.ignored()  # premiums in USDC, not coin
                return
            greeks = data.get("greeks", {})
            if greeks is None:
                greeks = {}
            greeks = _dict(greeks, "ticker greeks")
            bid_iv, ask_iv = _iv(data, "bid_iv", kind), _iv(data, "ask_iv", kind)
            b.add(
                "option_tickers", instrument=inst.name, asset=inst.asset, event_ts=ts,
                expiry_utc=inst.expiry_utc, strike_usd=inst.strike_usd, is_call=inst.is_call,
                bid_coin=bid, bid_size=bid_amount, ask_coin=ask, ask_size=ask_amount,
                mark_coin=num(data, "mark_price", kind), mark_iv=_iv(data, "mark_iv", kind),
                bid_iv=math.nan if math.isnan(bid) else bid_iv,
                ask_iv=math.nan if math.isnan(ask) else ask_iv,
                underlying_usd=opt_num(data, "underlying_price", kind),
                index_usd=opt_num(data, "index_price", kind),
                open_interest=opt_num(data, "open_interest", kind),
                **{g: opt_num(greeks, g, "ticker greeks") for g in _GREEKS},
            )
            return
        funding = math.nan
        if inst.kind == "perpetual":
            funding = opt_num(data, "funding_8h", kind)
            if math.isnan(funding):
                funding = opt_num(data, "current_funding", kind)
        if not math.isnan(funding):
            mark, index = num(data, "mark_price", kind), opt_num(data, "index_price", kind)
        b.add(
            "quotes", instrument=inst.name, asset=inst.asset, quote_ccy=inst.quote_ccy,
            event_ts=ts, bid=bid, bid_size_coin=_coin(inst, bid_amount, bid),
            ask=ask, ask_size_coin=_coin(inst, ask_amount, ask),
        )
        if not math.isnan(funding):
            b.add(
                "funding", instrument=inst.name, asset=inst.asset, event_ts=ts, mark_usd=mark,
                index_usd=index, funding_rate=funding, next_funding_ts=math.nan,
            )

    # ------------------------------------------------------------------- book
    def _book(self, b: BatchBuilder, channel: str, channel_instrument: str, data: Any,
              grouped: bool) -> None:
        kind = "book"
        data = _dict(data, kind)
        inst = parse_instrument(_named(data, channel_instrument, kind))
        ts = _ms(data, "timestamp", kind)
        change_id = _id(data, "change_id", kind)
        rows = []
        for side, key in (("bid", "bids"), ("ask", "asks")):
            entries = field(data, key, kind)
            if not isinstance(entries, list):
                raise Malformed(f"{kind}: field '{key}' is not a list of levels")
            rows.extend((side, *_level(e, kind)) for e in entries)
        book_type = data.get("type", "snapshot" if grouped else None)
        if book_type not in ("snapshot", "change"):
            raise Malformed(f"{kind}: type is not snapshot or change: {book_type!r}")
        is_snapshot = grouped or book_type == "snapshot"
        if not grouped:
            if is_snapshot:
                self.book_ids.reset(channel)
                self.book_ids.check_chain(channel, -1, change_id)
                self._resubscribing.discard(channel)
            else:
                prev = _id(data, "prev_change_id", kind)
                check = self.book_ids.check_chain(channel, prev, change_id)
                if check.status == "stale":
                    raise Malformed(f"{kind}: stale change_id {change_id} (last {check.expected})")
                if check.status in ("gap", "first"):
                    detail = (f"{channel}: change before any snapshot (prev_change_id {prev})"
                              if check.status == "first" else
                              f"{channel}: prev_change_id {prev} is not the last change_id "
                              f"{check.expected}")
                    b.gap(inst.name, "book", self._book_ts.get(channel, ts), ts, -1, detail)
                    self._request_snapshot(channel)
            self._book_ts[channel] = ts
        for side, price, amount in rows:
            b.add(
                "book_updates", instrument=inst.name, asset=inst.asset, event_ts=ts, side=side,
                price=price, size_coin=_coin(inst, amount, price), is_snapshot=is_snapshot,
                sequence=change_id,
            )

    def _request_snapshot(self, channel: str) -> None:
        if channel in self._resubscribing or not self.protocols:
            return
        owner = next((p for p in self.protocols if p.owns(channel)), self.protocols[0])
        owner.resubscribe(channel)
        self._resubscribing.add(channel)
        self.resubscribes += 1

    # ------------------------------------------------------------------- trades
    def _trades(self, b: BatchBuilder, channel: str, data: Any) -> None:
        kind = "trades"
        if not isinstance(data, list):
            raise Malformed(f"{kind}: data is not a list of trades")
        parts = channel.split(".")
        parsed = []
        for t in data:
            t = _dict(t, kind)
            name = text(t, "instrument_name", kind)
            if len(parts) == 3 and name != parts[1]:
                raise Malformed(f"{kind}: instrument_name {name!r} differs from channel's {parts[1]!r}")
            inst = parse_instrument(name)
            trade_id = field(t, "trade_id", kind)
            if isinstance(trade_id, bool) or not isinstance(trade_id, (str, int)) or trade_id == "":
                raise Malformed(f"{kind}: field 'trade_id' is not an id: {trade_id!r}")
            side = field(t, "direction", kind)
            if side not in ("buy", "sell"):
                raise Malformed(f"{kind}: field 'direction' is not buy or sell: {side!r}")
            price = num(t, "price", kind)
            parsed.append((inst, str(trade_id), _id(t, "trade_seq", kind), _ms(t, "timestamp", kind),
                           price, _coin(inst, num(t, "amount", kind), price), side))
        # refuse a stale message before any tracker state changes (the message is atomic)
        last: dict[str, int | None] = {}
        for inst, _, seq, *_ in parsed:
            prev = last.get(inst.name, self.trade_seqs.last(inst.name))
            if prev is not None and seq <= prev:
                raise Malformed(f"{kind}: stale trade_seq {seq} for {inst.name} (last {prev})")
            last[inst.name] = seq
        for inst, trade_id, seq, ts, price, size, side in parsed:
            check = self.trade_seqs.check(inst.name, seq)
            if check.status == "gap":
                b.gap(inst.name, "sequence", self._trade_ts.get(inst.name, ts), ts, check.missing,
                      f"{channel}: trade_seq {check.expected}..{seq - 1} missing")
            self._trade_ts[inst.name] = ts
            b.add(
                "trades", instrument=inst.name, asset=inst.asset, quote_ccy=inst.quote_ccy,
                event_ts=ts, trade_id=trade_id, price=price, size_coin=size, side=side,
            )

    # ------------------------------------------------------------------- index
    @staticmethod
    def _index(b: BatchBuilder, data: Any) -> None:
        kind = "deribit_price_index"
        data = _dict(data, kind)
        name = text(data, "index_name", kind)
        asset, _, quote = name.upper().partition("_")
        if quote not in ("USD", "USDC") or not asset:
            b.ignored()  # not priced in USD
            return
        b.add("index_prices", index_name=name, asset=asset, event_ts=_ms(data, "timestamp", kind),
              price_usd=num(data, "price", kind))


# --------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    """One entry of ``public/get_instruments``. ``expiration_ts`` in epoch seconds."""

    name: str
    kind: str
    base_currency: str
    expiration_ts: float
    strike: float
    option_type: str
    is_active: bool

    @classmethod
    def from_result(cls, entry: Any) -> InstrumentInfo:
        if isinstance(entry, InstrumentInfo):
            return entry
        if not isinstance(entry, Mapping):
            raise DeribitError(f"Deribit instrument entry is not an object: {entry!r}")
        try:
            name = entry["instrument_name"]
            kind = entry["kind"]
            expiration = entry["expiration_timestamp"]
            if not isinstance(name, str) or not isinstance(kind, str):
                raise TypeError("instrument_name and kind must be strings")
            return cls(
                name=name, kind=kind,
                base_currency=str(entry.get("base_currency") or name.split("-")[0].split("_")[0]),
                expiration_ts=float(expiration) / 1e3,
                strike=float(entry["strike"]) if entry.get("strike") is not None else math.nan,
                option_type=str(entry.get("option_type") or ""),
                is_active=bool(entry.get("is_active", True)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeribitError(f"Deribit instrument entry not understood ({exc!r}): {entry!r}") from None


def instruments_from_result(result: Any) -> list[InstrumentInfo]:
    """``public/get_instruments``'s ``result`` list → ``InstrumentInfo``s."""
    if not isinstance(result, list):
        raise DeribitError(f"Deribit get_instruments result is not a list: {str(result)[:200]}")
    return [InstrumentInfo.from_result(e) for e in result]


def instruments_from_response(raw: str | bytes | Mapping) -> list[InstrumentInfo]:
    """A JSON-RPC answer to ``get_instruments_request`` (text or parsed) → instruments."""
    try:
        msg = raw if isinstance(raw, Mapping) else json.loads(raw)
    except ValueError as exc:
        raise DeribitError(f"Deribit get_instruments answer is not JSON: {exc}") from None
    if not isinstance(msg, Mapping):
        raise DeribitError("Deribit get_instruments answer is not a JSON object")
    if "error" in msg:
        raise DeribitError(f"Deribit get_instruments failed: {msg['error']}")
    if "result" not in msg:
        raise DeribitError(f"Deribit get_instruments answer has no result: {str(msg)[:200]}")
    return instruments_from_result(msg["result"])


def instruments_url(base_http: str, currency: str, kind: str = "option",
                    expired: bool = False) -> str:
    query = urllib.parse.urlencode(
        {"currency": currency, "kind": kind, "expired": "true" if expired else "false"})
    return f"{base_http.rstrip('/')}/api/v2/public/get_instruments?{query}"


def fetch_instruments(base_http: str = DEFAULT_HTTP_URL, currency: str = "BTC",
                      kind: str = "option", timeout_s: float = 10.0,
                      opener: Callable[..., Any] = urllib.request.urlopen) -> list[InstrumentInfo]:
    """GET ``<base_http>/api/v2/public/get_instruments?currency=..&kind=..`` (stdlib urllib).

    Raises ``DeribitError`` naming the URL and the cause on any failure: unreachable host, HTTP
    error (with Deribit's error text when it sends one), timeout, a body that is not a JSON-RPC
    answer, or a JSON-RPC error."""
    url = instruments_url(base_http, currency, kind)
    try:
        with opener(url, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        detail = ""
        try:
            detail = exc.read().decode("utf-8", "replace")[:300]
        except Exception:  # noqa: BLE001 - the status is enough
            pass
        raise DeribitError(
            f"could not fetch Deribit instruments from {url}: HTTP {exc.code} {exc.reason} "
            f"{detail}".rstrip()) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeribitError(f"could not fetch Deribit instruments from {url}: {reason}") from None
    try:
        return instruments_from_response(body)
    except DeribitError as exc:
        raise DeribitError(f"could not fetch Deribit instruments from {url}: {exc}") from None


@dataclass(frozen=True, slots=True)
class ConnectionChange:
    """What to send on connection ``connection`` (an index into the plan's connections)."""

    connection: int
    subscribe: tuple[str, ...]
    unsubscribe: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubscriptionPlan:
    """Channels per connection after a change, and the changes to get there. A connection left
    without channels stays in place (empty) so indexes keep naming the same connections."""

    connections: tuple[tuple[str, ...], ...]
    changes: tuple[ConnectionChange, ...]

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(c for conn in self.connections for c in conn)


class SubscriptionManager:
    """Which channels hedgeflow wants from Deribit, and on which connection. Pure logic.

    Wanted: for each configured currency, the index ``deribit_price_index.<cur>_usd``, the
    perpetual's ticker and trades, all option trades ``trades.option.<CUR>.<interval>``, and for
    every active, unexpired option of that currency its ticker and book. An option is expired
    when ``expiration_ts <= now``.
    """

    def __init__(self, currencies: Sequence[str] = ("BTC", "ETH"), interval: str = PUBLIC_INTERVAL,
                 max_per_connection: int = MAX_CHANNELS_PER_CONNECTION,
                 max_connections: int = MAX_CONNECTIONS,
                 option_channels: Sequence[str] = ("ticker", "book")) -> None:
        if interval == "raw":
            raise ValueError("Deribit '.raw' channels need an authenticated connection; "
                             "use '100ms' for public data")
        if max_per_connection < 1 or max_connections < 1:
            raise ValueError("max_per_connection and max_connections must be at least 1")
        self.currencies = tuple(c.upper() for c in currencies)
        self.interval = interval
        self.max_per_connection = max_per_connection
        self.max_connections = max_connections
        self.option_channels = tuple(option_channels)

    def shared_channels(self) -> list[str]:
        out = []
        for cur in self.currencies:
            out += [
                f"deribit_price_index.{cur.lower()}_usd",
                f"ticker.{cur}-PERPETUAL.{self.interval}",
                f"trades.{cur}-PERPETUAL.{self.interval}",
                f"trades.option.{cur}.{self.interval}",
            ]
        return out

    def live_options(self, instruments: Iterable[Any], now: float) -> list[InstrumentInfo]:
        """Active, unexpired options of the configured currencies, by expiry, strike, name."""
        infos = [InstrumentInfo.from_result(i) for i in instruments]
        live = [i for i in infos if i.kind == "option" and i.is_active
                and i.base_currency.upper() in self.currencies and i.expiration_ts > now]
        return sorted(live, key=lambda i: (i.expiration_ts, i.strike, i.name))

    def wanted(self, instruments: Iterable[Any], now: float) -> list[str]:
        """Channels wanted at time ``now`` (epoch s), shared ones first, in a stable order."""
        out = self.shared_channels()
        for opt in self.live_options(instruments, now):
            out += [f"{ch}.{opt.name}.{self.interval}" for ch in self.option_channels]
        return list(dict.fromkeys(out))

    def _check_size(self, n_connections: int, n_channels: int) -> None:
        if n_connections > self.max_connections:
            raise DeribitError(
                f"{n_channels} Deribit channels need {n_connections} connections of at most "
                f"{self.max_per_connection} channels, more than the {self.max_connections} allowed "
                "per IP: subscribe fewer options (currencies, expiries) or fewer channels per option")

    def assign(self, channels: Iterable[str]) -> tuple[tuple[str, ...], ...]:
        """Channels in order onto connections of at most ``max_per_connection`` each."""
        chans = list(dict.fromkeys(channels))
        n = self.max_per_connection
        conns = tuple(tuple(chans[i:i + n]) for i in range(0, len(chans), n))
        self._check_size(len(conns), len(chans))
        return conns

    def plan(self, instruments: Iterable[Any], now: float) -> tuple[tuple[str, ...], ...]:
        return self.assign(self.wanted(instruments, now))

    def diff(self, old: Sequence[Sequence[str]], new: Iterable[str] | Sequence[Sequence[str]]
             ) -> SubscriptionPlan:
        """From the current assignment ``old`` to the wanted channels ``new`` (a flat list, or
        an assignment, which is flattened): channels that stay keep their connection; those no
        longer wanted are unsubscribed where they are; new ones fill connections with room, in
        order, then new connections."""
        new_list = list(new)
        if new_list and not isinstance(new_list[0], str):
            new_list = [c for conn in new_list for c in conn]
        wanted = dict.fromkeys(new_list)
        conns = [list(c) for c in old]
        removed = [[c for c in conn if c not in wanted] for conn in conns]
        conns = [[c for c in conn if c in wanted] for conn in conns]
        present = {c for conn in conns for c in conn}
        to_add = [c for c in wanted if c not in present]
        added: list[list[str]] = [[] for _ in conns]
        for i, conn in enumerate(conns):
            room = self.max_per_connection - len(conn)
            if room > 0 and to_add:
                take, to_add = to_add[:room], to_add[room:]
                conn += take
                added[i] += take
        while to_add:
            take, to_add = to_add[:self.max_per_connection], to_add[self.max_per_connection:]
            conns.append(list(take))
            added.append(list(take))
            removed.append([])
        self._check_size(sum(1 for c in conns if c), len(wanted))
        changes = tuple(
            ConnectionChange(i, tuple(a), tuple(r))
            for i, (a, r) in enumerate(zip(added, removed)) if a or r
        )
        return SubscriptionPlan(tuple(tuple(c) for c in conns), changes)


def protocols_for(plan: Sequence[Sequence[str]], url: str = DEFAULT_WS_URL,
                  heartbeat_interval_s: int = 30) -> list[DeribitProtocol]:
    """One ``DeribitProtocol`` per connection of an assignment."""
    return [DeribitProtocol(url, conn, heartbeat_interval_s) for conn in plan]


def apply_plan(protocols: list[DeribitProtocol], plan: SubscriptionPlan, url: str = DEFAULT_WS_URL,
               heartbeat_interval_s: int = 30) -> list[DeribitProtocol]:
    """Queue a plan's changes on the running connections' protocols; new connections get new
    protocols (which subscribe on open). Returns the protocols, one per plan connection."""
    out = list(protocols)
    for change in plan.changes:
        if change.connection < len(out):
            out[change.connection].unsubscribe(change.unsubscribe)
            out[change.connection].subscribe(change.subscribe)
    for conn in plan.connections[len(out):]:
        out.append(DeribitProtocol(url, conn, heartbeat_interval_s))
    return out
