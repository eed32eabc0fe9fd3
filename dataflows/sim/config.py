"""The simulator's knobs: what each exchange lists and how fast it talks.

Rates are per second of simulation time (which runs at wall-clock speed). The defaults keep the
whole simulator at roughly a thousand messages per second when every channel is subscribed, the
Deribit option chain included: option tickers are bounded by ``option_rate_hz`` in total,
round-robin over the subscribed options (each at most every 100 ms, Deribit's ``100ms``
interval), whatever the size of the chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from dataflows.sim.market import VENUES

DEFAULT_BASE_PORT = 8765
PORT_OFFSETS = {venue: i for i, venue in enumerate(VENUES)}  # binance 8765, coinbase 8766, ...


@dataclass(frozen=True)
class SimConfig:
    """Configuration of ``MultiExchangeSimulator`` (and of the standalone ``BinanceSimulator``).

    Attributes:
        exchanges: which venues to serve.
        market_step_hz: how often the shared market moves (its path depends on this grid only).
        quote_rate_hz: spot top-of-book updates per second per symbol per venue (Binance
            bookTicker, Coinbase ticker, Kraken bbo/book, Bybit book).
        trade_rate_hz: mean trades per second per symbol per venue (Poisson).
        perp_rate_hz: Deribit perpetual tickers/books and Bybit ticker deltas per second.
        index_rate_hz: Deribit ``deribit_price_index`` messages per second per index.
        option_rate_hz: Deribit option tickers per second IN TOTAL (round-robin over the subscribed
            options, each at most every ``option_min_interval_s``).
        option_trade_rate_hz: Deribit option trades per second over the whole chain.
        chain_refresh_s: how often the option chain is re-priced (vectorized) from the market.
        strikes_per_expiry: target number of strikes per expiry (at least this many).
        option_carry_annual: the forward's carry, annual fraction: F = S exp(carry T).
        heartbeat_interval_s: Coinbase heartbeat period; Kraken's silence before a heartbeat.
        deribit_min_heartbeat_s: the smallest ``public/set_heartbeat`` interval accepted (Deribit:
            10 s; tests lower it).
        binance_symbols, coinbase_products, kraken_pairs, bybit_symbols, deribit_currencies: what
            each venue lists.
        max_client_buffer_bytes: a client whose unsent buffer is larger gets data skipped.
        close_timeout_s: how long stopping waits for each client's closing handshake.
    """

    exchanges: tuple[str, ...] = VENUES
    market_step_hz: float = 20.0
    quote_rate_hz: float = 20.0
    trade_rate_hz: float = 5.0
    perp_rate_hz: float = 10.0
    index_rate_hz: float = 1.0
    option_rate_hz: float = 100.0
    option_min_interval_s: float = 0.1
    option_trade_rate_hz: float = 1.0
    chain_refresh_s: float = 1.0
    strikes_per_expiry: int = 24
    option_carry_annual: float = 0.05
    heartbeat_interval_s: float = 1.0
    deribit_min_heartbeat_s: float = 10.0
    binance_symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    coinbase_products: tuple[str, ...] = ("BTC-USD", "ETH-USD")
    kraken_pairs: tuple[str, ...] = ("BTC/USD", "ETH/USD")
    bybit_symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
    deribit_currencies: tuple[str, ...] = ("BTC", "ETH")
    max_client_buffer_bytes: int = 1 << 22
    close_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        unknown = set(self.exchanges) - set(VENUES)
        if unknown or not self.exchanges:
            raise ValueError(f"exchanges must be a non-empty subset of {VENUES}, got "
                             f"{self.exchanges!r}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_hz", "_s")) and not (isinstance(value, (int, float))
                                                       and math.isfinite(value) and value >= 0):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("market_step_hz", "chain_refresh_s", "heartbeat_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if self.strikes_per_expiry < 2:
            raise ValueError("strikes_per_expiry must be at least 2")
