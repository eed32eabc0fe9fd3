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
    """An option's ticker.

    Deribit conventions, kept as received: premiums in coin (inverse options; USD = coin × index),
    sizes in contracts of one coin, IVs converted from percent to annual fractions (0.55), greeks as
    Deribit publishes them (delta in coin per 1 of underlying, vega per 1% of vol in USD, theta per
    day in USD). ``expiry_utc`` is epoch seconds (Deribit expires at 08:00 UTC). NaN where the
    exchange gave no value (no bid, no IV).
    """

    exchange: str
    instrument: str
    asset: str
    event_ts: float
    receive_ts: float
    expiry_utc: float
    strike_usd: float
    is_call: bool
    bid_coin: float
    bid_size: float
    ask_coin: float
    ask_size: float
    mark_coin: float
    mark_iv: float
    bid_iv: float
    ask_iv: float
    underlying_usd: float
    index_usd: float
    open_interest: float
    delta: float
    gamma: float
    vega: float
    theta: float
    rho: float


@dataclass(frozen=True, slots=True)
class Funding:
    """A perpetual's funding state. ``funding_rate`` is per funding interval, as a fraction
    (0.0001 = 1 bp); ``next_funding_ts`` is NaN when the venue does not say (Deribit funds
    continuously)."""

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
class BookUpdate:
    """One price level of an order book. ``size_coin`` 0 removes the level. ``is_snapshot`` marks
    rows of a full snapshot (the book is replaced), others are incremental changes. ``sequence`` is
    the venue's update id / change id / sequence number for the message (-1 if none)."""

    exchange: str
    instrument: str
    asset: str
    event_ts: float
    receive_ts: float
    side: str  # "bid" | "ask"
    price: float
    size_coin: float
    is_snapshot: bool
    sequence: int


@dataclass(frozen=True, slots=True)
class IndexPrice:
    """A venue's published index (Deribit ``deribit_price_index.btc_usd``), USD."""

    exchange: str
    index_name: str
    asset: str
    event_ts: float
    receive_ts: float
    price_usd: float


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch of time or sequence where data may be missing.

    ``kind``: "sequence" (an update id skipped), "disconnect" (the connection dropped),
    "silence" (no message for longer than the watchdog allows), "book" (a book change whose
    previous id does not match). ``end_ts`` is when data resumed (NaN while open); ``missing`` is
    how many sequence numbers were skipped (-1 when unknown).
    """

    exchange: str
    instrument: str
    kind: str
    start_ts: float
    end_ts: float
    missing: int
    detail: str


@dataclass(frozen=True, slots=True)
class OraclePrice:
    """One aggregated price.

    ``confidence_usd`` is a Pyth-style half-width in USD: the true price is believed to lie in
    ``price_usd ± confidence_usd``. ``status`` is "ok" only when the price is fit to publish.
    ``sources`` are the sources the price was made from; ``rejected`` the sources left out, each as
    ``"<exchange:instrument>: <reason>"`` (stale, decimal error, jump, divergence, outlier).
    """

    asset: str
    ts: float
    price_usd: float
    confidence_usd: float
    n_sources: int
    status: str
    reason: str = ""
    sources: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    """A change in a feed connection's health: "connected", "disconnected" or "silent" (no message
    within the watchdog's limit). ``connection`` names the connection (its URL or a label)."""

    exchange: str
    connection: str
    kind: str
    ts: float
    detail: str = ""


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


# --------------------------------------------------------------------------- analytics


@dataclass(frozen=True, slots=True)
class VolatilityEstimate:
    """An asset's realized volatility over the trailing ``window_s`` seconds of oracle prices, at
    the close of a bar (``ts``, epoch s). Annualized fractions over 365 days; ``ready`` is False
    until the window holds enough bars to be trusted (the hedge engine waits for it)."""

    asset: str
    ts: float
    window_s: float
    n_returns: int
    vol_annual: float
    ewma_vol_annual: float
    ready: bool


@dataclass(frozen=True, slots=True)
class SurfaceRecord:
    """What one surface fit was, for storage and dashboards: its quality, its no-arbitrage check
    and its summary per expiry (``expiry_years``; ATM vol, 25-delta risk reversal and butterfly in
    annualized vol). ``params_json`` holds the fitted parameters, ``fit_ms`` the time it took."""

    asset: str
    ts: float
    method: str
    n_options: int
    n_expiries: int
    n_dropped: int
    rmse_vol: float
    within_spread_fraction: float
    arbitrage_ok: bool
    min_g: float
    fit_ms: float
    spot_usd: float
    expiry_years: tuple[float, ...]
    atm_vol_annual: tuple[float, ...]
    rr25_vol_annual: tuple[float, ...]
    bf25_vol_annual: tuple[float, ...]
    params_json: str


@dataclass(frozen=True, slots=True)
class PremiumQuoteRecord:
    """A protection price the graph published: a put on ``amount_coin`` of ``asset`` at
    ``strike_usd`` until ``expiry_utc`` (epoch s), priced at ``ts`` off the surface, with the
    factor breakdown that sums to ``premium_usd`` (models.premium)."""

    asset: str
    ts: float
    tier: str
    strike_usd: float
    expiry_utc: float
    amount_coin: float
    spot_usd: float
    forward_usd: float
    vol_strike_annual: float
    vol_atm_annual: float
    vol_reference_annual: float
    premium_usd: float
    intrinsic_usd: float
    time_value_usd: float
    volatility_usd: float
    skew_usd: float
    jump_usd: float
    margin_usd: float
    rounding_usd: float


@dataclass(frozen=True, slots=True)
class PolicyRiskRecord:
    """The seller's Monte Carlo view of one published premium quote (models.scenarios): ``n_paths``
    risk-neutral ``model`` paths ("merton": the premium calculator's jumps, with the diffusion vol
    that keeps the total variance at the quote's strike vol) from ``spot_usd`` to ``expiry_utc``; the expected payoff against the premium, the chance
    the put ends in the money (and ever touches the strike), and the seller's VaR and expected
    shortfall at ``confidence`` (losses as positive USD, for the whole ``amount_coin``)."""

    asset: str
    ts: float
    tier: str
    strike_usd: float
    expiry_utc: float
    amount_coin: float
    spot_usd: float
    premium_usd: float
    model: str
    n_paths: int
    expected_payoff_usd: float
    expected_payoff_stderr_usd: float
    probability_exercise: float
    probability_touch: float
    seller_var_usd: float
    seller_es_usd: float
    confidence: float


# --------------------------------------------------------------------------- hedging


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """The hedge book of one asset after a step of the hedge engine (``position_states``): coins
    held per instrument kind (short perp as a positive quantity), net delta in coins, the hedge
    ratio, the state machine's ``mode``, the mark ``price_usd`` and P&L in USD."""

    run_id: str
    asset: str
    ts: float
    mode: str
    spot_coin: float
    long_perp_coin: float
    short_perp_coin: float
    quarterly_coin: float
    put_coin: float
    delta_coin: float
    hedge_ratio: float
    price_usd: float
    unrealized_pnl_usd: float
    realized_pnl_usd: float


@dataclass(frozen=True, slots=True)
class HedgeDecisionRecord:
    """Something the hedge engine, the treasury or the safety gate decided (``hedge_decisions``):
    ``source`` "hedge", "treasury" or "safety"; ``event`` a short name ("hedge_ratio",
    "take_profit", "reserve_deployed", "rejected", ...) and ``detail`` in words."""

    run_id: str
    asset: str
    ts: float
    source: str
    event: str
    detail: str


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """An order the hedge engine proposed and what became of it (``order_decisions``):
    ``verdict`` "approved" or "rejected" (with the safety ``rule`` that refused it), and the coins
    filled and their average price once executed."""

    run_id: str
    ts: float
    order_id: str
    asset: str
    kind: str
    side: str
    quantity_coin: float
    reason: str
    verdict: str
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One execution on a (paper) venue (``backtest_trades`` in backtests, ``fills`` live)."""

    run_id: str
    ts: float
    order_id: str
    asset: str
    kind: str
    side: str
    venue: str
    quantity_coin: float
    price_usd: float
    fee_usd: float
    liquidity: str
    reason: str


@dataclass(frozen=True, slots=True)
class TreasuryRecord:
    """The loan and reserve after a mark (``loan_updates``): outstanding principal and accrued
    interest, paid to date, the reserve's balance and deployed amount, LTV and its band."""

    run_id: str
    ts: float
    principal_usd: float
    accrued_interest_usd: float
    interest_paid_usd: float
    principal_paid_usd: float
    reserve_usd: float
    reserve_deployed_usd: float
    collateral_usd: float
    ltv: float
    band: str
    trading_state: str


@dataclass(frozen=True, slots=True)
class EquityRecord:
    """The desk's equity at ``ts`` (``backtest_equity``); always
    ``equity_usd = cash_usd + position_value_usd + reserve_usd - loan_usd``. ``position_value_usd``
    is the coins' value plus the unrealized P&L of derivatives; fees and funding are to date
    (funding positive = paid)."""

    run_id: str
    ts: float
    cash_usd: float
    position_value_usd: float
    reserve_usd: float
    loan_usd: float
    equity_usd: float
    fees_usd: float
    funding_usd: float
    ltv: float


# --------------------------------------------------------------------------- columnar batches


@dataclass(frozen=True)
class Batch:
    """Base of columnar batches: every field is a 1-D numpy array of the same length.

    Subclasses list their columns and numpy dtypes in ``COLUMNS``. String columns are object
    arrays. Two columns are bookkeeping, not data, and are not stored: ``raw`` keeps the message
    each row came from, so a row refused downstream can still be quarantined with its original
    text, and ``msg_index`` numbers that message within its ``NormalizedBatch``, so all rows of one
    message share a verdict (two identical messages still count as two). Data batches also carry
    ``out_of_order``, which is stored: the validator sets it on a tick whose event time is earlier
    than the previous tick of the same instrument (plan 003, AC-004).
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
        """Build from lists or arrays, casting each to its declared dtype. Without ``msg_index``,
        each row is its own message."""
        if columns:
            n = len(next(iter(columns.values())))
            if "msg_index" not in columns and "msg_index" in cls.COLUMNS:
                columns["msg_index"] = np.arange(n, dtype=np.int64)
            if "out_of_order" not in columns and "out_of_order" in cls.COLUMNS:
                columns["out_of_order"] = np.zeros(n, dtype=bool)
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

    def column_dict(self, exclude: tuple[str, ...] = ("raw", "msg_index")) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.COLUMNS if name not in exclude}


def _columns(record_cls, extra: dict[str, str]) -> dict[str, str]:
    kinds = {str: "object", float: "float64", int: "int64", bool: "bool"}
    hints = {"str": str, "float": float, "int": int, "bool": bool}
    cols = {f.name: kinds[hints[f.type]] for f in fields(record_cls)}
    cols.update(extra)
    return cols


@dataclass(frozen=True)
class TradeBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(Trade, {"raw": "object", "msg_index": "int64", "out_of_order": "bool"})
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
    msg_index: np.ndarray = field(default=None)
    out_of_order: np.ndarray = field(default=None)


@dataclass(frozen=True)
class QuoteBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(Quote, {"raw": "object", "msg_index": "int64", "out_of_order": "bool"})
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
    msg_index: np.ndarray = field(default=None)
    out_of_order: np.ndarray = field(default=None)

    @property
    def mid(self) -> np.ndarray:
        return 0.5 * (self.bid + self.ask)


@dataclass(frozen=True)
class OptionTickerBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(OptionTicker, {"raw": "object", "msg_index": "int64", "out_of_order": "bool"})
    exchange: np.ndarray = field(default=None)
    instrument: np.ndarray = field(default=None)
    asset: np.ndarray = field(default=None)
    event_ts: np.ndarray = field(default=None)
    receive_ts: np.ndarray = field(default=None)
    expiry_utc: np.ndarray = field(default=None)
    strike_usd: np.ndarray = field(default=None)
    is_call: np.ndarray = field(default=None)
    bid_coin: np.ndarray = field(default=None)
    bid_size: np.ndarray = field(default=None)
    ask_coin: np.ndarray = field(default=None)
    ask_size: np.ndarray = field(default=None)
    mark_coin: np.ndarray = field(default=None)
    mark_iv: np.ndarray = field(default=None)
    bid_iv: np.ndarray = field(default=None)
    ask_iv: np.ndarray = field(default=None)
    underlying_usd: np.ndarray = field(default=None)
    index_usd: np.ndarray = field(default=None)
    open_interest: np.ndarray = field(default=None)
    delta: np.ndarray = field(default=None)
    gamma: np.ndarray = field(default=None)
    vega: np.ndarray = field(default=None)
    theta: np.ndarray = field(default=None)
    rho: np.ndarray = field(default=None)
    raw: np.ndarray = field(default=None)
    msg_index: np.ndarray = field(default=None)
    out_of_order: np.ndarray = field(default=None)


@dataclass(frozen=True)
class FundingBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(Funding, {"raw": "object", "msg_index": "int64", "out_of_order": "bool"})
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
    msg_index: np.ndarray = field(default=None)
    out_of_order: np.ndarray = field(default=None)


@dataclass(frozen=True)
class BookUpdateBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(BookUpdate, {"raw": "object", "msg_index": "int64", "out_of_order": "bool"})
    exchange: np.ndarray = field(default=None)
    instrument: np.ndarray = field(default=None)
    asset: np.ndarray = field(default=None)
    event_ts: np.ndarray = field(default=None)
    receive_ts: np.ndarray = field(default=None)
    side: np.ndarray = field(default=None)
    price: np.ndarray = field(default=None)
    size_coin: np.ndarray = field(default=None)
    is_snapshot: np.ndarray = field(default=None)
    sequence: np.ndarray = field(default=None)
    raw: np.ndarray = field(default=None)
    msg_index: np.ndarray = field(default=None)
    out_of_order: np.ndarray = field(default=None)


@dataclass(frozen=True)
class IndexPriceBatch(Batch):
    COLUMNS: ClassVar[dict[str, str]] = _columns(IndexPrice, {"raw": "object", "msg_index": "int64", "out_of_order": "bool"})
    exchange: np.ndarray = field(default=None)
    index_name: np.ndarray = field(default=None)
    asset: np.ndarray = field(default=None)
    event_ts: np.ndarray = field(default=None)
    receive_ts: np.ndarray = field(default=None)
    price_usd: np.ndarray = field(default=None)
    raw: np.ndarray = field(default=None)
    msg_index: np.ndarray = field(default=None)
    out_of_order: np.ndarray = field(default=None)


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


# The batches a NormalizedBatch carries, by field name; each also names a DuckDB table.
DATA_BATCHES: dict[str, type[Batch]] = {
    "trades": TradeBatch,
    "quotes": QuoteBatch,
    "option_tickers": OptionTickerBatch,
    "book_updates": BookUpdateBatch,
    "funding": FundingBatch,
    "index_prices": IndexPriceBatch,
}


@dataclass(frozen=True)
class NormalizedBatch:
    """What an adapter made of a RawBatch.

    Every message of the raw batch has exactly one verdict: data (it produced zero or more rows in
    the batches below; a Deribit trades message with three trades gives three trade rows),
    ``control`` (acks, heartbeats, status), ``ignored`` (channels hedgeflow does not use) or
    quarantined (one ``QuarantineRecord`` with the reason and the raw text). ``gaps`` are the
    sequence gaps the adapter saw in this batch.
    """

    exchange: str
    n_messages: int
    trades: TradeBatch
    quotes: QuoteBatch
    quarantine: tuple[QuarantineRecord, ...]
    n_control: int
    n_ignored: int
    option_tickers: OptionTickerBatch = field(default_factory=OptionTickerBatch.empty)
    book_updates: BookUpdateBatch = field(default_factory=BookUpdateBatch.empty)
    funding: FundingBatch = field(default_factory=FundingBatch.empty)
    index_prices: IndexPriceBatch = field(default_factory=IndexPriceBatch.empty)
    gaps: tuple[Gap, ...] = ()

    @property
    def data_messages(self) -> int:
        return self.n_messages - self.n_control - self.n_ignored - len(self.quarantine)

    def data(self) -> dict[str, Batch]:
        """The non-empty data batches by table name."""
        return {name: getattr(self, name) for name in DATA_BATCHES if len(getattr(self, name))}
