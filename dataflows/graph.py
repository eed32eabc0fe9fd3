"""The hedgeflow graph, assembled in one builder.

```
raw batches ─► normalize ─► validate ─┬─► quarantine ────────────────┐
                                      ├─► trades ────────────────────┤
                                      └─► quotes ─┬──────────────────┼─► DuckDB writer ─► commits ─► ledger
clock ticks ─────────────────────────────────────┴─► median oracle ─┤
   └─────────────────────────────────────────────────────────────────┘ (time-based flush)
```

Sources (websockets live, a capture file in replay) emit ``RawBatch``es into ``raw``; a clock-driven
timer emits the time into ``ticks``, which publishes oracle prices even when no quote arrives (so a
silent feed turns the oracle "halted") and flushes the writer on time. Every node is synchronous,
so one emit into ``raw`` runs the whole graph to the database before it returns. The same graph
serves live runs, replay and backtests: only the sources and the clock differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from streamz import Stream

from dataflows.adapters import normalize
from dataflows.clock import Clock
from dataflows.ledger import Ledger
from dataflows.nodes import validate
from models.oracle import MedianOracle
from storage.writer import Commit, DuckDBWriter


@dataclass
class Graph:
    """The graph's entry points, its named streams, and the state its nodes keep."""

    raw: Stream
    ticks: Stream
    normalized: Stream
    quotes: Stream
    trades: Stream
    quarantine: Stream
    oracle_prices: Stream
    commits: Stream
    ledger: Ledger
    oracle: MedianOracle
    writer: DuckDBWriter
    clock: Clock

    def tick(self) -> None:
        """Emit the clock's time into the graph (what a periodic timer does)."""
        self.ticks.emit(self.clock.now())

    def close(self) -> None:
        """Flush and close the database; the ledger then holds final, committed counts."""
        commit = self.writer.close()
        if commit is not None:
            self.commits.emit(commit)


def build_graph(*, clock: Clock, writer: DuckDBWriter, oracle: MedianOracle) -> Graph:
    now = clock.now
    ledger = Ledger()

    raw = Stream(stream_name="raw batches")
    ticks = Stream(stream_name="clock ticks")

    normalized = raw.map(normalize, stream_name="normalize")
    validated = normalized.map(validate, stream_name="validate")
    quarantine = validated.map(attrgetter("quarantine")).filter(len)
    trades = validated.map(attrgetter("trades")).filter(len)
    quotes = validated.map(attrgetter("quotes")).filter(len)

    def oracle_on_quotes(batch):
        oracle.update(batch)
        return oracle.publish(now())

    oracle_prices = Stream.union(
        quotes.map(oracle_on_quotes, stream_name="median oracle"),
        ticks.map(oracle.publish),
        stream_name="oracle prices",
    ).filter(len)

    commits = Stream.union(
        quarantine.map(lambda records: writer.append_quarantine(records, now())),
        trades.map(lambda batch: writer.append_trades(batch, now())),
        quotes.map(lambda batch: writer.append_quotes(batch, now())),
        oracle_prices.map(lambda prices: writer.append_oracle_prices(prices, now())),
        ticks.map(writer.maybe_flush),
        stream_name="commits",
    ).filter(lambda c: isinstance(c, Commit))

    normalized.sink(ledger.on_normalized)
    commits.sink(ledger.on_commit)

    return Graph(
        raw=raw, ticks=ticks, normalized=normalized, quotes=quotes, trades=trades,
        quarantine=quarantine, oracle_prices=oracle_prices, commits=commits,
        ledger=ledger, oracle=oracle, writer=writer, clock=clock,
    )
