"""The scheduled export inside the graph: Parquet archive and retention, on the clock.

Every ``interval_s`` seconds of the graph's clock (daily by default; the first run comes one
interval after start), the writer flushes, every day up to today is exported to the archive
(idempotently: unchanged partitions are not rewritten, today's grows), and days older than
``hot_days`` are deleted from DuckDB once the archive holds them verified. It runs on the writer's
own connection, between flushes, so it sees every committed row and never a half-written batch.
A failed export is logged and retried at the next interval; the hot data is never touched then.
"""

from __future__ import annotations

import datetime as dt
import logging

from dataflows.logs import log_event
from storage.archive import ArchiveError, apply_retention, export_archive
from storage.writer import DuckDBWriter

log = logging.getLogger(__name__)


class ScheduledExport:
    def __init__(self, writer: DuckDBWriter, archive: str, interval_s: float, hot_days: int) -> None:
        self.writer = writer
        self.archive = archive
        self.interval_s = interval_s
        self.hot_days = hot_days
        self.next_run: float | None = None
        self.runs = 0
        self.failures = 0

    def on_tick(self, now: float):
        """Run when due; return the commit of the flush that preceded the export, if any."""
        if self.next_run is None:
            self.next_run = now + self.interval_s
            return None
        if now < self.next_run:
            return None
        self.next_run = now + self.interval_s
        commit = self.writer.flush()
        self.run(now)
        return commit

    def run(self, now: float) -> None:
        today = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).date()
        try:
            result = export_archive(self.writer.con, self.archive, None, today, exported_at=now)
            retention = apply_retention(self.writer.con, self.archive, self.hot_days, today)
        except ArchiveError as exc:
            self.failures += 1
            log_event(log, logging.ERROR, "scheduled export failed", archive=self.archive,
                      error=str(exc))
            return
        self.runs += 1
        log_event(
            log, logging.INFO, "archive exported", archive=self.archive,
            written=len(result.written), unchanged=len(result.unchanged),
            deleted_rows=sum(retention.deleted.values()),
        )
