"""The archive health page without a browser: its sections' HTML, and a page over real views.

Outside a Bokeh server ``pn.state.add_periodic_callback`` schedules nothing, so the page's
refresh is captured by replacing it with a recorder and called by hand, as the server would every
``refresh_ms``. The views are real: an ``IngestView`` on a real graph writing a DuckDB file, its
database reads done inline.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from types import SimpleNamespace

import holoviews as hv
import pandas as pd
import panel as pn
import pytest

from dashboards import archive as page_mod
from dashboards.archive import (
    archive_page, completeness_html, connections_html, fmt_bytes, fmt_ms, fmt_pct, fmt_rate,
    gaps_html, ingest_html, quarantine_html, storage_html,
)
from dataflows.clock import SimulatedClock
from dataflows.graph import build_graph
from dataflows.views.feeds import ConnectionView
from dataflows.views.ingest import IngestView, StorageHealth
from dataflows.workers import Worker
from models.oracle import MedianOracle, MedianOracleConfig
from models.records import ConnectionEvent
from storage.health import ArchiveSize, DatabaseSize
from storage.writer import DuckDBWriter
from tests.conftest import make_raw

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def book(u: int, bid: str = "30000.0", ask: str = "30001.0") -> str:
    return json.dumps({"stream": "btcusdt@bookTicker",
                       "data": {"u": u, "s": "BTCUSDT", "b": bid, "B": "1", "a": ask, "A": "1"}})


def cell(html_text: str, css: str, **attrs) -> str:
    """The text of the element of class ``css`` whose data attributes are ``attrs``."""
    sel = "".join(f'[^>]*data-{k}="{re.escape(v)}"' for k, v in attrs.items())
    m = re.search(rf'class="{css}"{sel}[^>]*>(.*?)</td>', html_text, re.S)
    assert m, (css, attrs, html_text)
    return re.sub(r"<[^>]+>", "", m.group(1))


# --------------------------------------------------------------------------- formatting


def test_formatting():
    assert fmt_rate(1234.56) == "1,234.6"
    assert fmt_rate(None) == "—" and fmt_rate(float("nan")) == "—"
    assert fmt_ms(0.01234) == "12.3" and fmt_ms(None) == "—"
    assert fmt_bytes(512) == "512 B" and fmt_bytes(1536) == "1.5 KiB"
    assert fmt_bytes(3 * 1024**3) == "3.0 GiB" and fmt_bytes(5 * 1024**4) == "5.0 TiB"
    assert fmt_pct(0.99874) == "99.87 %" and fmt_pct(float("nan")) == "—"


# --------------------------------------------------------------------------- sections


def test_ingest_rows_per_exchange():
    text = ingest_html(
        ["binance", "kraken"], {"binance": 1234.5},
        {"binance": {"median_s": 0.0123, "p95_s": 0.05}},
        {"binance": {"messages": 98765, "quarantined": 3, "gaps": 2, "pending": 10}},
        [{"exchange": "binance", "connection": "a", "state": "connected"},
         {"exchange": "binance", "connection": "b", "state": "disconnected"}],
    )
    assert cell(text, "archive-rate", exchange="binance") == "1,234.5"
    assert cell(text, "archive-lag", exchange="binance") == "12.3"
    assert cell(text, "archive-lag-p95", exchange="binance") == "50.0"
    assert cell(text, "archive-messages", exchange="binance") == "98,765"
    assert cell(text, "archive-quarantined", exchange="binance") == "3"
    assert cell(text, "archive-connections", exchange="binance") == "1/2 connected"
    # an exchange not heard from yet shows dashes, not zeros that look like a measured rate
    assert cell(text, "archive-rate", exchange="kraken") == "—"
    assert cell(text, "archive-connections", exchange="kraken") == "—"
    assert "No message" in ingest_html([], {}, {}, {}, [])


def test_connections_table_escapes_and_colours():
    text = connections_html([{"exchange": "kraken", "connection": "<ws>", "state": "silent",
                              "since": T0, "connects": 2, "disconnects": 1, "silences": 1,
                              "detail": "<b>quiet</b>"}])
    assert cell(text, "archive-connection-state", exchange="kraken",
                connection="&lt;ws&gt;") == "silent"
    assert "<b>quiet" not in text and "&lt;b&gt;quiet&lt;/b&gt;" in text
    assert "22:13:20 UTC" in text and "#b26a00" in text
    assert "No connection" in connections_html([])


def test_quarantine_joins_this_run_and_the_database():
    stored = pd.DataFrame({"exchange": ["binance", "kraken"], "reason": ["bad json", "old"],
                           "n": [7, 2]})
    live = [{"exchange": "binance", "reason": "bad json", "messages": 3},
            {"exchange": "coinbase", "reason": "x" * 200, "messages": 1}]
    text = quarantine_html(live, stored)
    assert cell(text, "archive-quarantine", exchange="binance", reason="bad json") == "3"
    assert cell(text, "archive-quarantine-stored", exchange="binance", reason="bad json") == "7"
    assert cell(text, "archive-quarantine", exchange="kraken", reason="old") == "0"
    assert cell(text, "archive-quarantine-stored", exchange="coinbase", reason="x" * 200) == "—"
    assert "x" * 89 + "…" in text  # long reasons are shortened, with the whole in the title
    # most quarantined this run first
    assert text.index("bad json") < text.index("xxxx") < text.index("old")
    assert "Nothing quarantined" in quarantine_html([], None)


def test_gaps_summary_and_newest():
    summary = pd.DataFrame({"exchange": ["binance"], "kind": ["sequence"], "gaps": [4],
                            "open_gaps": [1], "gap_seconds": [2.5], "missing": [12],
                            "last_start_s": [T0]})
    recent = pd.DataFrame({"exchange": ["binance", "binance"], "instrument": ["BTCUSDT", "*"],
                           "kind": ["sequence", "disconnect"], "start_s": [T0, T0 - 5],
                           "end_s": [float("nan"), T0 - 2], "missing": [12, -1],
                           "detail": ["ids 3..14", "dropped"]})
    text = gaps_html(summary, recent)
    assert cell(text, "archive-gaps", exchange="binance", kind="sequence") == "4"
    assert "open" in text and "3.0" in text and "ids 3..14" in text
    assert "Reading the database" in gaps_html(None, None)
    assert "No gap recorded" in gaps_html(summary.iloc[:0], None)


def _snapshot(archive=None, quality=None):
    return SimpleNamespace(
        taken_s=T0, read_s=0.012,
        size=DatabaseSize("/data/h.duckdb", 3 * 1024**2 - 2048, 2048, 262144, 12, 10),
        table_rows={"quotes": 1200, "trades": 30, "gaps": 0}, archive=archive, quality=quality)


def test_storage_sizes_and_rows():
    text = storage_html(_snapshot())
    # the headline is all the database takes on disk: the file and its write-ahead log
    assert re.search(r'class="archive-db-bytes"[^>]*>3\.0 MiB<', text)
    assert re.search(r'class="archive-wal-bytes">2\.0 KiB<', text)
    assert "2.5 MiB of blocks in use" in text  # 10 blocks of 256 KiB
    assert cell(text, "archive-table-rows", table="quotes") == "1,200"
    assert 'data-table="gaps"' not in text  # empty tables are left out
    assert "archive_dir is not set" in text and "archive-updated" in text
    with_archive = storage_html(_snapshot(archive=ArchiveSize("/a", 4, 5 * 1024**2)))
    assert re.search(r'class="archive-archive-bytes"[^>]*>5\.0 MiB<', with_archive)
    assert "in 4 file(s)" in with_archive
    assert "Reading the database" in storage_html(None)


def test_completeness_from_a_quality_summary():
    summary = pd.DataFrame([{
        "exchange": "binance", "ticks": 5000, "out_of_order": 2, "gaps": 1, "quarantined": 3,
        "completeness": 0.995, "bytes_per_tick": 12.25, "raw_bytes": 1_000_000,
        "stored_bytes": 100_000.0, "compression_ratio": 10.0}])
    report = SimpleNamespace(day=dt.date(2023, 11, 14), summary=summary)
    text = completeness_html(report, taken_s=T0)
    assert cell(text, "archive-completeness", exchange="binance") == "99.50 %"
    assert cell(text, "archive-compression", exchange="binance") == "10.0×"
    assert cell(text, "archive-ticks", exchange="binance") == "5,000"
    assert "2023-11-14" in text and "report of 22:13:20 UTC" in text
    assert "97.7 KiB" in text and "12.2" in text
    # before DuckDB checkpoints, stored bytes are not measured: no size, no ratio
    unmeasured = summary.assign(stored_bytes=0.0, bytes_per_tick=0.0, compression_ratio=math.inf)
    text = completeness_html(SimpleNamespace(day=None, summary=unmeasured))
    assert cell(text, "archive-compression", exchange="binance") == "—"
    assert "0 B" not in text and "every day" in text
    no_ids = summary.assign(completeness=float("nan"), raw_bytes=pd.NA,
                            compression_ratio=float("nan"))
    text = completeness_html(SimpleNamespace(day=None, summary=no_ids))
    assert cell(text, "archive-completeness", exchange="binance") == "—"
    assert cell(text, "archive-compression", exchange="binance") == "—"
    assert "Reading the database" in completeness_html(None)


# --------------------------------------------------------------------------- the page



@pytest.fixture
def live(db_path):
    """A real graph on a DuckDB file with an IngestView (inline reads) and a ConnectionView."""
    clock = SimulatedClock(T0)
    g = build_graph(clock=clock, writer=DuckDBWriter(db_path),
                    oracle=MedianOracle(MedianOracleConfig(min_sources=1)))
    view = IngestView(g.ledger, storage=StorageHealth(g.writer.con, Worker("inline"),
                                                      interval_s=1.0, quality_interval_s=1.0))
    g.ticks.sink(view.on_tick)
    for s in g.data.values():
        s.sink(view.on_data)
    g.quarantine.sink(view.on_quarantine)
    g.gaps.sink(view.on_gaps)
    conns = ConnectionView()
    g.health.sink(conns.on_event)
    pipeline = SimpleNamespace(
        graph=g, views={"ingest": view, "connections": conns},
        config=SimpleNamespace(feeds=SimpleNamespace(exchanges=["binance", "kraken"]),
                               dashboard=SimpleNamespace(refresh_ms=250)))
    yield pipeline, clock
    view.close()
    g.writer.close()


def _html(page) -> str:
    return "".join(str(p.object) for p in page.select(pn.pane.HTML))


def test_page_over_a_live_graph(periodic, live):
    pipeline, clock = live
    g = pipeline.graph
    page = archive_page(pipeline)
    assert len(periodic) == 1 and periodic[0]["period"] == 250
    refresh = periodic[0]["callback"]
    text = _html(page)
    assert cell(text, "archive-rate", exchange="binance") == "—"
    assert "Reading the database" in text

    g.ticks.emit(T0)
    g.health.emit(ConnectionEvent("binance", "spot", "connected", T0, ""))
    g.raw.emit(make_raw("binance", [(T0 + 0.1 * i, book(i + 1)) for i in range(10)]
                        + [(T0 + 1.0, '{"bad json')]))
    clock.advance_to(T0 + 2.0)
    g.tick()  # rates, a flush, and a database read
    refresh()
    text = _html(page)
    assert cell(text, "archive-rate", exchange="binance") == fmt_rate(11 / 2.0)
    assert cell(text, "archive-messages", exchange="binance") == "11"
    assert cell(text, "archive-connection-state", exchange="binance",
                connection="spot") == "connected"
    reason = next(iter(pipeline.views["ingest"].quarantine_by_reason()))
    assert cell(text, "archive-quarantine", exchange="binance", reason=reason) == "1"
    assert cell(text, "archive-quarantine-stored", exchange="binance", reason=reason) == "1"
    assert cell(text, "archive-table-rows", table="quotes") == "10"
    assert cell(text, "archive-ticks", exchange="binance") == "10"

    (chart,) = page.select(pn.pane.HoloViews)
    (buffer,) = [s for s in chart.object.streams if isinstance(s, hv.streams.Buffer)]
    assert list(buffer.data.columns) == ["time", "binance", "kraken"]
    assert list(buffer.data["binance"]) == pytest.approx([11 / 2.0])

    # the next refresh with nothing new sends nothing: the panes keep their objects
    before = [p.object for p in page.select(pn.pane.HTML)]
    refresh()
    assert [p.object for p in page.select(pn.pane.HTML)] == before
    assert len(buffer.data) == 1


def test_each_session_has_its_own_panes(periodic, live):
    pipeline, _ = live
    a, b = archive_page(pipeline), archive_page(pipeline)
    assert not set(map(id, a.select(pn.pane.HTML))) & set(map(id, b.select(pn.pane.HTML)))
    assert len(periodic) == 2


def test_page_module_is_registered():
    from dashboards.app import PAGES

    assert PAGES["archive"].build is archive_page
    assert PAGES["archive"].title == "Archive health"
    assert not page_mod.pn.state.served
