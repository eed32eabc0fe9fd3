"""Typed records and their columnar batches.

Ticks travel through the graph as columnar batches (one numpy array per field), never as one
object per tick: a batch of 1,000 quotes costs one hop through a streamz node, not 1,000.
The single-row dataclasses exist for code that handles few rows (alerts, oracle prices, tests)
and for documentation of each field's meaning and unit.

Conventions (DESIGN.md, principle 6):
- times are UTC epoch seconds as float64 (``event_ts`` from the exchange, ``receive_ts`` from our
  clock when the message arrived);
- prices are in the instrument's quote currency, which for the USD-like quotes hedgeflow
  aggregates (USD, USDT, USDC) is named ``_usd``; sizes are in the base asset (coin).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

SIDES = ("buy", "sell")
ORACLE_STATUSES = ("ok", "degraded", "halted")


# --------------------------------------------------------------------------- single records


@dataclass(frozen=True, slots=True)
class Trade:
    """One executed trade. ``side`` is the taker's side ("buy" or "sell")."""

    exchange: str
    instrument: str
    asset: str
    quote_ccy: str
    event_ts: float
    receive_ts: float
    trade_id: str
    price: float
    size_coin: float
    side: str


@dataclass(frozen=True, slots=True)
class Quote:
    """Top of book: best bid and ask with their sizes (coin)."""

    exchange: str
    instrument: str
    asset: str
    quote_ccy: str
    event_ts: float
    receive_ts: float
    bid: float
    bid_size_coin: float
    ask: float
    ask_size_coin: float

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask)


@dataclass(frozen=True, slots=True)
class OptionTicker:
    """An option's ticker. Premiums in coin (Deribit inverse options); IVs as annual fractions."""

    exchange: str
    instrument: str
    asset: str
    event_ts: float
    receive_ts: float
    expiry_utc: float
    strike_usd: float
    is_call: bool
    bid_coin: float
    ask_coin: float
    mark_coin: float
    mark_iv: float
    bid_iv: float
    ask_iv: float
    underlying_usd: float
    index_usd: float
    open_interest: float


@dataclass(frozen=True, slots=True)
class Funding:
    """A perpetual's funding state. ``funding_rate`` is per funding interval, as a fraction."""

    exchange: str
    instrument: str
    asset: str
    event_ts: float
    receive_ts: float
    mark_usd: float
    index_usd: float
    funding_rate: float
    next_funding_ts: float


@dataclass(frozen=True, slots=True)
class OraclePrice:
    """One aggregated price.

    ``confidence_usd`` is a Pyth-style half-width in USD: the true price is believed to lie in
    ``price_usd ± confidence_usd``. ``status`` is "ok" only when the price is fit to publish.
    """

    asset: str
    ts: float
    price_usd: float
    confidence_usd: float
    n_sources: int
    status: str
    reason: str = ""
    sources: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator should see: a breaker, a rejected source, a stale feed."""

    ts: float
    kind: str
    severity: str  # "info" | "warning" | "critical"
    message: str
    subject: str = ""


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    """A message the graph refused, with the reason and the raw text as received."""

    exchange: str
    receive_ts: float
    reason: str
    raw: str


# --------------------------------------------------------------------------- columnar batches


@dataclass(frozen=True)
class Batch:
    """Base of columnar batches: every field is a 1-D numpy array of the same length.

    Subclasses list their columns and numpy dtypes in ``COLUMNS``. String columns are object
    arrays. ``raw`` (object) keeps the message each row came from so a row refused downstream can
    still be quarantined with its original text.
    """

    COLUMNS: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        lengths = {name: len(getattr(self, name)) for name in self.COLUMNS}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{type(self).__name__}: columns differ in length: {lengths}")

    def __len__(self) -> int:
        first = next(iter(self.COLUMNS))
        return len(getattr(self, first))

    @classmethod
    def empty(cls):
        return cls(**{name: np.empty(0, dtype=dt) for name, dt in cls.COLUMNS.items()})

    @classmethod
    def from_columns(cls, **columns):
        """Build from lists or arrays, casting each to its declared dtype."""
        missing = set(cls.COLUMNS) - set(columns)
        if missing:
            raise ValueError(f"{cls.__name__}: missing columns {sorted(missing)}")
        return cls(**{name: np.asarray(columns[name], dtype=dt) for name, dt in cls.COLUMNS.items()})

    @classmethod
    def concat(cls, batches):
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        return cls(
            **{name: np.concatenate([getattr(b, name) for b in batches]) for name in cls.COLUMNS}
        )

    def take(self, index):
        """Rows selected by a boolean mask or an integer index array."""
        return type(self)(**{name: getattr(self, name)[index] for name in self.COLUMNS})

    def column_dict(self, exclude: tuple[str, ...] = ("raw",)) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.COLUMNS if name not in exclude}


def _columns(record_cls, extra: dict[str, str]) -> dict[str, str]:
    kinds = {str: "object", float: "float64", int: "int64", bool: "bool"}
    hints = {"str": str, "float": float, "int": int, "bool": bool}
    cols = {f.name: kinds[hints[f.type]] for f in fields(record_cls)}
    cols.update(extra)
    return cols


@dataclass(frozen=True)
class TradeBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(Trade, {"raw": "object"})
    exchange: np.ndarray = field(default=None)
    instrument: np.ndarray = field(default=None)
    asset: np.ndarray = field(default=None)
    quote_ccy: np.ndarray = field(default=None)
    event_ts: np.ndarray = field(default=None)
    receive_ts: np.ndarray = field(default=None)
    trade_id: np.ndarray = field(default=None)
    price: np.ndarray = field(default=None)
    size_coin: np.ndarray = field(default=None)
    side: np.ndarray = field(default=None)
    raw: np.ndarray = field(default=None)


@dataclass(frozen=True)
class QuoteBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(Quote, {"raw": "object"})
    exchange: np.ndarray = field(default=None)
    instrument: np.ndarray = field(default=None)
    asset: np.ndarray = field(default=None)
    quote_ccy: np.ndarray = field(default=None)
    event_ts: np.ndarray = field(default=None)
    receive_ts: np.ndarray = field(default=None)
    bid: np.ndarray = field(default=None)
    bid_size_coin: np.ndarray = field(default=None)
    ask: np.ndarray = field(default=None)
    ask_size_coin: np.ndarray = field(default=None)
    raw: np.ndarray = field(default=None)

    @property
    def mid(self) -> np.ndarray:
        return 0.5 * (self.bid + self.ask)


@dataclass(frozen=True)
class OptionTickerBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(OptionTicker, {"raw": "object"})
    exchange: np.ndarray = field(default=None)
    instrument: np.ndarray = field(default=None)
    asset: np.ndarray = field(default=None)
    event_ts: np.ndarray = field(default=None)
    receive_ts: np.ndarray = field(default=None)
    expiry_utc: np.ndarray = field(default=None)
    strike_usd: np.ndarray = field(default=None)
    is_call: np.ndarray = field(default=None)
    bid_coin: np.ndarray = field(default=None)
    ask_coin: np.ndarray = field(default=None)
    mark_coin: np.ndarray = field(default=None)
    mark_iv: np.ndarray = field(default=None)
    bid_iv: np.ndarray = field(default=None)
    ask_iv: np.ndarray = field(default=None)
    underlying_usd: np.ndarray = field(default=None)
    index_usd: np.ndarray = field(default=None)
    open_interest: np.ndarray = field(default=None)
    raw: np.ndarray = field(default=None)


@dataclass(frozen=True)
class FundingBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(Funding, {"raw": "object"})
    exchange: np.ndarray = field(default=None)
    instrument: np.ndarray = field(default=None)
    asset: np.ndarray = field(default=None)
    event_ts: np.ndarray = field(default=None)
    receive_ts: np.ndarray = field(default=None)
    mark_usd: np.ndarray = field(default=None)
    index_usd: np.ndarray = field(default=None)
    funding_rate: np.ndarray = field(default=None)
    next_funding_ts: np.ndarray = field(default=None)
    raw: np.ndarray = field(default=None)


# USD-like quote currencies hedgeflow treats as USD unless configured otherwise (DESIGN, feeds issue).
USD_LIKE = frozenset({"USD", "USDT", "USDC"})


@dataclass(frozen=True)
class RawBatch:
    """Messages as received from one connection: text frames and their receive times (UTC s)."""

    exchange: str
    receive_ts: np.ndarray
    messages: list[str]

    def __post_init__(self) -> None:
        if len(self.receive_ts) != len(self.messages):
            raise ValueError("RawBatch: receive_ts and messages differ in length")

    def __len__(self) -> int:
        return len(self.messages)


@dataclass(frozen=True)
class NormalizedBatch:
    """What an adapter made of a RawBatch.

    Every message of the raw batch is in exactly one of: a row of ``trades`` or ``quotes`` (one
    message may give several rows on some exchanges; ``data_messages`` counts messages), ``control``
    (acks, heartbeats, status), ``ignored`` (channels hedgeflow does not use yet) or
    ``quarantine`` (malformed, with the reason).
    """

    exchange: str
    n_messages: int
    trades: TradeBatch
    quotes: QuoteBatch
    quarantine: tuple[QuarantineRecord, ...]
    n_control: int
    n_ignored: int

    @property
    def data_messages(self) -> int:
        return self.n_messages - self.n_control - self.n_ignored - len(self.quarantine)
