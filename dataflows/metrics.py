"""The Prometheus text endpoint's content: the pipeline's state as exposition format 0.0.4.

``render_metrics(pipeline, now_s=...)`` reads what the pipeline already keeps and formats it; it
changes nothing and keeps no state of its own, so a scrape costs no work in the graph:

- ingest: messages read per exchange and verdict (``outcome``: data, control, ignored,
  quarantined) and rows committed per exchange and table, from the ledger
  (``dataflows/ledger.py``); duplicates, out-of-order ticks and rows not yet committed;
- lag: seconds since each exchange's last message (``LastMessage``, fed by a sink on
  ``graph.raw``), the age of each asset's latest oracle price, of each asset's latest surface fit;
- gaps: gap rows committed per exchange (sequence skips, disconnects, silences);
- queue depths: rows buffered in the DuckDB writer, messages queued for WebSocket clients (the
  fullest client's queue and the sum), clients connected and dropped;
- the chain terminal: its submission counters by outcome, whether publishing is paused, the
  assets whose on-chain breaker is tripped;
- the hedge desk's safety gate: every breaker's state (one sample per state, the current one 1),
  trips, the trading pause and the dead man's switch countdown;
- feed connections per exchange and state.

Counters end in ``_total`` and only grow while the process runs; rates are the scraper's job
(``rate(hedgeflow_messages_total[1m])`` is messages per second). A value the pipeline does not
know is ``NaN`` (Prometheus' own spelling), never a made-up 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from dataflows.ledger import ROW_TABLES, VERDICTS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BREAKER_STATES = ("closed", "open", "half_open")


class LastMessage:
    """The receive time (epoch s) of the last message read from each exchange: a sink on
    ``graph.raw`` (one ``max`` per raw batch), so ``render_metrics`` can tell how long each feed
    has been quiet."""

    def __init__(self) -> None:
        self.receive_ts: dict[str, float] = {}

    def on_raw(self, batch) -> None:
        if len(batch):
            last = float(batch.receive_ts.max())
            if last > self.receive_ts.get(batch.exchange, -math.inf):
                self.receive_ts[batch.exchange] = last


# ------------------------------------------------------------------------------ exposition


def format_value(value) -> str:
    """A sample value as the text format spells it (``NaN``, ``+Inf``, ``-Inf``; ints as ints)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape_label(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Family:
    """One metric: its name, type ("counter" or "gauge"), help text and samples."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name, self.kind, self.help_text = name, kind, help_text
        self.samples: list[tuple[dict[str, str], object]] = []

    def add(self, value, **labels: str) -> Family:
        self.samples.append((labels, value))
        return self

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {_escape_help(self.help_text)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            out.append(f"{self.name}{{{text}}} {format_value(value)}" if text
                       else f"{self.name} {format_value(value)}")
        return out


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families`` (ends with a newline, as the format requires)."""
    return "\n".join(line for f in families for line in f.lines()) + "\n"


# ------------------------------------------------------------------------------ the pipeline


def _ingest(ledger) -> list[Family]:
    snapshot = ledger.snapshot()["exchanges"]
    messages = Family("hedgeflow_messages_total", "counter",
                      "Messages read, by exchange and verdict (every message has exactly one).")
    rows = Family("hedgeflow_rows_committed_total", "counter",
                  "Rows committed to the database, by exchange and table.")
    gaps = Family("hedgeflow_gaps_total", "counter",
                  "Gap rows committed (sequence skips, disconnects, silences), by exchange.")
    duplicates = Family("hedgeflow_duplicate_trades_total", "counter",
                        "Trades the database refused as already stored, by exchange.")
    out_of_order = Family("hedgeflow_out_of_order_ticks_total", "counter",
                          "Ticks older than their instrument's previous tick, by exchange.")
    pending = Family("hedgeflow_rows_pending", "gauge",
                     "Rows made but neither committed nor refused yet, by exchange.")
    for exchange, c in snapshot.items():
        for verdict in VERDICTS:
            messages.add(c[verdict], exchange=exchange, outcome=verdict)
        for table in ROW_TABLES:
            if table != "gaps":
                rows.add(c[table], exchange=exchange, table=table)
        gaps.add(c["gaps"], exchange=exchange)
        duplicates.add(c["duplicates"], exchange=exchange)
        out_of_order.add(c["out_of_order"], exchange=exchange)
        pending.add(c["pending"], exchange=exchange)
    return [messages, rows, gaps, duplicates, out_of_order, pending]


def _lag(pipeline, now_s: float, last_message: LastMessage | None) -> list[Family]:
    out = []
    if last_message is not None:
        quiet = Family("hedgeflow_last_message_age_seconds", "gauge",
                       "Seconds since the last message was read from each exchange.")
        for exchange, ts in sorted(last_message.receive_ts.items()):
            quiet.add(now_s - ts, exchange=exchange)
        out.append(quiet)
    views = getattr(pipeline, "views", {}) or {}
    oracle = views.get("oracle")
    if oracle is not None:
        age = Family("hedgeflow_oracle_price_age_seconds", "gauge",
                     "Seconds since each asset's latest oracle price.")
        ok = Family("hedgeflow_oracle_price_ok", "gauge",
                    "1 when each asset's latest oracle price has status ok (fit to publish).")
        sources = Family("hedgeflow_oracle_sources", "gauge",
                         "Sources in each asset's latest oracle price.")
        for asset, p in oracle.latest().items():
            age.add(now_s - p.ts, asset=asset)
            ok.add(p.status == "ok", asset=asset)
            sources.add(int(p.n_sources), asset=asset)
        out += [age, ok, sources]
    analytics = views.get("analytics")
    if analytics is not None:
        fit_age = Family("hedgeflow_surface_age_seconds", "gauge",
                         "Seconds since each asset's latest successful surface fit.")
        for asset in analytics.assets:
            outcome = analytics.latest_fit(asset)
            if outcome is not None:
                fit_age.add(now_s - outcome.ts, asset=asset)
        out.append(fit_age)
    return out


def _connections(pipeline) -> list[Family]:
    view = (getattr(pipeline, "views", {}) or {}).get("connections")
    if view is None:
        return []
    state = Family("hedgeflow_feed_connections", "gauge",
                   "Feed connections by exchange and last health event (connected, "
                   "disconnected, silent).")
    disconnects = Family("hedgeflow_feed_disconnects_total", "counter",
                         "Feed disconnections seen, by exchange.")
    by_state: dict[tuple[str, str], int] = {}
    drops: dict[str, int] = {}
    for row in view.rows():
        key = (row["exchange"], row.get("state", ""))
        by_state[key] = by_state.get(key, 0) + 1
        drops[row["exchange"]] = drops.get(row["exchange"], 0) + row["disconnects"]
    for (exchange, kind), n in sorted(by_state.items()):
        state.add(n, exchange=exchange, state=kind)
    for exchange, n in sorted(drops.items()):
        disconnects.add(n, exchange=exchange)
    return [state, disconnects]


def _queues(graph, api) -> list[Family]:
    out = [Family("hedgeflow_writer_buffered_rows", "gauge",
                  "Rows buffered in the DuckDB writer, waiting for the next flush.")
           .add(int(graph.writer.buffered_rows))]
    if api is not None:
        hub = api.hub
        depths = hub.queue_depths()
        out += [
            Family("hedgeflow_api_clients", "gauge", "WebSocket clients connected.")
            .add(len(depths)),
            Family("hedgeflow_api_client_queue_max", "gauge",
                   "Messages queued for the WebSocket client furthest behind.")
            .add(max(depths, default=0)),
            Family("hedgeflow_api_client_queue_messages", "gauge",
                   "Messages queued for all WebSocket clients.").add(sum(depths)),
            Family("hedgeflow_api_client_queue_capacity", "gauge",
                   "Messages a WebSocket client may have queued before it is dropped.")
            .add(hub.queue_size),
        ]
        published = Family("hedgeflow_api_messages_published_total", "counter",
                           "Messages published to WebSocket subscribers, by topic.")
        for topic, n in sorted(hub.published.items()):
            published.add(n, topic=topic)
        dropped = Family("hedgeflow_api_clients_dropped_total", "counter",
                         "WebSocket clients disconnected by the server, by reason.")
        for reason, n in sorted(hub.dropped.items()):
            dropped.add(n, reason=reason)
        out += [published, dropped]
    return out


def _chain(publisher) -> list[Family]:
    if publisher is None:
        return []
    submissions = Family("hedgeflow_chain_submissions_total", "counter",
                         "Chain terminal events by outcome (decided, sent, confirmed, retries, "
                         "replaced, failed, reverted, dropped_queue_full, errors, ...).")
    for outcome, n in sorted(publisher.stats.counts.items()):
        submissions.add(n, outcome=outcome)
    tripped = Family("hedgeflow_chain_breaker_tripped", "gauge",
                     "1 when the Oracle contract's breaker of an asset is tripped.")
    for asset in sorted(publisher.assets):
        tripped.add(asset in publisher.tripped, asset=asset)
    return [
        submissions,
        Family("hedgeflow_chain_publishing_paused", "gauge",
               "1 while oracle publishing is paused off-chain (operator or pause file).")
        .add(bool(publisher.paused)),
        Family("hedgeflow_chain_contract_paused", "gauge",
               "1 while the Oracle contract itself is paused.").add(bool(publisher.chain_paused)),
        tripped,
    ]


def _safety(pipeline, now_s: float) -> list[Family]:
    node = getattr(pipeline, "hedge", None)
    gate = getattr(getattr(node, "desk", None), "gate", None)
    if gate is None:
        return []
    state = Family("hedgeflow_breaker_state", "gauge",
                   "The hedge desk's circuit breakers: 1 for each breaker's current state.")
    trips = Family("hedgeflow_breaker_trips_total", "counter",
                   "Times each of the hedge desk's circuit breakers opened.")
    for name, status in gate.breaker_states().items():
        for s in BREAKER_STATES:
            state.add(status.state == s, breaker=name, state=s)
        trips.add(int(status.trips), breaker=name)
    return [
        state, trips,
        Family("hedgeflow_trading_paused", "gauge",
               "1 while the hedge desk's trading is paused (reducing orders still pass).")
        .add(bool(gate.pause_state.paused)),
        Family("hedgeflow_dead_mans_switch_seconds_left", "gauge",
               "Seconds before the dead man's switch fires without an ok oracle price "
               "(NaN before the first).").add(gate.seconds_left(now_s)),
    ]


def collect(pipeline, *, now_s: float, api=None, last_message: LastMessage | None = None
            ) -> list[Family]:
    """Every metric of the module docstring from a started ``pipeline`` (``api``: the
    ``dataflows.api.ApiServer`` whose WebSocket clients to count; ``now_s``: the clock's time)."""
    graph = pipeline.graph
    return [
        *_ingest(graph.ledger),
        *_lag(pipeline, now_s, last_message),
        *_connections(pipeline),
        *_queues(graph, api),
        *_chain(graph.publisher),
        *_safety(pipeline, now_s),
    ]


def render_metrics(pipeline, *, now_s: float, api=None, last_message: LastMessage | None = None
                   ) -> str:
    """The exposition text (format 0.0.4) of ``collect``."""
    return render(collect(pipeline, now_s=now_s, api=api, last_message=last_message))
