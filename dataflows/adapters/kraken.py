"""Kraken spot websockets (v1 and v2) → normalized batches.

Sources for the wire formats: Kraken API Center, "Spot Websockets (v1)" trade / ticker / book
(https://docs.kraken.com/api/docs/websocket-v1/trade and siblings), the v1 book checksum guide
(https://docs.kraken.com/api/docs/guides/spot-ws-book-v1), and "Spot Websockets (v2)" ticker,
trade and book (https://docs.kraken.com/api/docs/websocket-v2/ticker, .../trade, .../book); the
v1 shapes are also checked against the recorded traffic in ``../shared/data/recorded/KRAKEN.ws.*``.

**v1** (``wss://ws.kraken.com``). Object messages are control: ``{"event": "heartbeat"}``,
``systemStatus``, ``subscriptionStatus`` (including ``"status": "error"`` answers), ``pong`` and
``error``. Data arrive as arrays ``[channelID, payload, channelName, pair]`` (a book update may
carry two payload dicts: ``[channelID, {"a": [...]}, {"b": [...]}, "book-1000", "XBT/USD"]``).
All decimals, times included, are strings; times are epoch seconds with microseconds.

- ``trade``: a list of ``[price, volume, time, side, orderType, misc]``, side ``"b"``/``"s"`` the
  taker's. One trade row each. v1 trades carry no id, so ``trade_id`` is built from the wire text
  as ``"<time>-<price>-<volume>-<index in message>"`` (e.g. ``"1618678142.557535-354.11000000-
  0.89594024-0"``): deterministic (a replay gives the same ids) and unique unless two messages
  carry a trade with the same microsecond, price and volume at the same index.
- ``ticker``: ``{"a": [ask, wholeLotVolume, lotVolume], "b": [bid, wholeLotVolume, lotVolume],
  "c": [last, volume], ...}`` → one quote. The sizes are ``lotVolume`` (index 2); the whole-lot
  volume is an integer count of lots (the recording has ``"b": ["0.00758000", 0, "0.21000000"]``).
  v1 tickers have no time: ``event_ts`` is the receive time.
- ``book-N``: a snapshot ``{"as": [[price, volume, time], ...], "bs": [...]}`` gives
  ``is_snapshot`` rows; updates ``{"a": [...]}`` and/or ``{"b": [...]}`` give incremental rows
  (volume ``"0"`` deletes). A level may carry a 4th element ``"r"`` (a republished level, applied
  like any other). ``event_ts`` is each level's own time ("when the level last updated", for
  snapshot levels too). Kraken books have no sequence numbers: ``sequence`` is -1.
  The last update dict carries ``"c"``, a CRC32 of the top 10 asks and bids. The adapter keeps each
  book (truncated to its depth N, as Kraken requires) and verifies that checksum; a mismatch is
  recorded as a ``"book"`` gap (from the last verified message to this one), the book is dropped
  until the next snapshot and the pair is listed by ``take_resyncs()`` (for
  ``KrakenProtocol.resubscribe_books``); the message's rows are still data. Updates for a book
  never snapshotted are passed on unverified. All 4,269 checksums of KRAKEN.ws.50.0 verify.
- ``spread`` and ``ohlc-*`` are ignored.

**v2** (``wss://ws.kraken.com/v2``). Every message is an object. Numbers are JSON numbers, times
RFC 3339 (``2023-09-25T07:49:37.708706Z``), symbols ``BTC/USD`` (BTC, not XBT).

- ``{"channel": "ticker", "type": "snapshot"|"update", "data": [{"symbol", "bid", "bid_qty",
  "ask", "ask_qty", "last", ...}]}`` → one quote per data item. The ticker has no time in the
  schema this adapter was written against; the current documentation's example shows a
  ``timestamp``: it is used when present, otherwise ``event_ts`` is the receive time.
- ``{"channel": "trade", "data": [{"symbol", "side": "buy"|"sell", "price", "qty", "ord_type",
  "trade_id", "timestamp"}]}`` → trades; ``trade_id`` is Kraken's (a sequence number per book).
- ``{"channel": "book", "type": "snapshot"|"update", "data": [{"symbol", "bids": [{"price",
  "qty"}], "asks": [...], "checksum", "timestamp"}]}`` → book rows, ``event_ts`` the item's
  ``timestamp`` (receive time when absent). The v2 checksum is not verified: it needs each pair's
  price and quantity precision (the ``instrument`` channel), which JSON numbers do not carry.
- ``heartbeat`` and ``status`` channels and method answers (``{"method": "subscribe",
  "success": true, ...}``, ``{"method": "pong", ...}``) are control; ``ohlc`` and ``instrument``
  are ignored.

Instruments are the pair as Kraken spells it on the connection (``XBT/USD`` on v1, ``BTC/USD`` on
v2); ``asset`` and ``quote_ccy`` come from ``split_symbol``, which maps XBT to BTC on both sides.
"""

from __future__ import annotations

import math
import zlib
from bisect import bisect_left, insort
from typing import Any

import orjson

from dataflows.adapters.base import (
    BatchBuilder,
    FeedProtocol,
    Malformed,
    field,
    iso_to_epoch,
    level,
    levels,
    num,
    text,
)
from dataflows.adapters.symbols import split_symbol
from models.records import NormalizedBatch, RawBatch

EXCHANGE = "kraken"
V1_URL = "wss://ws.kraken.com"
V2_URL = "wss://ws.kraken.com/v2"

_V1_CONTROL_EVENTS = frozenset({"heartbeat", "systemStatus", "subscriptionStatus", "pong", "error"})
_V2_CONTROL_CHANNELS = frozenset({"heartbeat", "status"})
_V2_IGNORED_CHANNELS = frozenset({"ohlc", "instrument"})
_V1_SIDES = {"b": "buy", "s": "sell"}
_V2_SIDES = frozenset({"buy", "sell"})
CHECKSUM_LEVELS = 10


# ------------------------------------------------------------------------------ book state


class _Side:
    """One side of a price-level book: price → (price text, volume text) and the sorted prices."""

    __slots__ = ("levels", "prices")

    def __init__(self) -> None:
        self.levels: dict[float, tuple[str, str]] = {}
        self.prices: list[float] = []  # ascending

    def apply(self, price: float, size: float, price_text: str, size_text: str) -> None:
        if size == 0.0:
            if self.levels.pop(price, None) is not None:
                del self.prices[bisect_left(self.prices, price)]
        else:
            if price not in self.levels:
                insort(self.prices, price)
            self.levels[price] = (price_text, size_text)

    def keep_lowest(self, n: int) -> None:
        for price in self.prices[n:]:
            del self.levels[price]
        del self.prices[n:]

    def keep_highest(self, n: int) -> None:
        cut = max(len(self.prices) - n, 0)
        for price in self.prices[:cut]:
            del self.levels[price]
        del self.prices[:cut]


def _checksum_part(value: str) -> str:
    return value.replace(".", "").lstrip("0")


class _Book:
    __slots__ = ("depth", "asks", "bids", "good_ts")

    def __init__(self, depth: int, good_ts: float) -> None:
        self.depth = depth
        self.good_ts = good_ts  # receive time of the snapshot or the last verified update
        self.asks = _Side()
        self.bids = _Side()

    def apply(self, rows: list[tuple[str, float, float, str, str]]) -> None:
        for side, price, size, price_text, size_text in rows:
            (self.asks if side == "ask" else self.bids).apply(price, size, price_text, size_text)
        self.asks.keep_lowest(self.depth)
        self.bids.keep_highest(self.depth)

    def checksum(self) -> int:
        """Kraken's v1 book checksum: CRC32 of the top 10 asks (low to high) then the top 10 bids
        (high to low), each level as price then volume with the '.' and leading zeros removed."""
        parts = []
        for price in self.asks.prices[:CHECKSUM_LEVELS]:
            p, v = self.asks.levels[price]
            parts.append(_checksum_part(p) + _checksum_part(v))
        for price in reversed(self.bids.prices[-CHECKSUM_LEVELS:]):
            p, v = self.bids.levels[price]
            parts.append(_checksum_part(p) + _checksum_part(v))
        return zlib.crc32("".join(parts).encode())


# ------------------------------------------------------------------------------ helpers


def _finite(value: float, what: str, kind: str) -> float:
    if not math.isfinite(value):
        raise Malformed(f"{kind}: {what} is not a finite number: {value!r}")
    return value


def _wire_number(entry: list, index: int, what: str, kind: str) -> float:
    """Element ``index`` of a positional v1 array, a decimal string or a number."""
    try:
        value = entry[index]
    except (IndexError, TypeError, KeyError):
        raise Malformed(f"{kind}: {what} missing in {entry!r}") from None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Malformed(f"{kind}: {what} is not a number: {value!r}")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise Malformed(f"{kind}: {what} is not a number: {value!r}") from None


def _pair(symbol: Any, kind: str) -> tuple[str, str, str]:
    if not isinstance(symbol, str) or not symbol:
        raise Malformed(f"{kind}: pair is not a non-empty string: {symbol!r}")
    asset, quote_ccy = split_symbol(symbol)
    return symbol, asset, quote_ccy


# ------------------------------------------------------------------------------ adapter


class KrakenAdapter:
    exchange = EXCHANGE

    def __init__(self, verify_checksums: bool = True) -> None:
        self.verify_checksums = verify_checksums
        self._books: dict[str, _Book] = {}  # v1 books by pair, for checksum verification
        self.checksums_verified = 0
        self.checksum_mismatches = 0
        self._resyncs: list[str] = []

    def normalize(self, batch: RawBatch) -> NormalizedBatch:
        b = BatchBuilder(batch.exchange or EXCHANGE)
        for receive_ts, raw in zip(batch.receive_ts.tolist(), batch.messages):
            with b.message(receive_ts, raw):
                try:
                    msg = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise Malformed(f"invalid JSON: {exc}") from None
                if isinstance(msg, list):
                    self._v1_array(b, msg, receive_ts)
                elif isinstance(msg, dict):
                    self._object(b, msg, receive_ts)
                else:
                    raise Malformed(f"expected a JSON object or array, got {type(msg).__name__}")
        return b.build()

    # -------------------------------------------------------------------- objects (v1 and v2)

    def _object(self, b: BatchBuilder, msg: dict, receive_ts: float) -> None:
        if "event" in msg:
            event = msg["event"]
            if isinstance(event, str) and event in _V1_CONTROL_EVENTS:
                b.control()
                return
            raise Malformed(f"unknown v1 event {event!r}")
        if "channel" in msg:
            channel = msg["channel"]
            if not isinstance(channel, str):
                raise Malformed(f"v2 field 'channel' is not a string: {channel!r}")
            if channel in _V2_CONTROL_CHANNELS:
                b.control()
            elif channel in _V2_IGNORED_CHANNELS:
                b.ignored()
            elif channel == "ticker":
                for item in self._v2_data(msg, "ticker"):
                    self._v2_ticker(b, item, receive_ts)
            elif channel == "trade":
                for item in self._v2_data(msg, "trade"):
                    self._v2_trade(b, item)
            elif channel == "book":
                book_type = msg.get("type")
                if book_type not in ("snapshot", "update"):
                    raise Malformed(f"book: field 'type' is not snapshot or update: {book_type!r}")
                for item in self._v2_data(msg, "book"):
                    self._v2_book(b, item, book_type == "snapshot", receive_ts)
            else:
                raise Malformed(f"unknown v2 channel {channel!r}")
            return
        if isinstance(msg.get("method"), str):
            b.control()  # v2 answers: subscribe / unsubscribe (success or error), pong
            return
        raise Malformed("unrecognized message: neither a v1 event nor a v2 channel or method")

    # -------------------------------------------------------------------- v2

    @staticmethod
    def _v2_data(msg: dict, kind: str) -> list[dict]:
        data = field(msg, "data", kind)
        if not isinstance(data, list) or not data:
            raise Malformed(f"{kind}: field 'data' is not a non-empty list: {data!r}")
        for item in data:
            if not isinstance(item, dict):
                raise Malformed(f"{kind}: a data item is not an object: {item!r}")
        return data

    @staticmethod
    def _v2_ticker(b: BatchBuilder, item: dict, receive_ts: float) -> None:
        kind = "ticker"
        symbol, asset, quote_ccy = _pair(field(item, "symbol", kind), kind)
        stamp = item.get("timestamp")
        b.add(
            "quotes", instrument=symbol, asset=asset, quote_ccy=quote_ccy,
            event_ts=receive_ts if stamp is None else iso_to_epoch(stamp, kind),
            bid=num(item, "bid", kind), bid_size_coin=num(item, "bid_qty", kind),
            ask=num(item, "ask", kind), ask_size_coin=num(item, "ask_qty", kind),
        )

    @staticmethod
    def _v2_trade(b: BatchBuilder, item: dict) -> None:
        kind = "trade"
        symbol, asset, quote_ccy = _pair(field(item, "symbol", kind), kind)
        side = field(item, "side", kind)
        if not isinstance(side, str) or side not in _V2_SIDES:
            raise Malformed(f"{kind}: field 'side' is not buy or sell: {side!r}")
        trade_id = field(item, "trade_id", kind)
        if isinstance(trade_id, bool) or not isinstance(trade_id, (int, str)) or trade_id == "":
            raise Malformed(f"{kind}: field 'trade_id' is not an id: {trade_id!r}")
        b.add(
            "trades", instrument=symbol, asset=asset, quote_ccy=quote_ccy,
            event_ts=iso_to_epoch(field(item, "timestamp", kind), kind),
            trade_id=str(trade_id), price=num(item, "price", kind),
            size_coin=num(item, "qty", kind), side=side,
        )

    @staticmethod
    def _v2_book(b: BatchBuilder, item: dict, is_snapshot: bool, receive_ts: float) -> None:
        kind = "book"
        symbol, asset, _ = _pair(field(item, "symbol", kind), kind)
        stamp = item.get("timestamp")
        event_ts = receive_ts if stamp is None else iso_to_epoch(stamp, kind)
        rows = []
        for key, side in (("bids", "bid"), ("asks", "ask")):
            entries = item.get(key, [])
            if not isinstance(entries, list):
                raise Malformed(f"{kind}: field '{key}' is not a list of levels: {entries!r}")
            for entry in entries:
                if not isinstance(entry, dict):
                    raise Malformed(f"{kind}: a book level is not {{price, qty}}: {entry!r}")
                rows.append((side, num(entry, "price", kind), num(entry, "qty", kind)))
        if not rows and "bids" not in item and "asks" not in item:
            raise Malformed(f"{kind}: neither 'bids' nor 'asks' in {item!r}")
        for side, price, size in rows:
            b.add(
                "book_updates", instrument=symbol, asset=asset, event_ts=event_ts, side=side,
                price=price, size_coin=size, is_snapshot=is_snapshot, sequence=-1,
            )

    # -------------------------------------------------------------------- v1 arrays

    def _v1_array(self, b: BatchBuilder, msg: list, receive_ts: float) -> None:
        if len(msg) < 4:
            raise Malformed(f"v1 array of {len(msg)} elements (expected channelID, payload, "
                            "channelName, pair)")
        channel_id, payloads, channel, pair = msg[0], msg[1:-2], msg[-2], msg[-1]
        if isinstance(channel_id, bool) or not isinstance(channel_id, int):
            raise Malformed(f"v1 channelID is not an integer: {channel_id!r}")
        if not isinstance(channel, str):
            raise Malformed(f"v1 channelName is not a string: {channel!r}")
        if channel == "spread" or channel.startswith("ohlc"):
            b.ignored()
            return
        symbol, asset, quote_ccy = _pair(pair, channel)
        if channel == "trade":
            if len(payloads) != 1:
                raise Malformed(f"trade: expected one payload, got {len(payloads)}")
            self._v1_trades(b, payloads[0], symbol, asset, quote_ccy)
        elif channel == "ticker":
            if len(payloads) != 1:
                raise Malformed(f"ticker: expected one payload, got {len(payloads)}")
            self._v1_ticker(b, payloads[0], symbol, asset, quote_ccy, receive_ts)
        elif channel.startswith("book-"):
            self._v1_book(b, payloads, channel, symbol, asset, receive_ts)
        else:
            raise Malformed(f"unknown v1 channel {channel!r}")

    @staticmethod
    def _v1_trades(b: BatchBuilder, trades: Any, symbol: str, asset: str, quote_ccy: str) -> None:
        kind = "trade"
        if not isinstance(trades, list) or not trades:
            raise Malformed(f"{kind}: payload is not a non-empty list of trades: {trades!r}")
        for index, entry in enumerate(trades):
            if not isinstance(entry, list) or len(entry) < 4:
                raise Malformed(
                    f"{kind}: a trade is not [price, volume, time, side, ...]: {entry!r}")
            price = _wire_number(entry, 0, "price", kind)
            size = _wire_number(entry, 1, "volume", kind)
            event_ts = _wire_number(entry, 2, "time", kind)
            side = _V1_SIDES.get(entry[3]) if isinstance(entry[3], str) else None
            if side is None:
                raise Malformed(f"{kind}: side is not 'b' or 's': {entry[3]!r}")
            trade_id = f"{entry[2]}-{entry[0]}-{entry[1]}-{index}"
            b.add(
                "trades", instrument=symbol, asset=asset, quote_ccy=quote_ccy, event_ts=event_ts,
                trade_id=trade_id, price=price, size_coin=size, side=side,
            )

    @staticmethod
    def _v1_ticker(b: BatchBuilder, data: Any, symbol: str, asset: str, quote_ccy: str,
                   receive_ts: float) -> None:
        kind = "ticker"
        if not isinstance(data, dict):
            raise Malformed(f"{kind}: payload is not an object: {data!r}")
        ask, bid = field(data, "a", kind), field(data, "b", kind)
        for name, value in (("a", ask), ("b", bid)):
            if not isinstance(value, list) or len(value) < 3:
                raise Malformed(f"{kind}: field '{name}' is not [price, wholeLotVolume, "
                                f"lotVolume]: {value!r}")
        b.add(
            "quotes", instrument=symbol, asset=asset, quote_ccy=quote_ccy, event_ts=receive_ts,
            bid=_wire_number(bid, 0, "bid price", kind),
            bid_size_coin=_wire_number(bid, 2, "bid lot volume", kind),
            ask=_wire_number(ask, 0, "ask price", kind),
            ask_size_coin=_wire_number(ask, 2, "ask lot volume", kind),
        )

    def _v1_book(self, b: BatchBuilder, payloads: list, channel: str, symbol: str, asset: str,
                 receive_ts: float) -> None:
        kind = channel
        try:
            depth = int(channel[len("book-"):])
        except ValueError:
            raise Malformed(f"unknown v1 channel {channel!r}") from None
        if depth <= 0 or not payloads:
            raise Malformed(f"{kind}: no book payload or depth {depth}")
        # Read everything first: nothing (book state, rows) changes unless the whole message reads.
        rows: list[tuple[str, float, float, str, str, float]] = []
        snapshot = update = False
        checksum = None
        for payload in payloads:
            if not isinstance(payload, dict):
                raise Malformed(f"{kind}: payload is not an object: {payload!r}")
            found = False
            for key, side, is_snap in (("as", "ask", True), ("bs", "bid", True),
                                       ("a", "ask", False), ("b", "bid", False)):
                if key not in payload:
                    continue
                found = True
                snapshot |= is_snap
                update |= not is_snap
                for entry in levels(payload, key, kind):
                    price, size = level(entry, kind)
                    _finite(price, "price", kind)
                    _finite(size, "volume", kind)
                    event_ts = _finite(_wire_number(entry, 2, "level time", kind), "time", kind)
                    rows.append((side, price, size, str(entry[0]), str(entry[1]), event_ts))
            if "c" in payload:
                c = text(payload, "c", kind)
                if not (c.isascii() and c.isdigit()):
                    raise Malformed(f"{kind}: checksum 'c' is not an unsigned integer: {c!r}")
                checksum = int(c)
            if not found:
                raise Malformed(f"{kind}: payload has none of 'as', 'bs', 'a', 'b': {payload!r}")
        if snapshot and update:
            raise Malformed(f"{kind}: snapshot and update levels in one message")

        if self.verify_checksums:
            self._track_book(b, symbol, depth, snapshot, rows, checksum, receive_ts)
        for side, price, size, _, _, event_ts in rows:
            b.add(
                "book_updates", instrument=symbol, asset=asset, event_ts=event_ts, side=side,
                price=price, size_coin=size, is_snapshot=snapshot, sequence=-1,
            )

    def _track_book(self, b: BatchBuilder, symbol: str, depth: int, snapshot: bool, rows: list,
                    checksum: int | None, receive_ts: float) -> None:
        levels_ = [(side, price, size, pt, st) for side, price, size, pt, st, _ in rows]
        if snapshot:
            book = self._books[symbol] = _Book(depth, receive_ts)
            book.apply(levels_)
            return
        book = self._books.get(symbol)
        if book is None:
            return  # no snapshot seen (or dropped after a mismatch): nothing to verify against
        book.apply(levels_)
        if checksum is None:
            return
        computed = book.checksum()
        if computed == checksum:
            self.checksums_verified += 1
            book.good_ts = receive_ts
            return
        self.checksum_mismatches += 1
        del self._books[symbol]
        self._resyncs.append(symbol)
        b.gap(symbol, "book", book.good_ts, receive_ts, -1,
              f"book checksum mismatch: Kraken sent {checksum}, local book gives {computed} "
              "(updates lost since the last verified message); book unverified until the next "
              "snapshot")

    def take_resyncs(self) -> list[str]:
        """Pairs whose book failed its checksum since the last call (drained): hand them to
        ``KrakenProtocol.resubscribe_books`` to get fresh snapshots."""
        out, self._resyncs = self._resyncs, []
        return out


# ------------------------------------------------------------------------------ protocol


def _respell(pair: str, old: str, new: str) -> str:
    base, sep, quote = pair.partition("/")
    if not sep:
        return pair
    return "/".join(new if part.upper() == old else part for part in (base, quote))


def _v2_symbol(pair: str) -> str:
    """v2 spells bitcoin BTC: XBT/USD → BTC/USD."""
    return _respell(pair, "XBT", "BTC")


def _v1_pair(pair: str) -> str:
    """v1 spells bitcoin XBT: BTC/USD → XBT/USD."""
    return _respell(pair, "BTC", "XBT")


class KrakenProtocol(FeedProtocol):
    """Subscriptions for Kraken spot websockets.

    ``version=2`` (the current API; connect to ``V2_URL``) sends ``{"method": "subscribe",
    "params": {"channel": ..., "symbol": [...]}}`` per channel with BTC spelled ``BTC``;
    ``version=1`` (``V1_URL``) sends ``{"event": "subscribe", "pair": [...], "subscription":
    {"name": ...}}`` with BTC spelled ``XBT``. Channels default to ticker and trade; "book" adds
    an order book at ``book_depth`` levels. Kraken does not ping clients, so ``on_message`` sends
    nothing.
    """

    exchange = EXCHANGE

    def __init__(self, url: str, pairs: tuple[str, ...] | list[str] = ("XBT/USD", "ETH/USD"),
                 version: int = 2, channels: tuple[str, ...] = ("ticker", "trade"),
                 book_depth: int = 10) -> None:
        super().__init__(url)
        if version not in (1, 2):
            raise ValueError(f"Kraken websocket version must be 1 or 2, not {version!r}")
        unknown = set(channels) - {"ticker", "trade", "book"}
        if unknown:
            raise ValueError(f"unknown Kraken channels {sorted(unknown)}")
        self.pairs = tuple(pairs)
        self.version = version
        self.channels = tuple(channels)
        self.book_depth = book_depth

    def on_open(self) -> list[str]:
        out = []
        for channel in self.channels:
            if self.version == 2:
                params: dict[str, Any] = {"channel": channel,
                                          "symbol": [_v2_symbol(p) for p in self.pairs]}
                if channel == "book":
                    params["depth"] = self.book_depth
                out.append({"method": "subscribe", "params": params})
            else:
                subscription: dict[str, Any] = {"name": channel}
                if channel == "book":
                    subscription["depth"] = self.book_depth
                out.append({"event": "subscribe", "pair": [_v1_pair(p) for p in self.pairs],
                            "subscription": subscription})
        return [orjson.dumps(request).decode() for request in out]

    def resubscribe_books(self, pairs: list[str]) -> None:
        """Queue an unsubscribe and a subscribe of the book for ``pairs`` (after a checksum
        mismatch): Kraken answers the subscribe with a fresh snapshot."""
        if not pairs:
            return
        for method in ("unsubscribe", "subscribe"):
            if self.version == 2:
                request: dict[str, Any] = {"method": method, "params": {
                    "channel": "book", "symbol": [_v2_symbol(p) for p in pairs],
                    "depth": self.book_depth}}
            else:
                request = {"event": method, "pair": [_v1_pair(p) for p in pairs],
                           "subscription": {"name": "book", "depth": self.book_depth}}
            self.queue(orjson.dumps(request).decode())
