"""Binance websocket streams → normalized batches.

Wire format (developers.binance.com, "WebSocket Streams" for spot and USD-M futures): combined
streams wrap each event as ``{"stream": "<symbol>@<channel>", "data": {...}}``; raw streams send
the event alone. Prices and quantities are decimal strings; times are milliseconds. Channels:

- ``bookTicker``: ``{"u": update id, "s", "b": bid, "B": bid qty, "a": ask, "A": ask qty}``. Spot
  bookTicker has no event time, so its event time is the receive time (futures adds ``E``).
- ``aggTrade``: ``{"e": "aggTrade", "E", "s", "a": agg id, "p", "q", "f", "l", "T": trade ms,
  "m": buyer is maker}``; ``trade`` is the same with ``t`` as the trade id. ``m`` true means the
  buyer was the resting order, so the taker sold: side "sell".
- ``depth@100ms`` / ``depthUpdate`` diffs: ``{"e": "depthUpdate", "E", "s", "U": first id,
  "u": last id, "b": [[price, qty]], "a": [...]}``; qty "0" removes a level. Each event must start
  at the previous event's ``u`` + 1: a skip is a sequence gap (a row in ``gaps``), a repeat
  (``u`` at or before the last) is quarantined as stale.
- USD-M futures ``markPrice``: ``{"e": "markPriceUpdate", "E", "s", "p": mark, "i": index,
  "P": estimated settle, "r": funding rate, "T": next funding ms}`` → ``funding``.

Subscription answers (``{"result": null, "id": 1}``) and errors (``{"error": {...}, "id": 1}`` or
``{"code": ..., "msg": ..., "id": ...}``) are control messages. Klines and tickers are ignored.
"""

from __future__ import annotations

import orjson

from dataflows.adapters.base import (
    json_object,
    BatchBuilder,
    Malformed,
    field,
    integer,
    num,
    parse_levels,
    text,
)
from dataflows.adapters.symbols import split_symbol
from models.records import NormalizedBatch, RawBatch
from models.sequence import SequenceTracker

EXCHANGE = "binance"

_DATA_CHANNELS = ("bookTicker", "aggTrade", "trade", "depth", "markPrice")
_IGNORED_PREFIXES = ("kline", "ticker", "miniTicker", "avgPrice", "rollingWindow", "forceOrder")
_IGNORED_EVENTS = frozenset({"kline", "24hrTicker", "24hrMiniTicker", "avgPrice", "forceOrder"})
_EVENT_CHANNEL = {
    "aggTrade": "aggTrade", "trade": "trade", "depthUpdate": "depth",
    "markPriceUpdate": "markPrice",
}


def _channel(msg: dict) -> tuple[str, dict]:
    """(channel, event payload) for combined or raw stream messages."""
    if "stream" in msg and "data" in msg:
        stream, data = msg["stream"], msg["data"]
        if not isinstance(stream, str) or not isinstance(data, dict):
            raise Malformed("combined stream message without a stream name or a data object")
        channel = stream.split("@", 2)[1] if "@" in stream else stream
        if channel in _DATA_CHANNELS:
            return channel, data
        if channel.startswith(_IGNORED_PREFIXES):
            return "ignored", data
        raise Malformed(f"unknown stream {stream!r}")
    if "id" in msg and ("result" in msg or "error" in msg or "code" in msg):
        return "control", msg
    event = msg.get("e")
    if not isinstance(event, (str, type(None))):
        raise Malformed(f"field 'e' is not an event name: {event!r}")
    if event in _EVENT_CHANNEL:
        return _EVENT_CHANNEL[event], msg
    if event in _IGNORED_EVENTS:
        return "ignored", msg
    if event is None and {"u", "s", "b", "a"} <= msg.keys():
        return "bookTicker", msg
    raise Malformed("unrecognized message: not a stream event hedgeflow knows")


class BinanceAdapter:
    exchange = EXCHANGE

    def __init__(self) -> None:
        self.depth_ids = SequenceTracker()

    def normalize(self, batch: RawBatch) -> NormalizedBatch:
        b = BatchBuilder(batch.exchange or EXCHANGE)
        for receive_ts, raw in zip(batch.receive_ts.tolist(), batch.messages):
            with b.message(receive_ts, raw):
                msg = json_object(raw)
                channel, data = _channel(msg)
                if channel == "control":
                    b.control()
                elif channel == "ignored":
                    b.ignored()
                elif channel == "bookTicker":
                    self._book_ticker(b, data, receive_ts)
                elif channel in ("aggTrade", "trade"):
                    self._trade(b, data, channel)
                elif channel == "depth":
                    self._depth(b, data, receive_ts)
                else:
                    self._mark_price(b, data)
        return b.build()

    @staticmethod
    def _book_ticker(b: BatchBuilder, data: dict, receive_ts: float) -> None:
        kind = "bookTicker"
        symbol = text(data, "s", kind)
        asset, quote_ccy = split_symbol(symbol)
        event_ms = data.get("E")
        b.add(
            "quotes", instrument=symbol, asset=asset, quote_ccy=quote_ccy,
            event_ts=num(data, "E", kind) / 1e3 if event_ms is not None else receive_ts,
            bid=num(data, "b", kind), bid_size_coin=num(data, "B", kind),
            ask=num(data, "a", kind), ask_size_coin=num(data, "A", kind),
        )

    @staticmethod
    def _trade(b: BatchBuilder, data: dict, kind: str) -> None:
        symbol = text(data, "s", kind)
        trade_id = integer(data, "a" if kind == "aggTrade" else "t", kind)
        maker = field(data, "m", kind)
        if not isinstance(maker, bool):
            raise Malformed(f"{kind}: field 'm' is not a boolean: {maker!r}")
        asset, quote_ccy = split_symbol(symbol)
        b.add(
            "trades", instrument=symbol, asset=asset, quote_ccy=quote_ccy,
            event_ts=num(data, "T", kind) / 1e3, trade_id=str(trade_id),
            price=num(data, "p", kind), size_coin=num(data, "q", kind),
            side="sell" if maker else "buy",
        )

    def _depth(self, b: BatchBuilder, data: dict, receive_ts: float) -> None:
        kind = "depthUpdate"
        symbol = text(data, "s", kind)
        first, last = integer(data, "U", kind), integer(data, "u", kind)
        event_ts = num(data, "E", kind) / 1e3
        bid_px, bid_sz = parse_levels(field(data, "b", kind), kind)
        ask_px, ask_sz = parse_levels(field(data, "a", kind), kind)
        check = self.depth_ids.check(symbol, first, last)
        if check.status == "stale":
            raise Malformed(f"{kind}: stale update ids {first}..{last} (expected {check.expected})")
        if check.status == "gap":
            b.gap(symbol, "sequence", event_ts, event_ts, check.missing,
                  f"depth update ids {check.expected}..{first - 1} missing")
        asset, _ = split_symbol(symbol)
        b.add_many(
            "book_updates", len(bid_px) + len(ask_px), instrument=symbol, asset=asset,
            event_ts=event_ts, side=["bid"] * len(bid_px) + ["ask"] * len(ask_px),
            price=bid_px + ask_px, size_coin=bid_sz + ask_sz, is_snapshot=False, sequence=last,
        )

    @staticmethod
    def _mark_price(b: BatchBuilder, data: dict) -> None:
        kind = "markPriceUpdate"
        symbol = text(data, "s", kind)
        asset, _ = split_symbol(symbol)
        b.add(
            "funding", instrument=symbol, asset=asset, event_ts=num(data, "E", kind) / 1e3,
            mark_usd=num(data, "p", kind), index_usd=num(data, "i", kind),
            funding_rate=num(data, "r", kind), next_funding_ts=num(data, "T", kind) / 1e3,
        )


def subscribe_message(streams: list[str], request_id: int = 1) -> str:
    """The SUBSCRIBE request for ``streams`` (e.g. ``["btcusdt@bookTicker"]``)."""
    return orjson.dumps({"method": "SUBSCRIBE", "params": list(streams), "id": request_id}).decode()


def combined_stream_url(base_url: str, streams: list[str]) -> str:
    """``wss://host:port`` + streams → the combined-stream URL Binance serves."""
    return f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"


def default_streams(symbols: list[str]) -> list[str]:
    return [f"{s.lower()}@{ch}" for s in symbols for ch in ("bookTicker", "aggTrade")]
