"""Binance spot websocket streams → normalized batches.

Wire format (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams):
combined streams wrap each event as ``{"stream": "<symbol>@<channel>", "data": {...}}``; raw streams
send the event alone. Prices and quantities are decimal strings. Channels used here:

- ``bookTicker``: ``{"u": update id, "s": symbol, "b": bid, "B": bid qty, "a": ask, "A": ask qty}``.
  Spot bookTicker carries no event time, so its event time is the receive time.
- ``aggTrade``: ``{"e": "aggTrade", "E": event ms, "s", "a": agg id, "p", "q", "f", "l", "T": trade
  ms, "m": buyer is maker}``; ``trade`` is the same with ``t`` as the trade id.

``m`` true means the buyer was the resting order, so the taker sold: side "sell".
Subscription answers (``{"result": null, "id": 1}``) and errors (``{"error": {...}, "id": 1}``) are
control messages. Depth and kline channels are counted as ignored until the book issue uses them.
Nothing raises out of ``normalize``: a message it cannot read is quarantined with the reason.
"""

from __future__ import annotations

import orjson

from dataflows.adapters.symbols import split_symbol
from models.records import NormalizedBatch, QuarantineRecord, QuoteBatch, RawBatch, TradeBatch

EXCHANGE = "binance"

_IGNORED_EVENTS = frozenset({"depthUpdate", "kline", "24hrTicker", "24hrMiniTicker", "avgPrice"})
_IGNORED_CHANNEL_PREFIXES = ("depth", "kline", "ticker", "miniTicker", "avgPrice", "rollingWindow")


class _Malformed(Exception):
    """A message this adapter cannot turn into a record; the text is the quarantine reason."""


def _num(data: dict, key: str, kind: str) -> float:
    try:
        value = data[key]
    except KeyError:
        raise _Malformed(f"{kind}: missing field '{key}'") from None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Malformed(f"{kind}: field '{key}' is not a number: {value!r}")
    try:
        return float(value)
    except ValueError:
        raise _Malformed(f"{kind}: field '{key}' is not a number: {value!r}") from None


def _field(data: dict, key: str, kind: str):
    try:
        return data[key]
    except KeyError:
        raise _Malformed(f"{kind}: missing field '{key}'") from None


def _channel(msg: dict) -> tuple[str, dict]:
    """(channel kind, event payload) for combined or raw stream messages."""
    if "stream" in msg and "data" in msg:
        stream, data = msg["stream"], msg["data"]
        if not isinstance(stream, str) or not isinstance(data, dict):
            raise _Malformed("combined stream message without a stream name or a data object")
        channel = stream.split("@", 1)[1] if "@" in stream else stream
        if channel == "bookTicker" or channel == "aggTrade" or channel == "trade":
            return channel, data
        return "ignored" if channel.startswith(_IGNORED_CHANNEL_PREFIXES) else "unknown", data
    if "id" in msg and ("result" in msg or "error" in msg):
        return "control", msg
    event = msg.get("e")
    if event in ("aggTrade", "trade"):
        return event, msg
    if event in _IGNORED_EVENTS:
        return "ignored", msg
    if event is None and {"u", "s", "b", "a"} <= msg.keys():
        return "bookTicker", msg
    return "unknown", msg


def normalize(batch: RawBatch) -> NormalizedBatch:
    """Classify every message of ``batch`` and build columnar trades and quotes."""
    q_cols: dict[str, list] = {k: [] for k in QuoteBatch.COLUMNS}
    t_cols: dict[str, list] = {k: [] for k in TradeBatch.COLUMNS}
    quarantine: list[QuarantineRecord] = []
    n_control = n_ignored = 0
    exchange = batch.exchange or EXCHANGE

    for receive_ts, text in zip(batch.receive_ts.tolist(), batch.messages):
        try:
            try:
                msg = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise _Malformed(f"invalid JSON: {exc}") from None
            if not isinstance(msg, dict):
                raise _Malformed(f"expected a JSON object, got {type(msg).__name__}")
            kind, data = _channel(msg)
            if kind == "control":
                n_control += 1
            elif kind == "ignored":
                n_ignored += 1
            elif kind == "bookTicker":
                symbol = str(_field(data, "s", kind))
                bid, bid_qty = _num(data, "b", kind), _num(data, "B", kind)
                ask, ask_qty = _num(data, "a", kind), _num(data, "A", kind)
                asset, quote_ccy = split_symbol(symbol)
                for col, v in (
                    ("instrument", symbol), ("asset", asset), ("quote_ccy", quote_ccy),
                    ("event_ts", receive_ts), ("receive_ts", receive_ts), ("bid", bid),
                    ("bid_size_coin", bid_qty), ("ask", ask), ("ask_size_coin", ask_qty),
                    ("raw", text),
                ):
                    q_cols[col].append(v)
            elif kind in ("aggTrade", "trade"):
                symbol = str(_field(data, "s", kind))
                trade_id = _field(data, "a" if kind == "aggTrade" else "t", kind)
                price, qty = _num(data, "p", kind), _num(data, "q", kind)
                trade_ms = _num(data, "T", kind)
                maker = _field(data, "m", kind)
                if not isinstance(maker, bool):
                    raise _Malformed(f"{kind}: field 'm' is not a boolean: {maker!r}")
                asset, quote_ccy = split_symbol(symbol)
                for col, v in (
                    ("instrument", symbol), ("asset", asset), ("quote_ccy", quote_ccy),
                    ("event_ts", trade_ms / 1000.0), ("receive_ts", receive_ts),
                    ("trade_id", str(trade_id)), ("price", price), ("size_coin", qty),
                    ("side", "sell" if maker else "buy"), ("raw", text),
                ):
                    t_cols[col].append(v)
            else:
                raise _Malformed("unrecognized message: not a stream event hedgeflow knows")
        except _Malformed as exc:
            quarantine.append(QuarantineRecord(exchange, receive_ts, f"binance {exc}", text))
        except Exception as exc:  # noqa: BLE001 - an adapter never raises: the message is kept
            quarantine.append(
                QuarantineRecord(exchange, receive_ts, f"binance adapter error: {exc!r}", text)
            )

    q_cols["exchange"] = [exchange] * len(q_cols["raw"])
    t_cols["exchange"] = [exchange] * len(t_cols["raw"])
    return NormalizedBatch(
        exchange=exchange,
        n_messages=len(batch),
        trades=TradeBatch.from_columns(**t_cols),
        quotes=QuoteBatch.from_columns(**q_cols),
        quarantine=tuple(quarantine),
        n_control=n_control,
        n_ignored=n_ignored,
    )


def subscribe_message(streams: list[str], request_id: int = 1) -> str:
    """The SUBSCRIBE request for ``streams`` (e.g. ``["btcusdt@bookTicker"]``)."""
    return orjson.dumps({"method": "SUBSCRIBE", "params": list(streams), "id": request_id}).decode()


def combined_stream_url(base_url: str, streams: list[str]) -> str:
    """``wss://host:port`` + streams → the combined-stream URL Binance serves."""
    return f"{base_url.rstrip('/')}/stream?streams={'/'.join(streams)}"


def default_streams(symbols: list[str]) -> list[str]:
    return [f"{s.lower()}@{ch}" for s in symbols for ch in ("bookTicker", "aggTrade")]


