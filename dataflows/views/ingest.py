"""The collector's health: ingest rates, lag, quarantine and gaps per exchange, and the database.

``IngestView`` is fed by sinks on the graph: the clock ticks sample the ledger
(``dataflows.ledger.Ledger``) into messages per second per exchange; the data batches give the
lag (receive time − event time); the quarantine and gaps streams are counted. Its read methods
(``rates_per_exchange()``, ``lag_by_exchange()``, ``quarantine_by_reason()``, ...) serve the archive
health page and the metrics endpoint alike.

``StorageHealth`` reads the database (size, rows per table, gaps, quarantine, the data-quality
report of today) at most every ``interval_s`` of clock time, one read at a time, on a cursor of the
writer's connection in a worker thread: a read never holds up the graph, and any number of
sessions share its latest result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dataflows.analytics import PeriodicJob
from dataflows.workers import Worker

#: A reason seen after this many distinct ones is counted under this name (reasons may carry a
#: parser's message, and a flood of distinct ones must not grow the view without bound).
OTHER_REASON = "(other reasons)"


class IngestView:
    """Rates, lag, quarantine and gaps of every exchange, from the graph's streams.

    - rates: ``messages`` read per exchange (the ledger's count, every verdict), sampled on each
      clock tick; the rate is the increase over the trailing ``rate_window_s`` divided by the time
      it took, in messages per second of clock time. One rate point per exchange is kept every
      ``sample_interval_s`` for ``history_s``.
    - lag: ``receive_ts - event_ts`` in seconds, per row of every data table, over the rows
      received in the trailing ``lag_window_s`` (by their receive time). Book snapshots are left
      out: their levels carry the time each level last changed, not when it was sent.
    - quarantine: messages refused, by exchange and reason, since the view was attached.
    - gaps: gap rows by exchange and kind since the view was attached, and the newest ones.
    """

    def __init__(self, ledger, *, storage: StorageHealth | None = None, rate_window_s: float = 5.0,
                 sample_interval_s: float = 1.0, history_s: float = 900.0,
                 lag_window_s: float = 30.0, max_lag_samples: int = 20_000,
                 max_reasons: int = 200, recent_gaps: int = 50) -> None:
        if rate_window_s <= 0 or sample_interval_s <= 0 or lag_window_s <= 0:
            raise ValueError("rate_window_s, sample_interval_s and lag_window_s must be positive")
        self.ledger = ledger
        self.storage = storage
        self.rate_window_s = rate_window_s
        self.sample_interval_s = sample_interval_s
        self.lag_window_s = lag_window_s
        self.max_lag_samples = max_lag_samples
        self.max_reasons = max_reasons
        self._samples: deque[tuple[float, dict[str, int]]] = deque()
        self._counts: dict[str, dict] = {}
        self._rates: dict[str, float] = {}
        self._history: deque[tuple[float, dict[str, float]]] = deque(
            maxlen=max(1, int(history_s / sample_interval_s)))
        self._lags: dict[str, deque[tuple[float, np.ndarray]]] = {}
        self._lag_rows: dict[str, int] = {}  # rows held in _lags, per exchange
        self._quarantine: Counter = Counter()  # (exchange, reason) -> messages
        self._reasons: set[str] = set()
        self._gaps: Counter = Counter()  # (exchange, kind) -> gaps
        self._recent_gaps: deque = deque(maxlen=recent_gaps)
        self.version = 0  # bumped when a rate point is added; sessions compare to skip redraws

    # ------------------------------------------------------------------ sinks
    def on_tick(self, now_s: float) -> None:
        snapshot = self.ledger.snapshot()["exchanges"]
        self._counts = snapshot
        messages = {e: int(c["messages"]) for e, c in snapshot.items()}
        self._samples.append((now_s, messages))
        while len(self._samples) > 2 and self._samples[1][0] <= now_s - self.rate_window_s:
            self._samples.popleft()
        first_s, first = self._samples[0]
        elapsed_s = now_s - first_s
        if elapsed_s > 0:
            self._rates = {e: (n - first.get(e, 0)) / elapsed_s for e, n in messages.items()}
        if (elapsed_s > 0 and (not self._history
                               or now_s - self._history[-1][0] >= self.sample_interval_s)):
            self._history.append((now_s, dict(self._rates)))
            self.version += 1
        if self.storage is not None:
            self.storage.on_tick(now_s)

    def on_data(self, batch) -> None:
        """A data batch of any table (``models.records.DATA_BATCHES``)."""
        if not len(batch):
            return
        lag_s = batch.receive_ts - batch.event_ts
        keep = np.isfinite(lag_s)
        if hasattr(batch, "is_snapshot"):
            keep &= ~batch.is_snapshot
        exchanges = batch.exchange
        if (exchanges == exchanges[0]).all():  # the usual batch: one connection's messages
            self._add_lags(exchanges[0], float(batch.receive_ts.max()), lag_s[keep])
            return
        for exchange in np.unique(exchanges[keep]).tolist():
            rows = keep & (exchanges == exchange)
            self._add_lags(exchange, float(batch.receive_ts[rows].max()), lag_s[rows])

    def _add_lags(self, exchange: str, newest_s: float, lags_s: np.ndarray) -> None:
        if not len(lags_s):
            return
        chunks = self._lags.setdefault(exchange, deque())
        chunks.append((newest_s, lags_s))
        rows = self._lag_rows.get(exchange, 0) + len(lags_s)
        # Only the window, and bounded memory at any rate: the oldest chunks go first.
        while len(chunks) > 1 and (chunks[0][0] < newest_s - self.lag_window_s
                                   or rows > self.max_lag_samples):
            rows -= len(chunks.popleft()[1])
        self._lag_rows[exchange] = rows

    def on_quarantine(self, records) -> None:
        for r in records:
            reason = r.reason
            if reason not in self._reasons:
                if len(self._reasons) >= self.max_reasons:
                    reason = OTHER_REASON
                else:
                    self._reasons.add(reason)
            self._quarantine[(r.exchange, reason)] += 1

    def on_gaps(self, gaps) -> None:
        for g in gaps:
            self._gaps[(g.exchange, g.kind)] += 1
            self._recent_gaps.append(g)

    def close(self) -> None:
        """Stop reading the database (before the writer closes it)."""
        if self.storage is not None:
            self.storage.close()

    # ------------------------------------------------------------------ reads
    @property
    def exchanges(self) -> list[str]:
        return sorted(set(self._counts) | set(self._lags) | {e for e, _ in self._quarantine})

    def rates_per_exchange(self) -> dict[str, float]:
        """Messages per second per exchange over the trailing ``rate_window_s`` (empty until two
        ticks have been seen)."""
        return dict(sorted(self._rates.items()))

    def rate_history(self, since_s: float = -math.inf) -> list[tuple[float, dict[str, float]]]:
        """Rate points ``(clock time s, {exchange: messages/s})`` taken after ``since_s``."""
        return [(ts, dict(rates)) for ts, rates in self._history if ts > since_s]

    def counts(self) -> dict[str, dict]:
        """The ledger's counts per exchange at the last tick
        (``Ledger.snapshot()["exchanges"]``)."""
        return {e: dict(c) for e, c in sorted(self._counts.items())}

    def lag_by_exchange(self) -> dict[str, dict[str, float]]:
        """Per exchange, the lag (receive − event time, seconds) of the rows received in the
        trailing ``lag_window_s``: ``median_s``, ``p95_s``, ``max_s`` and ``rows``."""
        out = {}
        for exchange, chunks in sorted(self._lags.items()):
            if not chunks:
                continue
            lags = np.concatenate([c for _, c in chunks])
            if not len(lags):
                continue
            median, p95 = np.percentile(lags, [50, 95])
            out[exchange] = {"median_s": float(median), "p95_s": float(p95),
                             "max_s": float(lags.max()), "rows": int(len(lags))}
        return out

    def quarantine_by_reason(self) -> dict[str, int]:
        """Messages quarantined since attach, by reason (all exchanges), most first."""
        totals: Counter = Counter()
        for (_, reason), n in self._quarantine.items():
            totals[reason] += n
        return dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))

    def quarantine_by_exchange_reason(self) -> list[dict]:
        """``{"exchange", "reason", "messages"}`` rows, most first."""
        return [{"exchange": e, "reason": r, "messages": n}
                for (e, r), n in sorted(self._quarantine.items(), key=lambda kv: (-kv[1], kv[0]))]

    def gaps_by_exchange(self) -> dict[str, dict[str, int]]:
        """Gap rows seen since attach: ``{exchange: {kind: gaps}}``."""
        out: dict[str, dict[str, int]] = {}
        for (exchange, kind), n in sorted(self._gaps.items()):
            out.setdefault(exchange, {})[kind] = n
        return out

    def recent_gaps(self, limit: int = 10) -> list:
        """The newest ``limit`` gaps (``models.records.Gap``), newest first."""
        return list(self._recent_gaps)[::-1][:max(0, limit)]

    def storage_snapshot(self) -> StorageSnapshot | None:
        """The newest database read, or None before the first one (or without a database)."""
        return None if self.storage is None else self.storage.latest


# ---------------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class StorageSnapshot:
    """One read of the database. ``taken_s``: clock time it was asked for; ``read_s``: how long
    it took (wall seconds); ``quality``/``quality_taken_s``: the newest data-quality report of the
    UTC day (``storage.quality.QualityReport``), refreshed less often than the rest."""

    taken_s: float
    read_s: float
    size: object  # storage.health.DatabaseSize
    table_rows: dict[str, int]
    gaps: pd.DataFrame  # storage.health.gaps_summary
    recent_gaps: pd.DataFrame  # storage.health.recent_gaps
    quarantine: pd.DataFrame  # storage.queries.quarantine_by_reason: exchange, reason, n
    archive: object | None  # storage.health.ArchiveSize, None without [storage].archive_dir
    quality: object | None
    quality_taken_s: float | None


def read_storage(con, now_s: float, archive_dir: str, quality_due: bool,
                 recent_gaps_limit: int) -> StorageSnapshot:
    """Everything the archive health page shows from the database, read through ``con``."""
    from storage.health import archive_size, database_size, gaps_summary, recent_gaps
    from storage.quality import quality_report
    from storage.queries import quarantine_by_reason, table_counts

    started = time.perf_counter()
    quality = None
    if quality_due:
        day = dt.datetime.fromtimestamp(now_s, dt.timezone.utc).date()
        quality = quality_report(con, day)
    size, rows = database_size(con), table_counts(con)
    gaps, newest = gaps_summary(con), recent_gaps(con, recent_gaps_limit)
    quarantine = quarantine_by_reason(con)
    archive = archive_size(archive_dir) if archive_dir else None
    return StorageSnapshot(
        taken_s=now_s, read_s=time.perf_counter() - started, size=size, table_rows=rows,
        gaps=gaps, recent_gaps=newest, quarantine=quarantine, archive=archive,
        quality=quality, quality_taken_s=now_s if quality_due else None,
    )


class StorageHealth(PeriodicJob):
    """Reads the database every ``interval_s`` of clock time (the quality report every
    ``quality_wait_s``, or at every read while it is still empty), one read at a time, on its own
    cursor of ``con`` in ``worker``; ``latest`` is the newest ``StorageSnapshot``. A quality
    report is kept until the next one.

    ``close()`` waits for a read in flight and closes the cursor: call it before ``con`` closes
    (DuckDB refuses to close a connection one of its cursors is using)."""

    def __init__(self, con, worker: Worker, *, interval_s: float = 5.0,
                 quality_interval_s: float = 30.0, max_quality_share: float = 0.05,
                 archive_dir: str = "", recent_gaps: int = 10) -> None:
        if not 0 < max_quality_share <= 1:
            raise ValueError(f"max_quality_share must be in (0, 1], got {max_quality_share!r}")
        super().__init__(worker, self._keep, interval_s=interval_s, enabled=True)
        self.cursor = con.cursor()
        self.cursor.execute("SET TimeZone = 'UTC'")
        self.quality_interval_s = quality_interval_s
        self.max_quality_share = max_quality_share
        self._quality_read_s = 0.0
        self.archive_dir = archive_dir
        self.recent_gaps = recent_gaps
        self.latest: StorageSnapshot | None = None
        self.reads = 0
        self._last_quality_s: float | None = None

    def on_tick(self, now_s: float) -> None:
        if not self._may_start(now_s):
            return
        # An empty report (the first seconds of a run) is retried at the next read, not kept
        # for a whole interval.
        last = self.latest.quality if self.latest is not None else None
        quality_due = (self._last_quality_s is None or last is None or not len(last.summary)
                       or now_s - self._last_quality_s >= self.quality_wait_s)
        if quality_due:
            self._last_quality_s = now_s
        self._start(now_s, read_storage, self.cursor, now_s, self.archive_dir, quality_due,
                    self.recent_gaps)

    @property
    def quality_wait_s(self) -> float:
        """Seconds between quality reports: ``quality_interval_s``, or longer when the last report
        took so long that it would use more than ``max_quality_share`` of a thread (the report
        scans every tick of the day, so its cost grows through the day)."""
        return max(self.quality_interval_s, self._quality_read_s / self.max_quality_share)

    def _keep(self, snapshot: StorageSnapshot) -> None:
        self.reads += 1
        if snapshot.quality is not None:
            self._quality_read_s = snapshot.read_s
        if snapshot.quality is None and self.latest is not None:
            snapshot = dataclasses.replace(snapshot, quality=self.latest.quality,
                                           quality_taken_s=self.latest.quality_taken_s)
        self.latest = snapshot

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self.worker.close()  # waits for a read in flight
        self.cursor.close()


def attach(pipeline) -> IngestView:
    """An ``IngestView`` on ``pipeline.graph``, with a ``StorageHealth`` on the writer's
    connection (and the Parquet archive of ``[storage].archive_dir``)."""
    graph = pipeline.graph
    storage = StorageHealth(graph.writer.con, Worker("thread"),
                            archive_dir=pipeline.config.storage.archive_dir)
    view = IngestView(graph.ledger, storage=storage)
    graph.ticks.sink(view.on_tick)
    for stream in graph.data.values():
        stream.sink(view.on_data)
    graph.quarantine.sink(view.on_quarantine)
    graph.gaps.sink(view.on_gaps)
    # The graph emits this before its writer closes the connection the cursor belongs to.
    graph.closing.sink(lambda _now_s: view.close())
    return view
