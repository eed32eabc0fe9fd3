"""Archive health page: is the collector getting everything, and what does keeping it cost?

Served by ``hedgeflow run`` at http://127.0.0.1:5006/archive, or on its own with
``panel serve dashboards/archive.py``. It shows, per exchange, the ingest rate (messages per
second, from the ledger) and its history, the lag (receive time − event time), each feed
connection's state, quarantine by reason, gaps, the database's size and rows per table (and the
Parquet archive folder when ``[storage].archive_dir`` is set), and today's completeness and
compression from the data-quality report (``hedgeflow quality``).

The page only reads. Live figures come from the pipeline's ``IngestView`` and ``ConnectionView``
(dataflows/views), polled every ``refresh_ms``; database figures come from the view's
``StorageHealth``, which reads the database every few seconds off the loop for every session at
once (no session queries the database itself).

Values a browser test reads carry stable CSS classes: ``archive-rate[data-exchange=...]``
(messages/s), ``archive-lag[data-exchange=...]`` (median lag, ms),
``archive-messages[data-exchange=...]``, ``archive-connection-state[data-exchange=...]``,
``archive-quarantine[data-reason=...]``, ``archive-gaps[data-exchange=...]``,
``archive-db-bytes``, ``archive-table-rows[data-table=...]``, ``archive-archive-bytes``,
``archive-completeness[data-exchange=...]``, ``archive-compression[data-exchange=...]``,
``archive-updated``.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn

from dashboards.session import session_callback

hv.extension("bokeh", logo=False)

RATE_HISTORY_POINTS = 900  # one a second: the last 15 minutes
RECENT_GAPS = 10
MAX_REASON_CHARS = 90
_TABLE = 'style="border-collapse:collapse;width:100%;font-size:0.92em"'
_CELL = 'style="padding:2px 8px;border-bottom:1px solid #eee;text-align:right"'
_LEFT = 'style="padding:2px 8px;border-bottom:1px solid #eee;text-align:left"'
_STATE_COLOURS = {"connected": "#1b7f3b", "disconnected": "#b00020", "silent": "#b26a00"}


# --------------------------------------------------------------------------- formatting


def _finite(x) -> bool:
    return (x is not None and isinstance(x, (int, float, np.integer, np.floating))
            and math.isfinite(x))


def fmt_rate(x) -> str:
    """Messages per second with one decimal; an em dash when unknown."""
    return f"{x:,.1f}" if _finite(x) else "—"


def fmt_ms(seconds) -> str:
    """Seconds shown as milliseconds (``12.3``)."""
    return f"{seconds * 1e3:,.1f}" if _finite(seconds) else "—"


def fmt_bytes(n) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ``3.2 MiB``."""
    if not _finite(n):
        return "—"
    v = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(v) < 1024:
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def fmt_pct(x) -> str:
    """A fraction as a percentage: 0.9987 -> ``99.87 %``."""
    return f"{x * 100:.2f} %" if _finite(x) else "—"


def _utc(ts_s) -> str:
    if not _finite(ts_s):
        return "—"
    return datetime.fromtimestamp(ts_s, tz=timezone.utc).strftime("%H:%M:%S UTC")


def _e(text) -> str:
    return html.escape(str(text))


def _td(text: str, css: str = "", attrs: str = "", left: bool = False) -> str:
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}{attrs} {_LEFT if left else _CELL}>{text}</td>"


def _table(headers: list[str], rows: list[str], css: str) -> str:
    head = "".join(f"<th {_LEFT if i == 0 else _CELL}>{_e(h)}</th>" for i, h in enumerate(headers))
    return f'<table class="{css}" {_TABLE}><tr>{head}</tr>{"".join(rows)}</table>'


def _none(text: str, css: str) -> str:
    return f'<div class="{css}" style="color:#777">{_e(text)}</div>'


# --------------------------------------------------------------------------- sections


def ingest_html(exchanges: list[str], rates: dict, lags: dict, counts: dict,
                connections: list[dict]) -> str:
    """Per exchange: messages/s, lag, messages read, quarantined, gaps and connection states."""
    states: dict[str, list[str]] = {}
    for c in connections:
        states.setdefault(c["exchange"], []).append(c.get("state", "?"))
    rows = []
    for ex in exchanges:
        a = f' data-exchange="{_e(ex)}"'
        lag, c = lags.get(ex, {}), counts.get(ex, {})
        conn = states.get(ex, [])
        up = sum(s == "connected" for s in conn)
        conn_text = f"{up}/{len(conn)} connected" if conn else "—"
        rows.append(
            "<tr>" + _td(_e(ex), left=True)
            + _td(fmt_rate(rates.get(ex)), "archive-rate", a)
            + _td(fmt_ms(lag.get("median_s")), "archive-lag", a)
            + _td(fmt_ms(lag.get("p95_s")), "archive-lag-p95", a)
            + _td(f'{c.get("messages", 0):,}', "archive-messages", a)
            + _td(f'{c.get("quarantined", 0):,}', "archive-quarantined", a)
            + _td(f'{c.get("gaps", 0):,}', "archive-gap-rows", a)
            + _td(f'{c.get("pending", 0):,}', "archive-pending", a)
            + _td(_e(conn_text), "archive-connections", a) + "</tr>"
        )
    if not rows:
        return _none("No message read yet.", "archive-ingest")
    return _table(["exchange", "messages/s", "lag median (ms)", "lag p95 (ms)", "messages",
                   "quarantined", "gaps", "pending rows", "connections"], rows, "archive-ingest")


def connections_html(connections: list[dict]) -> str:
    """Each feed connection: its state since when, connects, drops and silences."""
    rows = []
    for c in connections:
        state = c.get("state", "?")
        colour = _STATE_COLOURS.get(state, "#444")
        a = f' data-exchange="{_e(c["exchange"])}" data-connection="{_e(c["connection"])}"'
        rows.append(
            "<tr>" + _td(_e(c["exchange"]), left=True) + _td(_e(c["connection"]), left=True)
            + f'<td class="archive-connection-state"{a} {_LEFT}>'
              f'<span style="color:{colour};font-weight:600">{_e(state)}</span></td>'
            + _td(_utc(c.get("since"))) + _td(str(c.get("connects", 0)))
            + _td(str(c.get("disconnects", 0))) + _td(str(c.get("silences", 0)))
            + _td(_e(c.get("detail") or ""), left=True) + "</tr>"
        )
    if not rows:
        return _none("No connection yet.", "archive-connections-table")
    return _table(["exchange", "connection", "state", "since", "connects", "drops", "silences",
                   "detail"], rows, "archive-connections-table")


def quarantine_html(live: list[dict], stored: pd.DataFrame | None) -> str:
    """Quarantined messages by exchange and reason: since this run started (the graph's stream)
    and in the database (every run), when read."""
    in_db: dict[tuple[str, str], int] = {}
    if stored is not None:
        in_db = {(e, r): int(n) for e, r, n in stored[["exchange", "reason", "n"]].itertuples(
            index=False, name=None)}
    since_start = {(r["exchange"], r["reason"]): r["messages"] for r in live}
    keys = sorted(set(in_db) | set(since_start),
                  key=lambda k: (-since_start.get(k, 0), -in_db.get(k, 0), k))
    rows = []
    for ex, reason in keys:
        short = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS - 1] + "…"
        a = f' data-exchange="{_e(ex)}" data-reason="{_e(reason)}"'
        rows.append(
            "<tr>" + _td(_e(ex), left=True)
            + _td(_e(short), left=True, attrs=f' title="{_e(reason)}"')
            + _td(f"{since_start.get((ex, reason), 0):,}", "archive-quarantine", a)
            + _td(f"{in_db[(ex, reason)]:,}" if (ex, reason) in in_db else "—",
                  "archive-quarantine-stored", a) + "</tr>"
        )
    if not rows:
        return _none("Nothing quarantined.", "archive-quarantine-table")
    return _table(["exchange", "reason", "this run", "in database"], rows,
                  "archive-quarantine-table")


def gaps_html(summary: pd.DataFrame | None, recent: pd.DataFrame | None) -> str:
    """Gaps in the database per exchange and kind, and the newest ones."""
    if summary is None:
        return _none("Reading the database…", "archive-gaps-table")
    if not len(summary):
        return _none("No gap recorded.", "archive-gaps-table")
    rows = []
    for r in summary.itertuples(index=False):
        a = f' data-exchange="{_e(r.exchange)}" data-kind="{_e(r.kind)}"'
        rows.append(
            "<tr>" + _td(_e(r.exchange), left=True) + _td(_e(r.kind), left=True)
            + _td(f"{int(r.gaps):,}", "archive-gaps", a) + _td(f"{int(r.open_gaps):,}")
            + _td(f"{float(r.gap_seconds):,.1f}") + _td(f"{int(r.missing):,}")
            + _td(_utc(r.last_start_s)) + "</tr>"
        )
    out = _table(["exchange", "kind", "gaps", "open", "closed total (s)", "ids missing",
                  "last started"], rows, "archive-gaps-table")
    if recent is not None and len(recent):
        newest = []
        for r in recent.itertuples(index=False):
            length = f"{r.end_s - r.start_s:,.1f}" if _finite(r.end_s) else "open"
            newest.append(
                "<tr>" + _td(_e(r.exchange), left=True) + _td(_e(r.instrument), left=True)
                + _td(_e(r.kind), left=True) + _td(_utc(r.start_s)) + _td(length)
                + _td(_e(r.detail), left=True) + "</tr>"
            )
        out += "<h4>Newest gaps</h4>" + _table(
            ["exchange", "instrument", "kind", "started", "length (s)", "detail"], newest,
            "archive-recent-gaps")
    return out


def storage_html(snapshot) -> str:
    """The database file, its rows per table, and the Parquet archive folder."""
    if snapshot is None:
        return _none("Reading the database…", "archive-storage")
    size = snapshot.size
    parts = [
        '<div class="archive-storage">',
        f'<div>database <code>{_e(size.path or "(in memory)")}</code>: '
        f'<span class="archive-db-bytes" style="font-weight:600">'
        f"{fmt_bytes(size.file_bytes + size.wal_bytes)}</span> on disk (file "
        f'{fmt_bytes(size.file_bytes)} with {fmt_bytes(size.used_bytes)} of blocks in use, '
        f'<span class="archive-wal-bytes">{fmt_bytes(size.wal_bytes)}</span> write-ahead log '
        "not yet checkpointed)</div>",
    ]
    if snapshot.archive is not None:
        parts.append(
            f'<div>Parquet archive <code>{_e(snapshot.archive.url)}</code>: '
            f'<span class="archive-archive-bytes" style="font-weight:600">'
            f"{fmt_bytes(snapshot.archive.bytes)}</span> in {snapshot.archive.files:,} file(s)"
            "</div>")
    else:
        parts.append('<div style="color:#777">No Parquet archive ([storage].archive_dir is not '
                     "set).</div>")
    parts.append(
        f'<div style="color:#777;font-size:0.85em">read at <span class="archive-updated">'
        f"{_utc(snapshot.taken_s)}</span> in {snapshot.read_s * 1e3:,.0f} ms</div></div>")
    rows = [
        "<tr>" + _td(_e(t), left=True)
        + _td(f"{n:,}", "archive-table-rows", f' data-table="{_e(t)}"') + "</tr>"
        for t, n in sorted(snapshot.table_rows.items(), key=lambda kv: (-kv[1], kv[0])) if n
    ]
    parts.append(_table(["table", "rows"], rows, "archive-tables") if rows
                 else _none("Every table is empty.", "archive-tables"))
    return "".join(parts)


def completeness_html(report, taken_s: float | None = None) -> str:
    """Today's data-quality summary per exchange (``storage.quality``): ticks, disorder, gaps,
    quarantine, trade-id completeness, bytes per tick and compression against the raw messages;
    ``taken_s``: when the report was made (epoch s)."""
    if report is None:
        return _none("Reading the database…", "archive-completeness-table")
    summary = report.summary
    if not len(summary):
        return _none("No data today.", "archive-completeness-table")
    rows = []
    for r in summary.itertuples(index=False):
        a = f' data-exchange="{_e(r.exchange)}"'
        # The quality report charges each hot row its checkpointed segments' bytes: 0 before
        # the first checkpoint, which is "not measured yet", not "free".
        measured = _finite(r.stored_bytes) and r.stored_bytes > 0
        rows.append(
            "<tr>" + _td(_e(r.exchange), left=True) + _td(f"{int(r.ticks):,}", "archive-ticks", a)
            + _td(f"{int(r.out_of_order):,}") + _td(f"{int(r.gaps):,}")
            + _td(f"{int(r.quarantined):,}")
            + _td(fmt_pct(r.completeness), "archive-completeness", a)
            + _td(f"{r.bytes_per_tick:,.1f}" if measured else "—")
            + _td(fmt_bytes(None if pd.isna(r.raw_bytes) else int(r.raw_bytes)))
            + _td(fmt_bytes(r.stored_bytes) if measured else "—")
            + _td(f"{r.compression_ratio:,.1f}×" if measured and _finite(r.compression_ratio)
                  else "—", "archive-compression", a) + "</tr>"
        )
    day = report.day.isoformat() if report.day else "every day"
    when = f", report of {_utc(taken_s)}" if taken_s is not None else ""
    note = (f'<div style="color:#777;font-size:0.85em">{_e(day)} (UTC{when}): completeness is '
            "stored trades over the trade-id range where the venue numbers trades consecutively "
            "(Binance, Coinbase); compression is raw message bytes over stored bytes. Rows still "
            "in the write-ahead log have no measured size until DuckDB checkpoints them (—)."
            "</div>")
    return _table(["exchange", "ticks", "out of order", "gaps", "quarantined", "completeness",
                   "bytes/tick", "raw", "stored", "compression"], rows,
                  "archive-completeness-table") + note


# --------------------------------------------------------------------------- page


def _utc_ms(epoch_s) -> np.ndarray:
    """Naive UTC datetimes at millisecond precision (Bokeh's resolution)."""
    return np.round(np.asarray(epoch_s, dtype=np.float64) * 1e3).astype("datetime64[ms]")


class _RateChart:
    """Messages per second per exchange over time, streamed into one session's chart."""

    def __init__(self, exchanges: list[str]) -> None:
        self.exchanges = list(exchanges)
        self.last_s = -math.inf
        empty = pd.DataFrame({"time": np.array([], dtype="datetime64[ms]"),
                              **{e: np.array([], dtype=float) for e in self.exchanges}})
        self.buffer = hv.streams.Buffer(empty, length=RATE_HISTORY_POINTS, index=False)

        def chart(data):
            curves = [hv.Curve(data, "time", (e, "messages/s"), label=e) for e in self.exchanges]
            return hv.Overlay(curves).opts(
                height=260, responsive=True, xlabel="time (UTC)", ylabel="messages/s",
                title="Ingest rate per exchange", legend_position="top_left", framewise=True,
            )

        self.pane = pn.pane.HoloViews(hv.DynamicMap(chart, streams=[self.buffer]),
                                      sizing_mode="stretch_width")

    def update(self, view) -> None:
        new = view.rate_history(since_s=self.last_s)
        if not new:
            return
        self.last_s = new[-1][0]
        self.buffer.send(pd.DataFrame({
            "time": _utc_ms([ts for ts, _ in new]),
            **{e: [float(r.get(e, math.nan)) for _, r in new] for e in self.exchanges},
        }))


def archive_view_page(view, connections, exchanges: list[str],
                      refresh_ms: int = 500) -> pn.viewable.Viewable:
    """A new page (one per browser session) polling the ``IngestView`` ``view`` and the
    ``ConnectionView`` ``connections``; ``exchanges`` are the configured feeds (the chart's
    lines)."""
    chart = _RateChart(exchanges)
    panes = {name: pn.pane.HTML("", sizing_mode="stretch_width") for name in
             ("ingest", "connections", "quarantine", "gaps", "storage", "completeness")}
    drawn: dict[str, str] = {}
    seen = {"snapshot": None}

    def show(name: str, text: str) -> None:
        if drawn.get(name) != text:  # an unchanged pane sends nothing to the browser
            drawn[name] = text
            panes[name].object = text

    def refresh() -> None:
        conns = connections.rows() if connections is not None else []
        names = list(dict.fromkeys([*exchanges, *view.exchanges]))
        show("ingest", ingest_html(names, view.rates_per_exchange(), view.lag_by_exchange(),
                                   view.counts(), conns))
        show("connections", connections_html(conns))
        snapshot = view.storage_snapshot()
        show("quarantine", quarantine_html(view.quarantine_by_exchange_reason(),
                                           snapshot.quarantine if snapshot else None))
        chart.update(view)
        if snapshot is not seen["snapshot"] or "storage" not in drawn:
            seen["snapshot"] = snapshot
            show("gaps", gaps_html(snapshot.gaps if snapshot else None,
                                   snapshot.recent_gaps.head(RECENT_GAPS) if snapshot else None))
            show("storage", storage_html(snapshot))
            show("completeness", completeness_html(snapshot.quality if snapshot else None,
                                                   snapshot.quality_taken_s if snapshot else None))

    refresh()
    session_callback(refresh, refresh_ms)
    def section(title: str, *objects) -> list:
        # Plain headings, not Cards: every session builds these, and a Card is five models more.
        return [pn.pane.HTML(f'<h3 style="margin:14px 0 4px 0">{_e(title)}</h3>',
                             sizing_mode="stretch_width"), *objects]

    return pn.Column(
        pn.pane.Markdown("# hedgeflow · archive health\nWhat the collector reads per exchange, "
                         "what it refuses or misses, and what keeping it costs."),
        *section("Ingest", panes["ingest"], chart.pane),
        *section("Feed connections", panes["connections"]),
        *section("Quarantine by reason", panes["quarantine"]),
        *section("Gaps", panes["gaps"]),
        *section("Storage", panes["storage"]),
        *section("Completeness and compression (today)", panes["completeness"]),
        sizing_mode="stretch_width",
    )


def archive_page(pipeline) -> pn.viewable.Viewable:
    """The archive health page of ``pipeline`` (its ``ingest`` and ``connections`` views)."""
    return archive_view_page(pipeline.views["ingest"], pipeline.views.get("connections"),
                             list(pipeline.config.feeds.exchanges),
                             pipeline.config.dashboard.refresh_ms)


if pn.state.served:
    # `panel serve dashboards/archive.py`: one pipeline shared by the sessions of this process.
    from dashboards.session import serve_page

    serve_page(archive_page, "Archive health")
