"""What every exchange adapter shares: a batch builder with per-message verdicts, and strict
field readers.

An adapter reads a ``RawBatch`` message by message inside ``builder.message(receive_ts, raw)``.
Inside it, the adapter either adds rows (``builder.add("trades", ...)``), or calls
``builder.control()`` or ``builder.ignored()``, or raises ``Malformed("reason")``. The builder
guarantees the accounting: a message that raises anything is rolled back (none of its rows
survive) and quarantined with the reason and its raw text, so nothing escapes an adapter and
nothing is half-stored. ``builder.build()`` returns the ``NormalizedBatch``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from models.records import DATA_BATCHES, Gap, NormalizedBatch, QuarantineRecord


class Malformed(Exception):
    """A message an adapter cannot turn into records; the text is the quarantine reason."""


class BatchBuilder:
    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self._cols: dict[str, dict[str, list]] = {
            name: {col: [] for col in cls.COLUMNS} for name, cls in DATA_BATCHES.items()
        }
        self._quarantine: list[QuarantineRecord] = []
        self._gaps: list[Gap] = []
        self.n_messages = 0
        self.n_control = 0
        self.n_ignored = 0
        self.receive_ts = float("nan")
        self.raw = ""
        self._marks = (0, 0, 0)

    def message(self, receive_ts: float, raw: str) -> BatchBuilder:
        """Enter a message: ``with builder.message(ts, raw): ...``. Cheap on purpose (it runs once
        per message): the rollback finds the message's rows by their ``msg_index`` at the tail of
        each column instead of recording marks up front."""
        self.n_messages += 1
        self.receive_ts, self.raw = receive_ts, raw
        self._marks = (len(self._gaps), self.n_control, self.n_ignored)
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        if not isinstance(exc, Exception):
            return False  # KeyboardInterrupt, SystemExit, cancellation: not the message's fault
        current = self.n_messages - 1
        for cols in self._cols.values():
            index = cols["msg_index"]
            while index and index[-1] == current:
                for column in cols.values():
                    column.pop()
        gaps_mark, self.n_control, self.n_ignored = self._marks
        del self._gaps[gaps_mark:]
        reason = str(exc) if isinstance(exc, Malformed) else f"adapter error: {exc!r}"
        self._quarantine.append(
            QuarantineRecord(self.exchange, self.receive_ts, f"{self.exchange} {reason}", self.raw)
        )
        return True  # an adapter never raises: the message is kept, in quarantine

    # ---------------------------------------------------------------- verdicts and rows
    def control(self) -> None:
        self.n_control += 1

    def ignored(self) -> None:
        self.n_ignored += 1

    def _columns_for(self, table: str, values: dict) -> dict[str, list]:
        """Fill in the bookkeeping columns of the current message; check every column is there."""
        cols = self._cols[table]
        values.setdefault("receive_ts", self.receive_ts)
        values["exchange"] = self.exchange
        values["raw"] = self.raw
        values["msg_index"] = self.n_messages - 1
        values["out_of_order"] = False
        if values.keys() != cols.keys():
            missing = sorted(set(cols) - set(values))
            extra = sorted(set(values) - set(cols))
            raise TypeError(f"{table} row: missing {missing}, unknown {extra}")
        return cols

    def add(self, table: str, **values: Any) -> None:
        """One row of ``table`` for the current message; exchange, receive_ts, raw, msg_index and
        out_of_order are filled in. Every other column of the table must be given."""
        cols = self._columns_for(table, values)
        for name, value in values.items():
            cols[name].append(value)

    def add_many(self, table: str, n: int, **values: Any) -> None:
        """``n`` rows of ``table`` at once: each value is a list of ``n`` or one scalar shared by
        all rows (a book message's levels share instrument and times). Same columns as ``add``."""
        if n == 0:
            return
        cols = self._columns_for(table, values)
        for name, value in values.items():
            if isinstance(value, list) and len(value) != n:
                raise TypeError(f"{table} rows: column {name} has {len(value)} values, not {n}")
        for name, value in values.items():
            cols[name].extend(value if isinstance(value, list) else [value] * n)

    def gap(self, instrument: str, kind: str, start_ts: float, end_ts: float, missing: int,
            detail: str) -> None:
        self._gaps.append(Gap(self.exchange, instrument, kind, start_ts, end_ts, missing, detail))

    def build(self) -> NormalizedBatch:
        batches = {
            name: DATA_BATCHES[name].from_columns(**cols) for name, cols in self._cols.items()
        }
        return NormalizedBatch(
            exchange=self.exchange,
            n_messages=self.n_messages,
            quarantine=tuple(self._quarantine),
            n_control=self.n_control,
            n_ignored=self.n_ignored,
            gaps=tuple(self._gaps),
            **batches,
        )


# -------------------------------------------------------------------- field readers


def json_object(raw: str) -> dict:
    """The JSON object a message holds, or Malformed saying why it is not one."""
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"invalid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise Malformed(f"expected a JSON object, got {type(msg).__name__}")
    return msg


def field(data: dict, key: str, kind: str) -> Any:
    """``data[key]``, or Malformed naming the missing field."""
    try:
        return data[key]
    except (KeyError, TypeError):
        raise Malformed(f"{kind}: missing field '{key}'") from None


def num(data: dict, key: str, kind: str) -> float:
    """A required number, given as a JSON number or a decimal string (never a boolean)."""
    value = field(data, key, kind)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise Malformed(f"{kind}: field '{key}' is not a number: {value!r}")
    try:
        return float(value)
    except (ValueError, OverflowError):
        raise Malformed(f"{kind}: field '{key}' is not a number: {value!r}") from None


def opt_num(data: dict, key: str, kind: str) -> float:
    """An optional number: NaN when absent, null or empty; Malformed when present but not a number."""
    if not isinstance(data, dict) or data.get(key) in (None, ""):
        return math.nan
    return num(data, key, kind)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def integer(data: dict, key: str, kind: str) -> int:
    """A required integer (sequence numbers, ids) within int64, as the tables store them; decimal
    strings of integers are accepted."""
    value = field(data, key, kind)
    if isinstance(value, bool):
        raise Malformed(f"{kind}: field '{key}' is not an integer: {value!r}")
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            pass
    if not isinstance(value, int):
        raise Malformed(f"{kind}: field '{key}' is not an integer: {value!r}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise Malformed(f"{kind}: field '{key}' is out of the 64-bit integer range: {value!r}")
    return value


def text(data: dict, key: str, kind: str) -> str:
    value = field(data, key, kind)
    if not isinstance(value, str) or not value:
        raise Malformed(f"{kind}: field '{key}' is not a non-empty string: {value!r}")
    return value


def levels(data: dict, key: str, kind: str) -> list:
    """A list of [price, size, ...] levels."""
    value = field(data, key, kind)
    if not isinstance(value, list):
        raise Malformed(f"{kind}: field '{key}' is not a list of levels: {value!r}")
    return value


def level(entry: Any, kind: str) -> tuple[float, float]:
    """(price, size) of one [price, size, ...] level given as strings or numbers."""
    if not isinstance(entry, (list, tuple)) or len(entry) < 2:
        raise Malformed(f"{kind}: a book level is not [price, size]: {entry!r}")
    out = []
    for v in entry[:2]:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise Malformed(f"{kind}: a book level is not [price, size]: {entry!r}")
        try:
            out.append(float(v))
        except ValueError:
            raise Malformed(f"{kind}: a book level is not [price, size]: {entry!r}") from None
    return out[0], out[1]


_NUMBER_TYPES = frozenset({str, int, float})
_LEVEL_TYPES = frozenset({list, tuple})


def parse_levels(entries: Any, kind: str) -> tuple[list[float], list[float]]:
    """Prices and sizes of a list of [price, size, ...] levels, fast: one pass to convert, one to
    check the JSON types (a boolean would convert silently to 1.0), and the precise per-level error
    only when something is wrong."""
    if not isinstance(entries, list):
        raise Malformed(f"{kind}: book levels are not a list: {entries!r}")
    try:
        prices = [float(e[0]) for e in entries]
        sizes = [float(e[1]) for e in entries]
        # A level given as a string ("12") indexes into characters; as a dict, by key.
        if {type(e) for e in entries} <= _LEVEL_TYPES and (
            {type(e[0]) for e in entries} | {type(e[1]) for e in entries} <= _NUMBER_TYPES
        ):
            return prices, sizes
    except (TypeError, ValueError, IndexError, KeyError, OverflowError):
        pass
    for e in entries:
        level(e, kind)  # raises the precise reason
    raise Malformed(f"{kind}: book levels are not [price, size] pairs")


def iso_to_epoch(value: Any, kind: str) -> float:
    """ISO-8601 UTC time (Coinbase ``2021-04-17T02:30:10.123456Z``, nanoseconds allowed) → epoch s."""
    from datetime import datetime

    if not isinstance(value, str) or len(value) < 20:
        raise Malformed(f"{kind}: time is not an ISO-8601 string: {value!r}")
    s = value.rstrip("Z")
    frac = ""
    if "." in s:
        s, frac = s.split(".", 1)
    try:
        whole = datetime.fromisoformat(s + "+00:00").timestamp()
    except ValueError:
        raise Malformed(f"{kind}: time is not an ISO-8601 string: {value!r}") from None
    if frac and not frac.isdigit():
        raise Malformed(f"{kind}: time is not an ISO-8601 string: {value!r}")
    return whole + (float("0." + frac) if frac else 0.0)


# -------------------------------------------------------------------- connection protocol


class FeedProtocol:
    """How a ``WebsocketSource`` talks to one exchange over one connection.

    The source calls ``url()`` to connect, sends ``on_open()``'s requests after every (re)connect
    (so a reconnect re-subscribes), answers each received message with ``on_message(raw)``'s
    replies (heartbeats such as Deribit's ``test_request``), and sends whatever ``outgoing()``
    returns (requests queued by the adapter, e.g. a re-subscribe after a book gap). The defaults
    send nothing; exchanges override what they need. ``on_message`` runs for every message, so it
    must be cheap: test a substring before parsing.
    """

    exchange: str = ""
    #: send ``ping_message()`` this often (seconds); None: the exchange needs no keep-alive.
    ping_interval_s: float | None = None

    def __init__(self, url: str) -> None:
        self._url = url
        self._queue: list[str] = []

    def url(self) -> str:
        return self._url

    def on_open(self) -> list[str]:
        return []

    def on_message(self, raw: str) -> list[str]:
        return []

    def ping_message(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} sets ping_interval_s but no ping_message")

    def queue(self, request: str) -> None:
        self._queue.append(request)

    def outgoing(self) -> list[str]:
        out, self._queue = self._queue, []
        return out
