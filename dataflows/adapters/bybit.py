"""Bybit v5 public websocket streams → normalized batches.

Sources (Bybit's own API documentation, https://bybit-exchange.github.io/docs/v5/):

- Connect: https://bybit-exchange.github.io/docs/v5/ws/connect — endpoints, the subscribe request
  ``{"req_id": ..., "op": "subscribe", "args": [topics]}``, its answer
  ``{"success": true, "ret_msg": "", "op": "subscribe", "conn_id": ...}``, the heartbeat
  ``{"req_id": "100001", "op": "ping"}`` answered on public channels by
  ``{"success": true, "ret_msg": "pong", "conn_id": ..., "op": "ping"}`` (other channels answer
  ``{"op": "pong", "args": [...], ...}``), "we recommend that you send the ping heartbeat packet
  every 20 seconds", and the args limits: "Spot can input up to 10 args for each subscription
  request sent to one connection", at most 21,000 characters of args per public connection.
- Ticker: https://bybit-exchange.github.io/docs/v5/websocket/public/ticker
- Trade: https://bybit-exchange.github.io/docs/v5/websocket/public/trade
- Orderbook: https://bybit-exchange.github.io/docs/v5/websocket/public/orderbook
  (the page sources are in github.com/bybit-exchange/docs, ``docs/v5/websocket/public/*.mdx``).

Endpoints: ``wss://stream.bybit.com/v5/public/linear`` (USDT/USDC perpetuals and futures) and
``wss://stream.bybit.com/v5/public/spot``. Every push is
``{"topic": "<channel>.<...>.<symbol>", "type": "snapshot"|"delta", "ts": ms, "data": ...}``;
prices and sizes are decimal strings, times milliseconds.

Channels and what they become:

- ``tickers.<symbol>`` (linear): "This topic utilises the snapshot field and delta field. If a
  response param is not found in the message, then its value has not changed." So the adapter
  keeps, per symbol, the last value of each field it uses (``bid1Price``, ``bid1Size``,
  ``ask1Price``, ``ask1Size``, ``markPrice``, ``indexPrice``, ``fundingRate``,
  ``nextFundingTime``) and merges each message into it: a snapshot replaces the state, a delta
  overwrites only the fields it carries. The state survives across batches. A message gives

  * a ``quotes`` row when it carries any bid/ask field and, after the merge, both ``bid1Price``
    and ``ask1Price`` are known (a size never seen is NaN);
  * a ``funding`` row when it carries any of mark/index/funding-rate/next-funding fields and, after
    the merge, ``markPrice``, ``indexPrice`` and ``fundingRate`` are known. ``fundingRate`` is
    stored as Bybit sends it: a fraction per funding interval (-0.000212 = -2.12 bp per interval,
    8 h for BTCUSDT; the interval is the instrument's ``fundingInterval``), never annualized.
    ``nextFundingTime`` (ms, as a string) becomes epoch seconds; NaN when unknown or empty
    (dated futures have no funding).

  Rows take the message's ``ts`` as event time. Only fields that changed are re-read; a delta of
  only ``lastPrice``/``volume24h``/``openInterest`` says nothing hedgeflow stores and is
  ``ignored`` (as is any ticker message that makes no row). An empty string sets a field to
  unknown.

  *A delta before any snapshot* for its symbol is kept, not quarantined: every value in it is a
  current value, so it is merged into an empty state and rows are emitted only once the fields
  they need are all known (they never borrow a value that was not received). This is what replay
  of a capture cut mid-stream needs; live, Bybit sends a snapshot after every subscribe, and that
  snapshot replaces whatever the state held before a reconnect. Tickers carry ``cs`` (cross
  sequence), which counts matching-engine events and is not consecutive, so no gap can be told
  from it; the state is last-writer-wins in arrival order.

- ``tickers.<symbol>`` (spot): snapshots only, with ``lastPrice``, 24 h statistics and
  ``usdIndexPrice`` but no bid/ask, mark or funding. Nothing hedgeflow stores: ``ignored``, and the
  per-symbol state is not touched (so a spot ticker can never wipe a linear symbol's state).
  Bybit spot top of book is ``orderbook.1.<symbol>``.

- ``publicTrade.<symbol>``: ``data`` is a list (up to 1024 trades) of ``{"T": fill ms, "s",
  "S": "Buy"|"Sell" (side of taker), "v": size, "p": price, "L", "i": trade id, "BT": block
  trade, ...}`` → one ``trades`` row each, ``side`` = the taker's side lower-cased. Block trades
  are kept (they executed; the raw text still says ``"BT":true``).

- ``orderbook.<depth>.<symbol>`` → ``book_updates``: ``data`` = ``{"s", "b": [[price, size]],
  "a": [...], "u": update id, "seq": cross sequence}``; one row per level, size "0" deletes the
  level, ``sequence`` = ``u``. A snapshot (or any message with ``u`` = 1, which Bybit sends "due
  to the restart of the service ... please overwrite your local orderbook") restarts the update-id
  count for that topic: its rows are ``is_snapshot``. Deltas must continue at the last ``u`` + 1:
  a skip is a ``sequence`` gap (the message is still data), a repeat or older ``u`` is
  quarantined as stale. A delta before any snapshot of its topic is kept, with one ``book`` gap
  recorded: the book cannot be built until the next snapshot. After either kind of gap an adapter
  given its ``BybitProtocol`` re-subscribes the topic once (Bybit answers a subscribe with a
  snapshot). Level-1 linear books re-send a snapshot with the same ``u`` after 3 s without
  change; as a snapshot it is not stale.

- Control (``b.control()``): every message without a ``topic`` that is an op reply — subscribe
  and unsubscribe answers (``success`` true or false: a refused subscription is control too; the
  protocol below keeps its ``ret_msg``), pongs in both shapes, auth answers.

- Ignored: ``kline``, ``liquidation``, ``allLiquidation``, ``insurance``, ``adlAlert``,
  ``priceLimit`` and the leveraged-token topics; ``orderbook.rpi``.

One adapter per connection category: the linear and spot endpoints both call the instrument
``BTCUSDT`` and number their books independently, so if both are consumed they should arrive
under different exchange labels (e.g. ``bybit`` for linear, ``bybit_spot`` for spot), each with
its own ``BybitAdapter``; rows take the batch's exchange label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import orjson

from dataflows.adapters.base import (
    json_object,
    BatchBuilder,
    FeedProtocol,
    Malformed,
    field,
    integer,
    level,
    levels,
    num,
    opt_num,
    text,
)
from dataflows.adapters.symbols import split_symbol
from models.records import NormalizedBatch, RawBatch
from models.sequence import SequenceTracker

EXCHANGE = "bybit"
LINEAR_URL = "wss://stream.bybit.com/v5/public/linear"
SPOT_URL = "wss://stream.bybit.com/v5/public/spot"

QUOTE_FIELDS = ("bid1Price", "bid1Size", "ask1Price", "ask1Size")
FUNDING_FIELDS = ("markPrice", "indexPrice", "fundingRate", "nextFundingTime")
TICKER_FIELDS = QUOTE_FIELDS + FUNDING_FIELDS

_CONTROL_OPS = frozenset({"subscribe", "unsubscribe", "ping", "pong", "auth"})
_IGNORED_CHANNELS = frozenset(
    {"kline", "liquidation", "allLiquidation", "insurance", "adlAlert", "priceLimit",
     "kline_lt", "tickers_lt", "lt"}
)
_SIDES = {"Buy": "buy", "Sell": "sell"}
_TYPES = ("snapshot", "delta")


def _unknown_state() -> dict[str, float]:
    return {f: math.nan for f in TICKER_FIELDS}


def _known(value: float) -> bool:
    return not math.isnan(value)


def _topic_symbol(topic: str, kind: str) -> str:
    symbol = topic.rsplit(".", 1)[-1]
    if not symbol or symbol == topic:
        raise Malformed(f"{kind}: topic {topic!r} names no symbol")
    return symbol


def _message_type(msg: dict, kind: str) -> str:
    kind_of = field(msg, "type", kind)
    if kind_of not in _TYPES:
        raise Malformed(f"{kind}: field 'type' is not snapshot or delta: {kind_of!r}")
    return kind_of


def _data_object(msg: dict, kind: str) -> dict:
    data = field(msg, "data", kind)
    if not isinstance(data, dict):
        raise Malformed(f"{kind}: field 'data' is not an object: {type(data).__name__}")
    return data


class BybitAdapter:
    """Bybit v5 public messages → ``NormalizedBatch`` (see the module docstring).

    ``protocol`` (or ``attach()``): the connection(s) whose subscriptions this adapter reads. When
    given, a book that cannot be continued (a skipped update id, or a delta before any snapshot)
    is re-subscribed once through the protocol that owns the topic, and the fresh subscription
    starts with a snapshot; ``resubscribes`` counts these requests. Without a protocol (replay,
    tests) the gap is only recorded.
    """

    exchange = EXCHANGE

    def __init__(self, protocol: BybitProtocol | Sequence[BybitProtocol] | None = None) -> None:
        self.protocols: list[BybitProtocol] = []
        if isinstance(protocol, BybitProtocol):
            self.protocols.append(protocol)
        elif protocol is not None:
            self.protocols.extend(protocol)
        # symbol -> last known value of each field in TICKER_FIELDS (NaN = unknown)
        self.tickers: dict[str, dict[str, float]] = {}
        # (depth, symbol) -> last update id of that orderbook topic
        self.book_ids = SequenceTracker()
        self._resyncing: set[str] = set()  # book topics re-subscribed, waiting for their snapshot
        self.resubscribes = 0

    def attach(self, *protocols: BybitProtocol) -> None:
        self.protocols.extend(protocols)

    def normalize(self, batch: RawBatch) -> NormalizedBatch:
        b = BatchBuilder(batch.exchange or EXCHANGE)
        for receive_ts, raw in zip(batch.receive_ts.tolist(), batch.messages):
            with b.message(receive_ts, raw):
                msg = json_object(raw)
                if "topic" not in msg:
                    if msg.get("op") in _CONTROL_OPS or (
                        isinstance(msg.get("success"), bool) and "ret_msg" in msg
                    ):
                        b.control()
                        continue
                    raise Malformed("unrecognized message: neither a topic push nor an op reply")
                topic = msg["topic"]
                if not isinstance(topic, str):
                    raise Malformed(f"field 'topic' is not a string: {topic!r}")
                channel = topic.split(".", 1)[0]
                if channel == "tickers":
                    self._ticker(b, msg, topic)
                elif channel == "publicTrade":
                    self._trades(b, msg, topic)
                elif channel == "orderbook":
                    self._orderbook(b, msg, topic)
                elif channel in _IGNORED_CHANNELS:
                    b.ignored()
                else:
                    raise Malformed(f"unknown topic {topic!r}")
        return b.build()

    # ------------------------------------------------------------------------------ tickers
    def _ticker(self, b: BatchBuilder, msg: dict, topic: str) -> None:
        kind = "tickers"
        kind_of = _message_type(msg, kind)
        data = _data_object(msg, kind)
        symbol = text(data, "symbol", kind)
        if symbol != _topic_symbol(topic, kind):
            raise Malformed(f"{kind}: topic {topic!r} carries symbol {symbol!r}")
        event_ts = num(msg, "ts", kind) / 1e3
        # Read every used field before touching the state: a bad value quarantines the message
        # and leaves the state as it was.
        carried = {f: opt_num(data, f, kind) for f in TICKER_FIELDS if f in data}
        if not carried:
            b.ignored()  # spot tickers; linear deltas of last price / volume / open interest only
            return
        if kind_of == "snapshot":
            state = _unknown_state()
        else:
            state = dict(self.tickers.get(symbol) or _unknown_state())
        state.update(carried)
        asset, quote_ccy = split_symbol(symbol)
        made = 0
        if any(f in carried for f in QUOTE_FIELDS) and _known(state["bid1Price"]) and _known(
            state["ask1Price"]
        ):
            b.add(
                "quotes", instrument=symbol, asset=asset, quote_ccy=quote_ccy, event_ts=event_ts,
                bid=state["bid1Price"], bid_size_coin=state["bid1Size"],
                ask=state["ask1Price"], ask_size_coin=state["ask1Size"],
            )
            made += 1
        if (
            any(f in carried for f in FUNDING_FIELDS)
            and _known(state["markPrice"])
            and _known(state["indexPrice"])
            and _known(state["fundingRate"])
        ):
            b.add(
                "funding", instrument=symbol, asset=asset, event_ts=event_ts,
                mark_usd=state["markPrice"], index_usd=state["indexPrice"],
                funding_rate=state["fundingRate"],
                next_funding_ts=state["nextFundingTime"] / 1e3,
            )
            made += 1
        if not made:
            b.ignored()
        self.tickers[symbol] = state

    # ------------------------------------------------------------------------------- trades
    @staticmethod
    def _trades(b: BatchBuilder, msg: dict, topic: str) -> None:
        kind = "publicTrade"
        topic_symbol = _topic_symbol(topic, kind)
        data = field(msg, "data", kind)
        if not isinstance(data, list):
            raise Malformed(f"{kind}: field 'data' is not a list of trades: {type(data).__name__}")
        rows = []
        for t in data:
            if not isinstance(t, dict):
                raise Malformed(f"{kind}: a trade is not an object: {t!r}")
            symbol = text(t, "s", kind)
            if symbol != topic_symbol:
                raise Malformed(f"{kind}: topic {topic!r} carries a trade of {symbol!r}")
            taker = field(t, "S", kind)
            side = _SIDES.get(taker) if isinstance(taker, str) else None
            if side is None:
                raise Malformed(f"{kind}: field 'S' is not Buy or Sell: {taker!r}")
            trade_id = field(t, "i", kind)
            if isinstance(trade_id, bool) or not isinstance(trade_id, (str, int)) or trade_id == "":
                raise Malformed(f"{kind}: field 'i' is not a trade id: {trade_id!r}")
            rows.append(
                dict(
                    instrument=symbol, event_ts=num(t, "T", kind) / 1e3, trade_id=str(trade_id),
                    price=num(t, "p", kind), size_coin=num(t, "v", kind), side=side,
                )
            )
        if not rows:
            b.ignored()
            return
        asset, quote_ccy = split_symbol(topic_symbol)
        for row in rows:
            b.add("trades", asset=asset, quote_ccy=quote_ccy, **row)

    # ---------------------------------------------------------------------------- orderbook
    def _orderbook(self, b: BatchBuilder, msg: dict, topic: str) -> None:
        kind = "orderbook"
        parts = topic.split(".")
        if len(parts) == 3 and parts[1] == "rpi":
            b.ignored()
            return
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
            raise Malformed(f"{kind}: topic {topic!r} is not orderbook.<depth>.<symbol>")
        depth, topic_symbol = parts[1], parts[2]
        kind_of = _message_type(msg, kind)
        data = _data_object(msg, kind)
        symbol = text(data, "s", kind)
        if symbol != topic_symbol:
            raise Malformed(f"{kind}: topic {topic!r} carries symbol {symbol!r}")
        update_id = integer(data, "u", kind)
        if not 0 <= update_id < 2**63:  # the sequence column is int64
            raise Malformed(f"{kind}: field 'u' is not an update id: {update_id!r}")
        event_ts = num(msg, "ts", kind) / 1e3
        bids, asks = levels(data, "b", kind), levels(data, "a", kind)
        rows = [("bid", level(e, kind)) for e in bids] + [("ask", level(e, kind)) for e in asks]
        key = (depth, symbol)
        snapshot = kind_of == "snapshot" or update_id == 1
        if snapshot:
            self.book_ids.reset(key)
            self.book_ids.check(key, update_id)
            self._resyncing.discard(topic)
        else:
            check = self.book_ids.check(key, update_id)
            if check.status == "stale":
                raise Malformed(
                    f"{kind}: stale update id {update_id} on {topic} (expected {check.expected})"
                )
            if check.status == "gap":
                b.gap(symbol, "sequence", event_ts, event_ts, check.missing,
                      f"{topic} update ids {check.expected}..{update_id - 1} missing")
                self._request_snapshot(topic)
            elif check.status == "first":
                b.gap(symbol, "book", event_ts, event_ts, -1,
                      f"{topic} delta u={update_id} before any snapshot: "
                      "book incomplete until the next snapshot")
                self._request_snapshot(topic)
        if not rows:
            b.ignored()  # an empty delta: the update id is recorded, no level changed
            return
        asset, _ = split_symbol(symbol)
        for side, (price, size) in rows:
            b.add(
                "book_updates", instrument=symbol, asset=asset, event_ts=event_ts, side=side,
                price=price, size_coin=size, is_snapshot=snapshot, sequence=update_id,
            )


    def _request_snapshot(self, topic: str) -> None:
        if topic in self._resyncing:
            return
        owner = next((p for p in self.protocols if p.owns(topic)), None)
        if owner is None:
            return
        owner.resubscribe(topic)
        self._resyncing.add(topic)
        self.resubscribes += 1


# ------------------------------------------------------------------------------ connection


class BybitProtocol(FeedProtocol):
    """Subscriptions and heartbeat for one Bybit v5 public connection.

    ``topics`` are channel names: ``"tickers"``, ``"publicTrade"`` or ``"orderbook.<depth>"``
    (e.g. ``"orderbook.50"``); each is subscribed for every symbol as ``<topic>.<SYMBOL>``.
    ``on_open()`` sends them in requests of at most ``MAX_ARGS_PER_REQUEST`` (10) args — the spot
    limit, applied to every category so one protocol fits both endpoints.

    ``resubscribe(topic)`` queues an unsubscribe and a subscribe of one topic (the adapter calls
    it after an orderbook gap: the new subscription starts with a snapshot); the source sends it
    from ``outgoing()``.

    Bybit needs an application-level ping, ``{"op":"ping"}``, every ``PING_INTERVAL_S`` (20) s, or
    it may drop the connection. ``FeedProtocol`` has no timer hook yet: the websocket source must
    send ``ping_message()`` every ``PING_INTERVAL_S`` seconds itself. The pong it gets back is a
    control message for the adapter. ``on_message`` sends nothing; it records the ``ret_msg`` of
    any refused request (``"success":false``) in ``errors`` so the source can log it.
    """

    exchange = EXCHANGE
    MAX_ARGS_PER_REQUEST = 10
    MAX_ARGS_CHARS = 21_000
    PING_INTERVAL_S = 20.0

    def __init__(
        self,
        url: str,
        symbols: tuple[str, ...] | list[str] = ("BTCUSDT", "ETHUSDT"),
        topics: tuple[str, ...] | list[str] = ("tickers", "publicTrade"),
    ) -> None:
        super().__init__(url)
        if isinstance(symbols, str) or isinstance(topics, str):
            raise ValueError("symbols and topics are sequences of strings, not one string")
        if not symbols or any(not isinstance(s, str) or not s.strip() for s in symbols):
            raise ValueError(
                f"symbols must be non-empty strings such as 'BTCUSDT', got {symbols!r}"
            )
        if not topics:
            raise ValueError(
                "topics must name at least one of tickers, publicTrade, orderbook.<depth>"
            )
        for t in topics:
            if not (t in ("tickers", "publicTrade") or _is_orderbook_topic(t)):
                raise ValueError(
                    f"unknown topic {t!r}: use tickers, publicTrade or orderbook.<depth> "
                    "(e.g. orderbook.50)"
                )
        self.symbols = tuple(s.strip().upper() for s in symbols)
        self.topics = tuple(topics)
        self.args = [f"{t}.{s}" for s in self.symbols for t in self.topics]
        if len(orjson.dumps(self.args)) > self.MAX_ARGS_CHARS:
            raise ValueError(
                f"{len(self.args)} topics exceed Bybit's {self.MAX_ARGS_CHARS} characters of args "
                "per public connection: split them over several connections"
            )
        self.errors: list[str] = []
        self._next_id = 1

    def owns(self, topic: str) -> bool:
        return topic in self.args

    def resubscribe(self, topic: str) -> None:
        """Ask again for ``topic`` (a book after a gap: the new subscription starts with a
        snapshot)."""
        if topic not in self.args:
            self.args.append(topic)
        n, self._next_id = self._next_id, self._next_id + 1
        self.queue(orjson.dumps(
            {"op": "unsubscribe", "args": [topic], "req_id": f"resub-{n}"}
        ).decode())
        self.queue(subscribe_message([topic], f"resub-{n}"))

    def on_open(self) -> list[str]:
        n = self.MAX_ARGS_PER_REQUEST
        return [
            subscribe_message(self.args[i:i + n], f"sub-{i // n + 1}")
            for i in range(0, len(self.args), n)
        ]

    def on_message(self, raw: str) -> list[str]:
        if '"success":false' in raw or '"success": false' in raw:
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return []
            if isinstance(msg, dict) and msg.get("success") is False:
                self.errors.append(str(msg.get("ret_msg", "")) or raw)
        return []

    @staticmethod
    def ping_message() -> str:
        return '{"op":"ping"}'


def _is_orderbook_topic(topic: object) -> bool:
    return isinstance(topic, str) and topic.startswith("orderbook.") and topic[10:].isdigit()


def subscribe_message(args: list[str], req_id: str | None = None) -> str:
    """The subscribe request for ``args`` (e.g. ``["tickers.BTCUSDT"]``)."""
    request: dict = {"op": "subscribe", "args": list(args)}
    if req_id is not None:
        request["req_id"] = req_id
    return orjson.dumps(request).decode()
