"""The hedgeflow graph, assembled in one builder.

```
raw batches ─► normalize (per-exchange adapters) ─► validate ─┬─► quarantine ──────────────┐
                                                              ├─► trades, option tickers,   │
                                                              │   book updates, funding,    ├─► DuckDB writer ─► commits ─► ledger
                                                              │   index prices ─────────────┤
                                                              ├─► quotes ─┬─────────────────┤
                                                              │           └─► robust oracle ┤ (+ alerts)
                                                              └─► sequence gaps ─┐          │
connection health ─► connection gaps ────────────────────────────────────────────┼─► gaps ─┤
clock ticks ─► oracle timer, silent-instrument check, time-based flush ───────────┘         │
oracle prices, clock ticks ─► chain terminal (Oracle contract) ─► chain_submissions, chain_events
oracle prices ─► volatility (24 h realized, EWMA; anomalies ─► alerts) ───────────────────────┤
option tickers ─► option book ─(clock ticks)─► surface refit in a worker ─► surfaces ────────┤
surfaces + volatility ─► premium quotes (tiers × expiries) ──────────────────────────────────┤
premium quotes ─► policy risk: Monte Carlo of the seller's side in a worker ─► policy risk ──┘
```

Sources (websockets live, capture files in replay) emit ``RawBatch``es into ``raw`` and
``ConnectionEvent``s into ``health``; a clock-driven timer emits the time into ``ticks``, which
publishes oracle prices even when no quote arrives (so a silent feed turns the oracle "halted"),
finds silent instruments, and flushes the writer on time. Every node is synchronous, so one emit
into ``raw`` runs the whole graph to the database before it returns; only the analytics' heavy
work (surface refits, Monte Carlo) leaves the loop for a worker, and its results re-enter as
emits into ``surfaces`` and ``policy_risk`` on the loop. The same graph serves live
runs, replay and backtests: only the sources and the clock differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter

import logging

import numpy as np
from streamz import Stream

from dataflows.adapters import AdapterSet
from dataflows.analytics import Analytics
from dataflows.archiving import ScheduledExport
from dataflows.logs import log_event
from dataflows.clock import Clock
from dataflows.ledger import Ledger
from dataflows.nodes import Validator
from models.gaps import ConnectionGaps, InstrumentSilence
from models.oracle import MedianOracle
from models.records import DATA_BATCHES
from storage.writer import Commit, DuckDBWriter

log = logging.getLogger(__name__)

# Liveness of an instrument is its top of book: quotes arrive steadily on a liquid market, while
# trades come in bursts (and an option's one trade would leave a "silence" behind it).
_SILENCE_WATCHED = ("quotes",)

# Desk steps written to the database at a time (dataflows/hedging.py).
DESK_WRITE_BATCH = 1_000


def log_commit(ledger: Ledger) -> None:
    """After each commit, the rows now durable in total (the kill test reads these lines)."""
    if log.isEnabledFor(logging.DEBUG):
        total = ledger.snapshot()["total"]
        log_event(log, logging.DEBUG, "committed",
                  **{t: total[t] for t in (*DATA_BATCHES, "gaps", "quarantined")})


@dataclass
class Graph:
    """The graph's entry points, its named streams, and the state its nodes keep."""

    raw: Stream
    health: Stream
    ticks: Stream
    normalized: Stream
    validated: Stream
    data: dict[str, Stream]
    quarantine: Stream
    oracle_prices: Stream
    oracle_alerts: Stream
    gaps: Stream
    commits: Stream
    adapters: AdapterSet
    ledger: Ledger
    oracle: MedianOracle
    writer: DuckDBWriter
    clock: Clock
    connection_gaps: ConnectionGaps
    silence: InstrumentSilence
    publisher: object | None = None
    analytics: Analytics | None = None
    volatility: Stream | None = None
    surfaces: Stream | None = None
    premium_quotes: Stream | None = None
    policy_risk: Stream | None = None
    alerts: Stream | None = None  # every alert: the oracle's and the analytics'
    # Emits the clock time once as the graph closes, before the database does: nodes that buffer
    # rows write them then, and readers of the database let go of it.
    closing: Stream = field(default_factory=lambda: Stream(stream_name="closing"))

    def attach_chain(self, publisher) -> None:
        """The chain terminal: oracle prices to the Oracle contract (dataflows/chain/terminal.py),
        its timers on the clock ticks. Built apart because deploying takes a second or two."""
        self.publisher = publisher
        self.oracle_prices.sink(publisher.on_prices)
        self.ticks.sink(publisher.on_tick)

    def attach_desk(self, node) -> Stream:
        """The hedge desk (dataflows/hedging.py): oracle prices step it, with the volatility,
        surfaces and funding it reads; its records go to the writer and its alerts to the alerts
        stream, committed like every other row. Returns the stream of desk steps."""
        from dataflows.hedging import desk_records

        steps = self.oracle_prices.map(node.on_prices, stream_name="hedge desk").filter(len)
        if self.volatility is not None:
            self.volatility.sink(node.on_volatility)
        if self.surfaces is not None:
            self.surfaces.sink(node.on_surfaces)
        self.data["funding"].sink(node.on_funding)
        steps.map(lambda batch: [a for st in batch for a in st.alerts],
                  stream_name="safety alerts").filter(len).connect(self.alerts)

        # A desk step makes a row in several tables; they are written in batches of steps (an
        # Arrow table per step would cost more than the step), and at the latest on each clock
        # tick and when the graph closes.
        pending: list = []

        def write(batch, force: bool = False):
            if batch:
                pending.extend(batch)
            if not pending or (len(pending) < DESK_WRITE_BATCH and not force):
                return []
            rows, now = list(pending), self.clock.now()
            pending.clear()
            return [self.writer.append_records(table, records, now)
                    for table, records in desk_records(rows, node.run_id, node.asset,
                                                          backtest=node.backtest).items()]

        Stream.union(steps.map(write, stream_name="desk records"),
                     self.ticks.map(lambda _: write([], force=True)),
                     self.closing.map(lambda _: write([], force=True)),
                     ).flatten().connect(self.commits)
        return steps

    @property
    def quotes(self) -> Stream:
        return self.data["quotes"]

    @property
    def trades(self) -> Stream:
        return self.data["trades"]

    def tick(self) -> None:
        """Emit the clock's time into the graph (what a periodic timer does)."""
        self.ticks.emit(self.clock.now())

    def close(self) -> None:
        """Record gaps still open, flush and close the database; the ledger then holds final,
        committed counts."""
        now = self.clock.now()
        if self.analytics is not None:
            # No fit may land after this point: the database is about to close.
            self.analytics.close()
        if self.publisher is not None:
            # Before the database closes: the publisher records its submissions there.
            self.publisher.close(close_store=True)
        self.closing.emit(now)  # nodes that buffer rows write them now
        open_gaps = self.connection_gaps.close(now) + self.silence.close(now)
        if open_gaps:
            self.gaps.emit(open_gaps)
        commit = self.writer.close()
        if commit is not None:
            self.commits.emit(commit)


def build_graph(
    *, clock: Clock, writer: DuckDBWriter, oracle: MedianOracle, silence_limit_s: float = 10.0,
    out_of_order: str = "flag", archive: ScheduledExport | None = None,
    analytics: Analytics | None = None,
) -> Graph:
    now = clock.now
    ledger = Ledger()
    adapters = AdapterSet()
    connection_gaps = ConnectionGaps()
    silence = InstrumentSilence(silence_limit_s)

    raw = Stream(stream_name="raw batches")
    health = Stream(stream_name="connection health")
    ticks = Stream(stream_name="clock ticks")

    def count_ingest(batch):
        # Raw size per exchange and UTC day, for the compression and completeness reports.
        days = (batch.receive_ts // 86_400).astype(np.int64)
        for day in np.unique(days).tolist():
            texts = [m for m, d in zip(batch.messages, days.tolist()) if d == day]
            writer.add_ingest(
                batch.exchange, str(np.datetime64(day, "D")), len(texts),
                sum(len(t.encode("utf-8", "replace")) for t in texts),
            )

    raw.sink(count_ingest)
    normalized = raw.map(adapters.normalize, stream_name="normalize")
    validated = normalized.map(Validator(out_of_order=out_of_order), stream_name="validate")
    quarantine = validated.map(attrgetter("quarantine")).filter(len)
    data = {
        table: validated.map(attrgetter(table), stream_name=table).filter(len)
        for table in DATA_BATCHES
    }

    def oracle_on_quotes(batch):
        oracle.update(batch)
        return oracle.publish(now())

    oracle_prices = Stream.union(
        data["quotes"].map(oracle_on_quotes, stream_name="median oracle"),
        ticks.map(oracle.publish),
        stream_name="oracle prices",
    ).filter(len)

    # The oracle raises alerts (a diverging venue, a decimal bug, a jump) while it prices.
    oracle_alerts = oracle_prices.map(lambda _: oracle.take_alerts(), stream_name="oracle alerts").filter(len)

    # Analytics: volatility of the oracle prices, the surface refit (its results re-enter through
    # ``surfaces``, emitted by the worker's callback on the loop) and premium quotes.
    volatility = surfaces = premium_quotes = policy_risk = None
    analytics_alerts = []
    if analytics is not None:
        volatility = oracle_prices.map(analytics.volatility.on_prices, stream_name="volatility").filter(len)
        analytics_alerts.append(
            volatility.map(lambda _: analytics.volatility.take_alerts(), stream_name="volatility anomalies")
            .filter(len))
        surfaces = Stream(stream_name="surfaces")
        analytics.refitter.emit = surfaces.emit
        data["option_tickers"].sink(analytics.refitter.on_tickers)
        ticks.sink(analytics.refitter.on_tick)
        volatility.sink(analytics.premium.on_volatility)
        premium_quotes = surfaces.map(analytics.premium.on_surfaces, stream_name="premium quotes").filter(len)
        policy_risk = Stream(stream_name="policy risk")
        analytics.risk.emit = policy_risk.emit
        premium_quotes.sink(analytics.risk.on_quotes)
    alerts = Stream.union(oracle_alerts, *analytics_alerts, stream_name="alerts")

    def silence_on_data(batch):
        return silence.on_data(batch.exchange, batch.instrument, batch.asset, batch.event_ts)

    def silence_on_tick(ts):
        silence.check(ts)
        return []

    gaps = Stream.union(
        validated.map(attrgetter("gaps")),
        health.map(connection_gaps.on_event, stream_name="connection gaps"),
        *(data[t].map(silence_on_data) for t in _SILENCE_WATCHED),
        ticks.map(silence_on_tick, stream_name="silent instruments"),
        stream_name="gaps",
    ).filter(len)

    commits = Stream.union(
        quarantine.map(lambda records: writer.append_quarantine(records, now())),
        *(
            data[table].map(lambda batch, t=table: writer.append(t, batch, now()))
            for table in DATA_BATCHES
        ),
        oracle_prices.map(lambda prices: writer.append_oracle_prices(prices, now())),
        alerts.map(lambda a: writer.append_alerts(a, now())),
        *([
            volatility.map(lambda v: writer.append_records("volatility", v, now())),
            surfaces.map(lambda fits: writer.append_records(
                "surface_fits", [f.record for f in fits if f.record is not None], now())),
            premium_quotes.map(lambda q: writer.append_records("premium_quotes", q, now())),
            policy_risk.map(lambda r: writer.append_records("policy_risk", r, now())),
        ] if analytics is not None else []),
        gaps.map(lambda g: writer.append_gaps(g, now())),
        ticks.map(writer.maybe_flush),
        *([ticks.map(archive.on_tick, stream_name="scheduled export")] if archive else []),
        stream_name="commits",
    ).filter(lambda c: isinstance(c, Commit))

    validated.sink(ledger.on_validated)
    gaps.sink(ledger.on_gaps)
    commits.sink(ledger.on_commit)
    commits.sink(lambda commit: log_commit(ledger))

    return Graph(
        raw=raw, health=health, ticks=ticks, normalized=normalized, validated=validated,
        data=data, quarantine=quarantine, oracle_prices=oracle_prices, oracle_alerts=oracle_alerts,
        gaps=gaps,
        commits=commits, adapters=adapters, ledger=ledger, oracle=oracle, writer=writer,
        clock=clock, connection_gaps=connection_gaps, silence=silence,
        analytics=analytics, volatility=volatility, surfaces=surfaces, premium_quotes=premium_quotes,
        policy_risk=policy_risk,
        alerts=alerts,
    )
