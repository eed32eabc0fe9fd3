"""Coinbase websockets (the Exchange feed and Advanced Trade) → normalized batches.

Sources for the wire formats: Coinbase Exchange "WebSocket Feed: Channels"
(https://docs.cdp.coinbase.com/exchange/websocket-feed/channels, also mirrored at
docs.cloud.coinbase.com/exchange/docs/channels), Coinbase Advanced Trade "WebSocket Channels"
(https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-channels and
the AsyncAPI page .../api-reference/advanced-trade-api/websocket/market-trades), and the recorded
Exchange traffic in ``../shared/data/recorded/COINBASE.ws.28.0`` (April 2021, the old
``ws-feed.pro.coinbase.com`` host, which serves the same format). Both APIs use the same product
ids (``BTC-USD``): ``instrument`` is the product id, ``asset`` and ``quote_ccy`` come from
``split_symbol``. Both send each message as one JSON object; prices and sizes are decimal strings,
times ISO-8601 UTC with micro- or nanoseconds.

**Exchange feed** (``wss://ws-feed.exchange.coinbase.com``): every message has a ``type``.

- ``match`` / ``last_match`` (``matches`` channel; ``last_match`` is the last trade before the
  subscription) → one trade: ``trade_id``, ``price``, ``size``, ``time``. Coinbase's ``side`` is
  the MAKER's ("The side field indicates the maker order side. If the side is sell this indicates
  the maker was a sell order and the match is considered an up-tick"), so the taker's side, which
  hedgeflow stores, is the opposite: ``"sell"`` → ``"buy"``. The recording proves it: each of its
  46 tickers (whose ``side`` is documented as the taker's) carries the opposite side of the match
  with the same ``trade_id``.
- ``ticker`` → one quote: ``best_bid``, ``best_ask``, and ``best_bid_size`` / ``best_ask_size``
  where present (they were added in 2022: older tickers, like the recording's, have none, so the
  sizes are NaN). ``event_ts`` is ``time`` (the receive time when a ticker has none).
- ``snapshot`` (``level2`` / ``level2_batch``) → ``is_snapshot`` book rows from ``bids`` and
  ``asks`` (``[[price, size], ...]``); it carries no time in the classic feed, so ``event_ts`` is
  ``time`` when present, else the receive time. ``l2update`` → one incremental row per entry of
  ``changes`` (``[[side, price, size], ...]``, side ``"buy"`` → bid, ``"sell"`` → ask, size
  ``"0"`` removes the level). Level2 messages carry no sequence number: ``sequence`` is -1.
- ``subscriptions`` and ``heartbeat`` are control; so is ``error`` (``{"type": "error",
  "message", "reason"}``), which is also logged as a warning and kept in ``adapter.errors``.
  ``status``, the ``full`` channel's order events (``received``, ``open``, ``done``, ``change``,
  ``activate``), ``auction``, ``rfq_match`` and ``balance`` are ignored.

Sequence numbers on the Exchange feed. ``sequence`` numbers every event of a product's full
order feed (received, open, done, change, match), so on the ``ticker`` and ``matches`` channels,
which carry a subset, consecutive messages skip numbers normally: in the recording every one of
the 36 matches that follows an earlier match of its product skips (6,708 numbers in all) while
the trade ids run on without a hole. A ticker repeats the ``sequence`` of the match that produced
it (all 46 in the recording). So, per product:

- a ``match``/``last_match`` whose ``sequence`` or ``trade_id`` is not above the last one seen is
  stale and quarantined; a skip in ``trade_id`` is a ``"sequence"`` gap with the number of
  missing trades (trade ids are consecutive per product: a skip is a lost trade);
- a ``ticker`` whose ``sequence`` is not above the last ticker's is stale and quarantined (skips
  are normal: tickers batch cascading matches);
- a ``heartbeat`` carries ``last_trade_id``; when it is above the last trade id received (and a
  trade of that product has been received), the trades in between were lost: a ``"sequence"``
  gap, and the tracker moves on to ``last_trade_id`` so the loss is counted once. This is the use
  the documentation gives heartbeats ("sequence numbers and last trade ids that can be used to
  verify no messages were missed").

A reconnect's fresh ``last_match`` repeats a trade already stored and is quarantined as stale.

**Advanced Trade** (``wss://advanced-trade-ws.coinbase.com``): every message is an envelope
``{"channel", "client_id", "timestamp", "sequence_num", "events": [...]}``.

- ``ticker``: ``events[].tickers[]`` with ``product_id``, ``best_bid``, ``best_bid_quantity``,
  ``best_ask``, ``best_ask_quantity`` → one quote per ticker, ``event_ts`` the envelope's
  ``timestamp``.
- ``market_trades``: ``events[].trades[]`` with ``trade_id``, ``product_id``, ``price``, ``size``,
  ``side`` (``"BUY"``/``"SELL"``), ``time`` → trades. Which side ``side`` names is documented
  inconsistently (one schema says "Taker side"); the market data come from the same matching
  engine as the Exchange feed, and NautilusTrader's Coinbase adapter ("Coinbase reports the maker
  side on public market trades, so the aggressor is the opposite side", which it changed to after
  first mapping the side as given) and other clients invert it. So does this adapter:
  ``"SELL"`` → taker ``"buy"``. ``CoinbaseAdapter.advanced_side_is_maker`` switches this off
  should live traffic show otherwise. A ``snapshot`` event (sent on every subscribe: the latest
  trades) may repeat trades already received before a reconnect; those are skipped (counted in
  ``duplicate_trades_skipped``), so ``trade_id`` stays unique.
- ``l2_data`` (the ``level2`` channel): ``events[]`` of type ``snapshot`` / ``update`` with
  ``product_id`` and ``updates[]`` of ``side`` (``"bid"``/``"offer"``), ``price_level``,
  ``new_quantity`` → book rows, ``sequence`` the envelope's ``sequence_num``.
- ``subscriptions`` and ``heartbeats`` are control; ``candles``, ``status``, ``ticker_batch``,
  ``user`` and ``futures_balance_summary`` are ignored. Errors come as ``{"type": "error", ...}``
  and are handled like the Exchange feed's.

``sequence_num`` counts every message of one connection (all channels): the adapter checks it
under the key ``"advanced"``: a skip is a ``"sequence"`` gap, a repeat is stale and quarantined,
and ``0`` starts a new connection. One adapter therefore serves at most one Advanced Trade
connection (any number of Exchange connections for different products). Run one of the two APIs
per product: both carry the same trades.

Messages that are neither (no ``type`` and no ``channel``), unknown types or channels, and
anything unreadable are quarantined with the reason. Adapter state (trackers) changes only once a
message has been read completely, so a quarantined message never moves a tracker.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import orjson

from dataflows.adapters.base import (
    json_object,
    BatchBuilder,
    FeedProtocol,
    Malformed,
    field,
    integer,
    iso_to_epoch,
    level,
    levels,
    num,
    opt_num,
    text,
)
from dataflows.adapters.symbols import split_symbol
from models.records import NormalizedBatch, RawBatch
from models.sequence import SequenceTracker

log = logging.getLogger(__name__)

EXCHANGE = "coinbase"
EXCHANGE_URL = "wss://ws-feed.exchange.coinbase.com"
ADVANCED_URL = "wss://advanced-trade-ws.coinbase.com"
#: the tracker key (and the gaps' ``instrument``) of the Advanced Trade connection's sequence_num
ADVANCED_KEY = "advanced"
#: ``matches`` delivers match and last_match; ``level2_batch`` is the public level2 (50 ms batches)
EXCHANGE_CHANNELS = ("ticker", "matches", "level2_batch", "heartbeat")
#: heartbeats keep quiet subscriptions open (Advanced Trade closes idle channels after 60-90 s)
ADVANCED_CHANNELS = ("heartbeats", "ticker", "market_trades")

_INT64_MAX = 2**63 - 1
_MAKER_TO_TAKER = {"buy": "sell", "sell": "buy"}
_BOOK_SIDE = {"buy": "bid", "sell": "ask"}
_EXCHANGE_IGNORED = frozenset(
    {"status", "received", "open", "done", "change", "activate", "auction", "rfq_match", "balance"}
)
_ADVANCED_CONTROL = frozenset({"subscriptions", "heartbeats"})
_ADVANCED_IGNORED = frozenset({"candles", "status", "ticker_batch", "user", "futures_balance_summary"})
_ADVANCED_DATA = frozenset({"ticker", "market_trades", "l2_data"})
_ADVANCED_TRADE_SIDES = {"BUY": "buy", "SELL": "sell"}
_ADVANCED_BOOK_SIDE = {"bid": "bid", "offer": "ask"}


def _count(data: dict, key: str, kind: str) -> int:
    """A sequence number or trade id: an integer from 0 to 2**63 - 1 (it must fit int64 columns)."""
    value = integer(data, key, kind)
    if not 0 <= value <= _INT64_MAX:
        raise Malformed(f"{kind}: field '{key}' is out of range: {value!r}")
    return value


def _time_or(data: dict, receive_ts: float, kind: str) -> float:
    """``time`` when the message has one, else the receive time."""
    value = data.get("time")
    return receive_ts if value is None else iso_to_epoch(value, kind)


def _list(data: dict, key: str, kind: str) -> list:
    value = field(data, key, kind)
    if not isinstance(value, list):
        raise Malformed(f"{kind}: field '{key}' is not a list: {value!r}")
    return value


def _object(value: Any, what: str, kind: str) -> dict:
    if not isinstance(value, dict):
        raise Malformed(f"{kind}: {what} is not an object: {value!r}")
    return value


class CoinbaseAdapter:
    exchange = EXCHANGE
    #: Advanced Trade ``market_trades`` name the maker's side (see the module docstring).
    advanced_side_is_maker = True

    def __init__(self) -> None:
        # Exchange feed, keyed by product id
        self.match_sequences = SequenceTracker()
        self.ticker_sequences = SequenceTracker()
        self.trade_ids = SequenceTracker()
        self._last_trade_ts: dict[str, float] = {}
        # Advanced Trade, one connection
        self.advanced_sequence = SequenceTracker()
        self._advanced_last_ts = math.nan
        self._advanced_trade_ids: dict[str, int] = {}
        self.duplicate_trades_skipped = 0
        #: the latest error messages the venue sent: (receive_ts, message, reason)
        self.errors: deque[tuple[float, str, str]] = deque(maxlen=100)

    def normalize(self, batch: RawBatch) -> NormalizedBatch:
        b = BatchBuilder(batch.exchange or EXCHANGE)
        for receive_ts, raw in zip(batch.receive_ts.tolist(), batch.messages):
            with b.message(receive_ts, raw):
                msg = json_object(raw)
                if "channel" in msg:
                    self._advanced(b, msg, receive_ts)
                elif "type" in msg:
                    self._exchange(b, msg, receive_ts)
                else:
                    raise Malformed(
                        "unrecognized message: neither an Exchange feed 'type' nor an Advanced "
                        "Trade 'channel'"
                    )
        return b.build()

    # ------------------------------------------------------------------------ Exchange feed

    def _exchange(self, b: BatchBuilder, msg: dict, receive_ts: float) -> None:
        kind = msg["type"]
        if not isinstance(kind, str):
            raise Malformed(f"field 'type' is not a string: {kind!r}")
        if kind in ("match", "last_match"):
            self._match(b, msg, kind)
        elif kind == "ticker":
            self._ticker(b, msg, receive_ts)
        elif kind == "l2update":
            self._l2update(b, msg, receive_ts)
        elif kind == "snapshot":
            self._snapshot(b, msg, receive_ts)
        elif kind == "heartbeat":
            self._heartbeat(b, msg)
        elif kind == "subscriptions":
            b.control()
        elif kind == "error":
            self._error(b, msg, receive_ts)
        elif kind in _EXCHANGE_IGNORED:
            b.ignored()
        else:
            raise Malformed(f"unknown message type {kind!r}")

    def _match(self, b: BatchBuilder, msg: dict, kind: str) -> None:
        product = text(msg, "product_id", kind)
        trade_id = _count(msg, "trade_id", kind)
        sequence = _count(msg, "sequence", kind)
        event_ts = iso_to_epoch(field(msg, "time", kind), kind)
        price, size = num(msg, "price", kind), num(msg, "size", kind)
        maker_side = field(msg, "side", kind)
        if maker_side not in _MAKER_TO_TAKER:
            raise Malformed(f"{kind}: field 'side' is not 'buy' or 'sell': {maker_side!r}")
        asset, quote_ccy = split_symbol(product)
        last_sequence = self.match_sequences.last(product)
        if last_sequence is not None and sequence <= last_sequence:
            raise Malformed(
                f"{kind}: stale sequence {sequence} for {product} (last match {last_sequence})"
            )
        last_trade = self.trade_ids.last(product)
        if last_trade is not None and trade_id <= last_trade:
            raise Malformed(f"{kind}: stale trade_id {trade_id} for {product} (last {last_trade})")
        # the message is good: only now move the trackers
        self.match_sequences.check(product, sequence)
        check = self.trade_ids.check(product, trade_id)
        if check.status == "gap":
            b.gap(product, "sequence", self._last_trade_ts.get(product, event_ts), event_ts,
                  check.missing, f"trade ids {check.expected}..{trade_id - 1} missing")
        self._last_trade_ts[product] = event_ts
        b.add(
            "trades", instrument=product, asset=asset, quote_ccy=quote_ccy, event_ts=event_ts,
            trade_id=str(trade_id), price=price, size_coin=size,
            side=_MAKER_TO_TAKER[maker_side],
        )

    def _ticker(self, b: BatchBuilder, msg: dict, receive_ts: float) -> None:
        kind = "ticker"
        product = text(msg, "product_id", kind)
        sequence = _count(msg, "sequence", kind) if "sequence" in msg else None
        bid, ask = num(msg, "best_bid", kind), num(msg, "best_ask", kind)
        bid_size = opt_num(msg, "best_bid_size", kind)
        ask_size = opt_num(msg, "best_ask_size", kind)
        event_ts = _time_or(msg, receive_ts, kind)
        asset, quote_ccy = split_symbol(product)
        if sequence is not None:
            last = self.ticker_sequences.last(product)
            if last is not None and sequence <= last:
                raise Malformed(f"ticker: stale sequence {sequence} for {product} (last {last})")
            self.ticker_sequences.check(product, sequence)
        b.add(
            "quotes", instrument=product, asset=asset, quote_ccy=quote_ccy, event_ts=event_ts,
            bid=bid, bid_size_coin=bid_size, ask=ask, ask_size_coin=ask_size,
        )

    @staticmethod
    def _snapshot(b: BatchBuilder, msg: dict, receive_ts: float) -> None:
        kind = "snapshot"
        product = text(msg, "product_id", kind)
        bids, asks = levels(msg, "bids", kind), levels(msg, "asks", kind)
        rows = [("bid", level(e, kind)) for e in bids] + [("ask", level(e, kind)) for e in asks]
        event_ts = _time_or(msg, receive_ts, kind)
        asset, _ = split_symbol(product)
        for side, (price, size) in rows:
            b.add(
                "book_updates", instrument=product, asset=asset, event_ts=event_ts, side=side,
                price=price, size_coin=size, is_snapshot=True, sequence=-1,
            )

    @staticmethod
    def _l2update(b: BatchBuilder, msg: dict, receive_ts: float) -> None:
        kind = "l2update"
        product = text(msg, "product_id", kind)
        rows = []
        for entry in levels(msg, "changes", kind):
            if not isinstance(entry, list) or len(entry) < 3:
                raise Malformed(f"{kind}: a change is not [side, price, size]: {entry!r}")
            side = _BOOK_SIDE.get(entry[0]) if isinstance(entry[0], str) else None
            if side is None:
                raise Malformed(f"{kind}: a change's side is not 'buy' or 'sell': {entry!r}")
            rows.append((side, level(entry[1:], kind)))
        event_ts = _time_or(msg, receive_ts, kind)
        asset, _ = split_symbol(product)
        for side, (price, size) in rows:
            b.add(
                "book_updates", instrument=product, asset=asset, event_ts=event_ts, side=side,
                price=price, size_coin=size, is_snapshot=False, sequence=-1,
            )

    def _heartbeat(self, b: BatchBuilder, msg: dict) -> None:
        kind = "heartbeat"
        product = text(msg, "product_id", kind)
        last_trade_id = _count(msg, "last_trade_id", kind)
        _count(msg, "sequence", kind)
        ts = iso_to_epoch(field(msg, "time", kind), kind)
        last = self.trade_ids.last(product)
        if last is not None and last_trade_id > last:
            b.gap(product, "sequence", self._last_trade_ts.get(product, ts), ts,
                  last_trade_id - last,
                  f"heartbeat: trade ids {last + 1}..{last_trade_id} were not received")
            self.trade_ids.check(product, last_trade_id)
            self._last_trade_ts[product] = ts
        b.control()

    def _error(self, b: BatchBuilder, msg: dict, receive_ts: float) -> None:
        message, reason = str(msg.get("message", "")), str(msg.get("reason", ""))
        self.errors.append((receive_ts, message, reason))
        log.warning("coinbase error message: %s (%s)", message, reason)
        b.control()

    # ------------------------------------------------------------------------ Advanced Trade

    def _advanced(self, b: BatchBuilder, msg: dict, receive_ts: float) -> None:
        channel = msg["channel"]
        if not isinstance(channel, str):
            raise Malformed(f"field 'channel' is not a string: {channel!r}")
        kind = f"advanced {channel}"
        known = _ADVANCED_DATA | _ADVANCED_CONTROL | _ADVANCED_IGNORED
        if channel not in known:
            raise Malformed(f"unknown Advanced Trade channel {channel!r}")
        sequence = _count(msg, "sequence_num", kind)
        ts = iso_to_epoch(field(msg, "timestamp", kind), kind)
        events = _list(msg, "events", kind)
        rows: list[tuple[str, dict]] = []
        trade_ids: dict[str, int] = {}
        skipped = 0
        if channel == "ticker":
            rows = self._advanced_tickers(events, ts, kind)
        elif channel == "market_trades":
            rows, trade_ids, skipped = self._advanced_trades(events, kind)
        elif channel == "l2_data":
            rows = self._advanced_book(events, ts, sequence, kind)
        # the message is good: check and move the connection's sequence
        if sequence == 0:
            self.advanced_sequence.reset(ADVANCED_KEY)  # a new connection starts at 0
        last = self.advanced_sequence.last(ADVANCED_KEY)
        if last is not None and sequence <= last:
            raise Malformed(f"{kind}: stale sequence_num {sequence} (last {last})")
        check = self.advanced_sequence.check(ADVANCED_KEY, sequence)
        if check.status == "gap":
            start = ts if math.isnan(self._advanced_last_ts) else self._advanced_last_ts
            b.gap(ADVANCED_KEY, "sequence", start, ts, check.missing,
                  f"sequence_num {check.expected}..{sequence - 1} missing")
        self._advanced_last_ts = ts
        self.duplicate_trades_skipped += skipped
        for product, trade_id in trade_ids.items():
            self._advanced_trade_ids[product] = max(trade_id, self._advanced_trade_ids.get(product, -1))
        if channel in _ADVANCED_CONTROL:
            b.control()
        elif channel in _ADVANCED_IGNORED:
            b.ignored()
        else:
            for table, row in rows:
                b.add(table, **row)

    @staticmethod
    def _event_type(event: dict, kind: str) -> str:
        value = field(event, "type", kind)
        if value not in ("snapshot", "update"):
            raise Malformed(f"{kind}: event type is not 'snapshot' or 'update': {value!r}")
        return value

    def _advanced_tickers(self, events: list, ts: float, kind: str) -> list[tuple[str, dict]]:
        rows = []
        for event in events:
            event = _object(event, "an event", kind)
            self._event_type(event, kind)
            for ticker in _list(event, "tickers", kind):
                ticker = _object(ticker, "a ticker", kind)
                product = text(ticker, "product_id", kind)
                asset, quote_ccy = split_symbol(product)
                rows.append(("quotes", dict(
                    instrument=product, asset=asset, quote_ccy=quote_ccy, event_ts=ts,
                    bid=num(ticker, "best_bid", kind),
                    bid_size_coin=opt_num(ticker, "best_bid_quantity", kind),
                    ask=num(ticker, "best_ask", kind),
                    ask_size_coin=opt_num(ticker, "best_ask_quantity", kind),
                )))
        return rows

    def _advanced_trades(self, events: list,
                         kind: str) -> tuple[list[tuple[str, dict]], dict[str, int], int]:
        """(rows, newest numeric trade id per product, snapshot trades skipped as repeats)."""
        rows, newest, skipped = [], {}, 0
        for event in events:
            event = _object(event, "an event", kind)
            is_snapshot = self._event_type(event, kind) == "snapshot"
            for trade in _list(event, "trades", kind):
                trade = _object(trade, "a trade", kind)
                product = text(trade, "product_id", kind)
                raw_id = field(trade, "trade_id", kind)
                if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
                    raise Malformed(f"{kind}: field 'trade_id' is not an id: {raw_id!r}")
                trade_id = str(raw_id)
                side = _ADVANCED_TRADE_SIDES.get(field(trade, "side", kind))
                if side is None:
                    raise Malformed(f"{kind}: field 'side' is not 'BUY' or 'SELL': {trade['side']!r}")
                if self.advanced_side_is_maker:
                    side = _MAKER_TO_TAKER[side]
                event_ts = iso_to_epoch(field(trade, "time", kind), kind)
                price, size = num(trade, "price", kind), num(trade, "size", kind)
                asset, quote_ccy = split_symbol(product)
                numeric = int(trade_id) if trade_id.isascii() and trade_id.isdigit() else None
                if numeric is not None:
                    newest[product] = max(numeric, newest.get(product, -1))
                    if is_snapshot and numeric <= self._advanced_trade_ids.get(product, -1):
                        skipped += 1  # a re-subscribe's snapshot repeats a trade already stored
                        continue
                rows.append(("trades", dict(
                    instrument=product, asset=asset, quote_ccy=quote_ccy, event_ts=event_ts,
                    trade_id=trade_id, price=price, size_coin=size, side=side,
                )))
        return rows, newest, skipped

    def _advanced_book(self, events: list, ts: float, sequence: int,
                       kind: str) -> list[tuple[str, dict]]:
        rows = []
        for event in events:
            event = _object(event, "an event", kind)
            is_snapshot = self._event_type(event, kind) == "snapshot"
            product = text(event, "product_id", kind)
            asset, _ = split_symbol(product)
            for update in _list(event, "updates", kind):
                update = _object(update, "an update", kind)
                side = _ADVANCED_BOOK_SIDE.get(field(update, "side", kind))
                if side is None:
                    raise Malformed(f"{kind}: field 'side' is not 'bid' or 'offer': {update['side']!r}")
                rows.append(("book_updates", dict(
                    instrument=product, asset=asset, event_ts=ts, side=side,
                    price=num(update, "price_level", kind),
                    size_coin=num(update, "new_quantity", kind),
                    is_snapshot=is_snapshot, sequence=sequence,
                )))
        return rows


# ---------------------------------------------------------------------------- connection


class CoinbaseProtocol(FeedProtocol):
    """Subscriptions for either Coinbase API, chosen by ``api`` ("exchange" or "advanced";
    by default "advanced" when the URL names ``advanced-trade``, else "exchange").

    The Exchange feed takes one subscribe request for all channels; Advanced Trade takes one per
    channel. Neither needs replies or application pings: the heartbeat channels keep the
    subscriptions open and give the adapter its loss checks.
    """

    exchange = EXCHANGE

    def __init__(self, url: str, product_ids: tuple[str, ...] | list[str] = ("BTC-USD", "ETH-USD"),
                 channels: tuple[str, ...] | list[str] | None = None, api: str | None = None) -> None:
        super().__init__(url)
        self.api = api or ("advanced" if "advanced-trade" in url else "exchange")
        if self.api not in ("exchange", "advanced"):
            raise ValueError(f"api must be 'exchange' or 'advanced', not {api!r}")
        self.product_ids = tuple(product_ids)
        default = EXCHANGE_CHANNELS if self.api == "exchange" else ADVANCED_CHANNELS
        self.channels = tuple(channels) if channels is not None else default

    def on_open(self) -> list[str]:
        return subscribe_messages(self.product_ids, self.channels, self.api)


def subscribe_messages(product_ids, channels, api: str = "exchange") -> list[str]:
    """The subscribe request(s) for ``product_ids`` on ``channels`` of the given API."""
    products = list(product_ids)
    if api == "exchange":
        request = {"type": "subscribe", "product_ids": products, "channels": list(channels)}
        return [orjson.dumps(request).decode()]
    return [
        orjson.dumps({"type": "subscribe", "product_ids": products, "channel": channel}).decode()
        for channel in channels
    ]
