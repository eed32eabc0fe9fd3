"""The live pipeline: simulator (for exchanges without a configured URL), sources, graph, timers.

One ``Pipeline`` per process runs on the asyncio loop it is started from; Panel sessions on that
same loop read its views. ``hedgeflow run`` starts it and the Panel server together;
``panel serve dashboards/*.py`` gets it through ``shared_pipeline()``.

Shutdown order keeps the accounting whole: the sources stop first (a source hands on the
messages it has read before it exits), then the simulator, then the graph records open gaps,
flushes and closes the database. The ledger then holds committed counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from dataflows.adapters.deribit import DeribitError
from dataflows.analytics import build_analytics
from dataflows.archiving import ScheduledExport
from dataflows.clock import Clock, WallClock
from dataflows.config import Config, ConfigError, load_config
from dataflows.feeds import DERIBIT_REFRESH_S, DeribitChain, build_sources
from dataflows.graph import Graph, build_graph
from dataflows.logs import log_event
from dataflows.recorder import CaptureRecorder
from dataflows.sim import MultiExchangeSimulator, SimConfig
from dataflows.views import ConnectionView, OracleView, attach_views
from dataflows.ws_source import WebsocketSource
from models.oracle import MedianOracle
from storage.writer import DuckDBWriter

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 0.25  # how often timers (oracle publication, gaps, time-based flush) run
DERIBIT_RETRY_S = 30.0  # after a failed instrument listing


class Pipeline:
    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or WallClock()
        self.simulator: MultiExchangeSimulator | None = None
        self.sources: list[WebsocketSource] = []
        self.deribit: DeribitChain | None = None
        self.graph: Graph | None = None
        self.hedge = None  # the hedge desk's node (dataflows.hedging.HedgeNode)
        self.desk_steps = None  # its stream of batches of models.desk.DeskStep
        self.views: dict[str, object] = {}  # read-only views for dashboards and the API, by name
        self.api = None  # dataflows.api.ApiServer when [api].enabled
        self.urls: dict[str, str] = {}
        self.recorder: CaptureRecorder | None = None
        self._source_tasks: list[asyncio.Task] = []
        self._tasks: list[asyncio.Task] = []
        self.started = asyncio.Event()

    @property
    def oracle_view(self) -> OracleView:
        return self.views["oracle"]

    @property
    def connection_view(self) -> ConnectionView:
        return self.views["connections"]

    # ------------------------------------------------------------------ start
    async def _start_simulator(self, exchanges: list[str]) -> dict[str, str]:
        sim = self.config.simulator
        if not sim.enabled:
            names = ", ".join(f"feeds.{e}_url" for e in exchanges)
            raise ConfigError(
                f"no feed for {', '.join(exchanges)}: the simulator is disabled and {names} "
                "is empty. Set simulator.enabled = true or give the URLs "
                "(e.g. HEDGEFLOW_FEEDS__BINANCE_URL=wss://stream.binance.com:9443)"
            )
        self.simulator = MultiExchangeSimulator(
            seed=sim.seed,
            config=SimConfig(
                exchanges=tuple(exchanges), quote_rate_hz=sim.quote_rate_hz,
                trade_rate_hz=sim.trade_rate_hz, option_rate_hz=sim.option_rate_hz,
                binance_symbols=tuple(sim.symbols),
            ),
            faults=sim.faults or None, host=sim.host, port=sim.port, clock=self.clock,
            malformed_rate=sim.malformed_rate,
        )
        await self.simulator.start()
        log_event(log, logging.INFO, "simulator listening", **self.simulator.urls)
        return {e: self.simulator.urls[e] for e in exchanges}

    async def start(self) -> None:
        cfg = self.config
        feeds = cfg.feeds
        # First, before anything is opened: reaching a dask scheduler may fail (or take its
        # timeout), and a failure must leave no database or simulator behind.
        analytics = build_analytics(cfg.analytics)
        self.urls = {e: getattr(feeds, f"{e}_url") for e in feeds.exchanges}
        simulated = [e for e, url in self.urls.items() if not url]
        if simulated:
            self.urls.update(await self._start_simulator(simulated))

        writer = DuckDBWriter(
            cfg.storage.db_path, capacity_rows=cfg.storage.flush_rows,
            flush_interval_s=cfg.storage.flush_interval_s,
        )
        archive = None
        if cfg.storage.archive_dir:
            archive = ScheduledExport(
                writer, cfg.storage.archive_dir, cfg.storage.export_interval_s, cfg.storage.hot_days
            )
        self.graph = build_graph(
            clock=self.clock,
            writer=writer,
            archive=archive,
            oracle=MedianOracle(
                cfg.oracle.model_config()
            ),
            silence_limit_s=feeds.silence_gap_s,
            out_of_order=cfg.storage.out_of_order,
            analytics=analytics,
        )
        if cfg.hedge.enabled:
            from dataflows.hedging import HedgeNode
            from models.desk import HedgeDesk

            hedge = cfg.hedge
            self.hedge = HedgeNode(
                HedgeDesk(hedge.desk_config(), self.clock.now()), run_id="live",
                funding_exchange=hedge.funding_exchange, pause_file=hedge.pause_file,
                flatten_file=hedge.flatten_file)
            self.desk_steps = self.graph.attach_desk(self.hedge)
            self.graph.ticks.sink(self.hedge.on_tick)
        if cfg.chain.enabled:
            from dataflows.chain.terminal import build_publisher

            # Compiling the contracts and deploying them on the embedded chain takes about a
            # second: off the loop, so the feeds already connecting are not held up.
            self.graph.attach_chain(await asyncio.to_thread(build_publisher, cfg.chain, writer.con))
        if feeds.record_dir:
            self.recorder = CaptureRecorder(feeds.record_dir, self.clock.now())
            self.graph.raw.sink(self.recorder.on_raw)
        self.views = attach_views(self)
        if cfg.api.enabled:
            from dataflows.api import ApiServer

            self.api = ApiServer(self)
            await self.api.start()  # a port in use is a HedgeflowError saying what to change

        sources, self.deribit = build_sources(cfg, self.urls, self.graph.adapters, self.clock)
        for source in sources:
            self._start_source(source)
        if self.deribit is not None:
            await self._plan_deribit()
            self._tasks.append(asyncio.create_task(self._deribit_refresh(), name="deribit chain"))
        self._tasks.append(asyncio.create_task(self._ticker(), name="clock ticks"))
        log_event(log, logging.INFO, "pipeline started", db=cfg.storage.db_path,
                  exchanges=",".join(feeds.exchanges), connections=len(self.sources))
        self.started.set()

    def _start_source(self, source: WebsocketSource) -> None:
        source.connect(self.graph.raw)
        source.health.connect(self.graph.health)
        self.sources.append(source)
        source.stopped = False  # we own the task (streamz's start() would give us no handle)
        self._source_tasks.append(asyncio.create_task(source.run(), name=f"source {source.label}"))

    async def _plan_deribit(self) -> bool:
        try:
            for source in await self.deribit.plan():
                self._start_source(source)
            return True
        except DeribitError as exc:
            log_event(log, logging.ERROR, "deribit instruments unavailable", error=str(exc))
            return False

    async def _deribit_refresh(self) -> None:
        ok = bool(self.deribit.sources)
        while True:
            await asyncio.sleep(DERIBIT_REFRESH_S if ok else DERIBIT_RETRY_S)
            ok = await self._plan_deribit()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL_S)
            self.graph.tick()

    # ------------------------------------------------------------------ stop
    async def stop_sources(self) -> None:
        """Stop reading; every message already read is handed to the graph."""
        for task in self._tasks:
            task.cancel()
        for s in self.sources:
            s.stop()
        for task in self._source_tasks:
            task.cancel()
        for task in [*self._tasks, *self._source_tasks]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._source_tasks.clear()

    async def stop(self) -> dict:
        """Stop everything in order; return the ledger's final counts."""
        await self.stop_sources()
        if self.simulator is not None:
            await self.simulator.stop()
        if self.api is not None:
            await self.api.stop()  # before the graph closes: no message is published after
            self.api = None
        counts = {}
        if self.recorder is not None:
            self.recorder.close()
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
