"""The live pipeline: simulator (unless real feeds are configured), sources, graph, timers, pages.

One ``Pipeline`` per process runs on the asyncio loop it is started from; Panel sessions on that
same loop read its views. ``hedgeflow run`` starts it and the Panel server together;
``panel serve dashboards/*.py`` gets it through ``shared_pipeline()``.

Shutdown order keeps the accounting whole: the sources stop first (a source hands on the
messages it has read before it exits), then the simulator, then the graph flushes and closes the
database. The ledger then holds committed counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dataflows.adapters import binance
from dataflows.clock import Clock, WallClock
from dataflows.config import Config, load_config
from dataflows.graph import Graph, build_graph
from dataflows.logs import log_event
from dataflows.simulator import BinanceSimulator
from dataflows.views import OracleView
from dataflows.ws_source import WebsocketSource
from models.oracle import MedianOracle, MedianOracleConfig
from storage.writer import DuckDBWriter

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 0.25  # how often timers (oracle publication, time-based flush) are checked


class Pipeline:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or WallClock()
        self.simulator: BinanceSimulator | None = None
        self.sources: list[WebsocketSource] = []
        self.graph: Graph | None = None
        self.oracle_view = OracleView()
        self._tasks: list[asyncio.Task] = []
        self.started = asyncio.Event()

    def _source_url(self) -> str:
        feeds = self.config.feeds
        streams = binance.default_streams(list(self.config.simulator.symbols))
        if feeds.binance_url:
            return binance.combined_stream_url(feeds.binance_url, streams)
        assert self.simulator is not None
        return binance.combined_stream_url(f"ws://{self.simulator.host}:{self.simulator.port}", streams)

    async def start(self) -> None:
        cfg = self.config
        if cfg.simulator.enabled and not cfg.feeds.binance_url:
            sim = cfg.simulator
            self.simulator = BinanceSimulator(
                symbols=tuple(sim.symbols), seed=sim.seed, quote_rate_hz=sim.quote_rate_hz,
                trade_rate_hz=sim.trade_rate_hz, malformed_rate=sim.malformed_rate,
                host=sim.host, port=sim.port, clock=self.clock,
            )
            await self.simulator.start()
            log_event(log, logging.INFO, "simulator listening", url=self.simulator.url)
        elif not cfg.feeds.binance_url:
            from dataflows.config import ConfigError

            raise ConfigError(
                "no feed: the simulator is disabled and feeds.binance_url is empty. Set "
                "simulator.enabled = true or feeds.binance_url (HEDGEFLOW_FEEDS__BINANCE_URL)"
            )

        self.graph = build_graph(
            clock=self.clock,
            writer=DuckDBWriter(
                cfg.storage.db_path, capacity_rows=cfg.storage.flush_rows,
                flush_interval_s=cfg.storage.flush_interval_s,
            ),
            oracle=MedianOracle(
                MedianOracleConfig(
                    min_sources=cfg.oracle.min_sources, stale_after_s=cfg.oracle.stale_after_s,
                    interval_s=cfg.oracle.interval_s,
                )
            ),
        )
        self.graph.oracle_prices.sink(self.oracle_view.on_prices)

        source = WebsocketSource(
            self._source_url(), binance.EXCHANGE, clock=self.clock,
            batch_max_messages=cfg.feeds.batch_max_messages,
            batch_max_latency_s=cfg.feeds.batch_max_latency_s,
            reconnect_initial_s=cfg.feeds.reconnect_initial_s,
            reconnect_max_s=cfg.feeds.reconnect_max_s,
            silence_timeout_s=cfg.feeds.silence_timeout_s,
        )
        source.connect(self.graph.raw)
        source.health.connect(self.graph.health)
        self.sources.append(source)
        for s in self.sources:
            s.stopped = False  # we own the task (streamz's start() would give us no handle)
            self._tasks.append(asyncio.create_task(s.run(), name=f"source {s.exchange}"))
        self._tasks.append(asyncio.create_task(self._ticker(), name="clock ticks"))
        log_event(log, logging.INFO, "pipeline started", db=cfg.storage.db_path)
        self.started.set()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            self.graph.tick()

    async def stop(self) -> dict:
        """Stop everything in order; return the ledger's final counts."""
        for s in self.sources:
            s.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.simulator is not None:
            await self.simulator.stop()
        counts = {}
        if self.graph is not None:
            self.graph.close()
            counts = self.graph.ledger.snapshot()
            log_event(log, logging.INFO, "pipeline stopped", **counts["total"])
        return counts


_shared: Pipeline | None = None


def shared_pipeline(config: Config | None = None) -> Pipeline:
    """The process's one pipeline, started on the running loop the first time it is asked for."""
    global _shared
    if _shared is None:
        _shared = Pipeline(config or load_config())
        asyncio.get_event_loop().create_task(_shared.start())
    return _shared


def set_shared_pipeline(pipeline: Pipeline | None) -> None:
    global _shared
    _shared = pipeline
