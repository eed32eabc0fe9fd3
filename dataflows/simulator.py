"""The exchange simulator's public entry points (a thin re-export of ``dataflows/sim/``).

- ``BinanceSimulator``: Binance alone, each symbol on its own seeded market (the original API:
  ``url``, ``url_for``, ``port``, ``sent_counts()``, ``malformed_counts()``, ``async with``).
- ``MultiExchangeSimulator``: Binance, Coinbase, Kraken, Bybit and Deribit from one seeded market,
  ``urls`` per exchange, ``sent_counts(exchange)``; ``FaultPlan`` for fault injection.
- ``SymbolMarket``: one Binance symbol's message generator (benchmarks use it).
- ``run_simulator(sim, duration_s)``: run any of them for a while and return ``sim.sent_counts()``.

See ``dataflows/sim/__init__.py`` and the per-exchange modules for the wire formats.
"""

from __future__ import annotations

from dataflows.sim import (
    DEFAULT_BASE_PORT,
    VENUES,
    FaultPlan,
    FaultSpecError,
    MultiExchangeSimulator,
    SimConfig,
    run_simulation,
)
from dataflows.sim.binance import (
    AGG_TRADE,
    BOOK_TICKER,
    DEPTH,
    MALFORMED_KINDS,
    MARK_PRICE,
    BinanceSimulator,
    SymbolMarket,
)
from dataflows.sim.market import DEFAULT_MARKETS, UNKNOWN_MARKET, MarketSpec, market_spec_for

__all__ = [
    "AGG_TRADE",
    "BOOK_TICKER",
    "DEFAULT_BASE_PORT",
    "DEFAULT_MARKETS",
    "DEPTH",
    "MALFORMED_KINDS",
    "MARK_PRICE",
    "UNKNOWN_MARKET",
    "VENUES",
    "BinanceSimulator",
    "FaultPlan",
    "FaultSpecError",
    "MarketSpec",
    "MultiExchangeSimulator",
    "SimConfig",
    "SymbolMarket",
    "market_spec_for",
    "run_simulation",
    "run_simulator",
]


async def run_simulator(sim, duration_s: float | None = None) -> dict:
    """Run ``sim`` for ``duration_s`` seconds (``None``: until cancelled), then stop it cleanly.

    Prints nothing; ``sim.started`` is set once ``sim.url``/``sim.urls`` are valid. Returns
    ``sim.sent_counts()`` (when cancelled, the cancellation propagates after the server has
    stopped).
    """
    return await run_simulation(sim, duration_s)
