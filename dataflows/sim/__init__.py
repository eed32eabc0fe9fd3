"""The exchange simulator: Binance, Coinbase, Kraken, Bybit and Deribit over websockets on
127.0.0.1, each in its exact wire format, all quoting ONE seeded market.

The real exchanges are unreachable from these machines, so the feeds, the graph and the
integration tests run against this simulator. It is a fake only in where the prices come from; the
wire protocols are the exchanges' (each module's docstring says what is served and where the
format comes from).

Modules: ``market`` (the shared market and per-venue quoting), ``faults`` (``FaultPlan``),
``server`` (scheduler, websocket servers, counting), ``config`` (``SimConfig``), and one module
per exchange format: ``binance``, ``coinbase``, ``kraken``, ``bybit``, ``deribit``.

Usage::

    async with MultiExchangeSimulator(seed=7) as sim:
        sim.urls      # {"binance": "ws://127.0.0.1:P", "coinbase": "ws://127.0.0.1:P2", ...}
        ...
        sim.sent_counts("coinbase")   # {"ticker": n, "match": n, ..., "total": n, ...}
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from dataflows.clock import Clock
from dataflows.sim.binance import BinanceSimulator, BinanceVenue, SymbolMarket
from dataflows.sim.bybit import BybitVenue
from dataflows.sim.coinbase import CoinbaseVenue
from dataflows.sim.config import DEFAULT_BASE_PORT, PORT_OFFSETS, SimConfig
from dataflows.sim.deribit import DeribitVenue
from dataflows.sim.faults import FaultPlan, FaultSpecError, RateFault, TimedFault, VenueFaults
from dataflows.sim.kraken import KrakenVenue
from dataflows.sim.market import VENUES, SharedMarket, SharedMarketParams
from dataflows.sim.server import META_KEYS, SimContext, SimulatorBase, periodic

__all__ = [
    "DEFAULT_BASE_PORT",
    "META_KEYS",
    "VENUES",
    "BinanceSimulator",
    "FaultPlan",
    "FaultSpecError",
    "MultiExchangeSimulator",
    "RateFault",
    "SharedMarket",
    "SharedMarketParams",
    "SimConfig",
    "SimContext",
    "SymbolMarket",
    "TimedFault",
    "VenueFaults",
    "run_simulation",
]

_VENUE_PATHS = {
    "binance": "",  # the combined-stream base: append /stream?streams=a/b/c
    "coinbase": "",
    "kraken": "/v2",
    "bybit": "/v5/public/linear",
    "deribit": "/ws/api/v2",
}


class MultiExchangeSimulator(SimulatorBase):
    """All five exchange servers from one seed (see the package docstring).

    Args:
        seed: seeds the market, every venue's flow and every fault draw.
        config: rates, listings and limits (``SimConfig``); ``config.exchanges`` picks the venues.
        faults: a ``FaultPlan`` (or its spec string, ``FaultPlan.parse`` grammar).
        host: where to listen (loopback by default).
        port: the base port: binance ``port``, coinbase ``port + 1``, kraken ``+ 2``, bybit
            ``+ 3``, deribit ``+ 4``; 0 (the default) picks a free port for each.
        ports: explicit ports per exchange (override ``port``).
        clock: event times are ``clock.now()`` at start plus the schedule's time (a
            ``SimulatedClock`` makes whole runs byte-identical); pacing uses the event loop.
        malformed_rate: shorthand for a ``malformed`` rate fault on every venue.

    Attributes after ``start()``: ``urls`` (websocket URL per exchange), ``http_urls`` (HTTP base
    per exchange: Deribit's ``/api/v2/public/...``, Binance's ``/api/v3/depth``), ``servers``,
    ``venues``, ``market``.

    ``sent_counts(exchange)`` counts the frames written to that exchange's client sockets (summed
    over connections), by kind:

    - binance: ``bookTicker``, ``aggTrade``, ``depth``, ``markPrice``
    - coinbase: ``ticker``, ``match``, ``last_match``, ``snapshot``, ``l2update``, ``heartbeat``
    - kraken: ``ticker``, ``trade``, ``book``, ``heartbeat``
    - bybit: ``tickers``, ``publicTrade``, ``orderbook``
    - deribit: ``ticker`` (perpetuals), ``option_ticker``, ``book``, ``trades``, ``index``,
      ``heartbeat`` (test_request notifications)

    and for every exchange ``control`` (acks, subscription lists, pongs, RPC results, status and
    error replies), ``malformed`` (every malformed kind), ``repeated_trades`` (the second copies)
    and ``total`` (the sum of all of these = frames written). Data kinds count well-formed
    messages only. Then, not part of ``total``: ``skipped_seq`` (sequence numbers skipped in
    frames written), ``out_of_order`` (frames written stamped before their predecessor) and
    ``drops`` (connections cut). ``withheld_counts(exchange)`` counts what was generated but not
    written (stalled, or a client too slow to drain its buffer).
    """

    def __init__(self, seed: int = 7, config: SimConfig | None = None,
                 faults: FaultPlan | str | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, ports: dict[str, int] | None = None, clock: Clock | None = None,
                 malformed_rate: float = 0.0) -> None:
        config = config or SimConfig()
        plan = FaultPlan.parse(faults) if isinstance(faults, str) else (faults or FaultPlan())
        if malformed_rate:
            plan = plan.with_rate("malformed", float(malformed_rate))
        self.config = config
        self.seed = int(seed)
        self.market = SharedMarket(self.seed)
        ctx = SimContext(self.seed, clock, self.market, config)
        venues = []
        for name in VENUES:
            if name not in config.exchanges:
                continue
            vf = VenueFaults(name, self.seed, plan)
            if name == "binance":
                venues.append(BinanceVenue(ctx, vf, config.binance_symbols, config.quote_rate_hz,
                                           config.trade_rate_hz, half_spread_bps=0.5))
            elif name == "coinbase":
                venues.append(CoinbaseVenue(ctx, vf, config.coinbase_products))
            elif name == "kraken":
                venues.append(KrakenVenue(ctx, vf, config.kraken_pairs))
            elif name == "bybit":
                venues.append(BybitVenue(ctx, vf, config.bybit_symbols))
            elif name == "deribit":
                venues.append(DeribitVenue(ctx, vf, config.deribit_currencies))
        all_ports = {name: (port + PORT_OFFSETS[name] if port else 0) for name in VENUES}
        all_ports.update(ports or {})
        super().__init__(ctx, venues, host, all_ports, plan,
                         max_client_buffer_bytes=config.max_client_buffer_bytes,
                         close_timeout_s=config.close_timeout_s)

    def _market_timers(self):
        step = 1.0 / self.config.market_step_hz
        return [(step, periodic(step, lambda due: self.market.step(step)))]

    @property
    def urls(self) -> dict[str, str]:
        """Websocket URL per exchange: binance ``ws://H:P`` (the combined-stream base: add
        ``/stream?streams=...``), coinbase ``ws://H:P``, kraken ``ws://H:P/v2``, bybit
        ``ws://H:P/v5/public/linear``, deribit ``ws://H:P/ws/api/v2``."""
        return {name: s.base_url + _VENUE_PATHS[name] for name, s in self.servers.items()}

    @property
    def http_urls(self) -> dict[str, str]:
        """HTTP base per exchange (``http://H:P``)."""
        return {name: s.http_url for name, s in self.servers.items()}

    def binance_url(self, streams: Iterable[str]) -> str:
        """The Binance combined-stream URL for ``streams``."""
        return f"{self.servers['binance'].base_url}/stream?streams={'/'.join(streams)}"


async def run_simulation(sim: SimulatorBase, duration_s: float | None = None) -> dict:
    """Run ``sim`` for ``duration_s`` seconds (None: until cancelled), stop it cleanly, and return
    ``sim.sent_counts()``. ``sim.started`` is set once its URLs are valid."""
    async with sim:
        if duration_s is None:
            await asyncio.Future()
        else:
            await asyncio.sleep(duration_s)
    return sim.sent_counts()

