"""dataflows.metrics: the exposition text parses line by line (format 0.0.4) and says what the
pipeline's own state says: the ledger's counts after real traffic through the real graph, the
safety gate's breakers, the chain terminal's counters, the API's client queues."""

from __future__ import annotations

import math
import re
from collections import Counter
from types import SimpleNamespace

import pytest

from dataflows.api import Hub
from dataflows.clock import SimulatedClock
from dataflows.graph import build_graph
from dataflows.hedging import HedgeNode
from dataflows.ledger import VERDICTS
from dataflows.metrics import Family, LastMessage, format_value, render, render_metrics
from dataflows.replay import batches, expand_paths, merged_captures
from dataflows.views.feeds import OracleView
from models.desk import DeskConfig, HedgeDesk
from models.oracle import MedianOracle, MedianOracleConfig
from models.records import ConnectionEvent, OraclePrice
from storage.writer import DuckDBWriter
from tests.conftest import make_raw

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^(?P<name>{NAME})(?:\{{(?P<labels>.*)\}})? (?P<value>\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
T0 = 1_767_225_600.0


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """The exposition text as ``({family: type}, {(name, labels): value})``; fails on any line
    that is not valid format 0.0.4, a sample before its TYPE, a repeated sample or family, or a
    counter not named ``_total``."""
    assert text.endswith("\n"), "the text must end with a line feed"
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[tuple[str, frozenset], float] = {}
    for number, line in enumerate(text[:-1].split("\n"), 1):
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert re.fullmatch(NAME, name) and name not in helps, (number, line)
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert re.fullmatch(NAME, name) and name not in types, (number, line)
            assert kind in ("counter", "gauge"), (number, line)
            assert kind != "counter" or name.endswith("_total"), f"counter {name} lacks _total"
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"line {number} is not a sample: {line!r}"
            assert m["name"] in types, f"line {number}: {m['name']} has no TYPE before it"
            pairs = LABEL.findall(m["labels"] or "")
            rebuilt = ",".join(f'{k}="{v}"' for k, v in pairs)
            assert rebuilt == (m["labels"] or ""), f"line {number}: bad labels {m['labels']!r}"
            assert len({k for k, _ in pairs}) == len(pairs), f"line {number}: repeated label"
            key = (m["name"], frozenset((k, _unescape(v)) for k, v in pairs))
            assert key not in samples, f"line {number}: repeated sample {line!r}"
            samples[key] = float(m["value"])  # Go's ParseFloat forms: NaN, +Inf, -Inf included
    assert helps == set(types), "every family has one HELP and one TYPE"
    return types, samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def pipeline_of(graph, **kw) -> SimpleNamespace:
    return SimpleNamespace(graph=graph, views=kw.pop("views", {}), hedge=kw.pop("hedge", None), **kw)


# ------------------------------------------------------------------------------ the text format


def test_values_are_spelled_as_the_format_wants():
    assert [format_value(v) for v in (3, True, False, 0.25, math.nan, math.inf, -math.inf)] == \
        ["3", "1", "0", "0.25", "NaN", "+Inf", "-Inf"]


def test_label_values_and_help_are_escaped_and_parse_back():
    nasty = 'a "quoted" \\ back\nslash'
    text = render([Family("x_total", "counter", "help with \\ and\nnewline").add(2, reason=nasty)])
    assert text.splitlines()[0] == "# HELP x_total help with \\\\ and\\nnewline"
    types, samples = parse(text)
    assert types == {"x_total": "counter"} and value(samples, "x_total", reason=nasty) == 2.0


# ------------------------------------------------------------------------------ the ledger


@pytest.fixture
def replayed_graph(recorded_dir, db_path):
    """Real recorded Binance and Kraken traffic, a malformed message and a disconnect, through
    the real graph into DuckDB; the graph closed, so every count is committed."""
    clock = SimulatedClock()
    graph = build_graph(clock=clock, writer=DuckDBWriter(db_path),
                        oracle=MedianOracle(MedianOracleConfig(min_sources=1)))
    paths = expand_paths([recorded_dir / "BINANCE.ws.1.0", recorded_dir / "KRAKEN.ws.48.0"])
    for batch in batches(merged_captures(paths)):
        clock.advance_to(float(batch.receive_ts[-1]))
        graph.raw.emit(batch)
        graph.tick()
    now = clock.now()
    graph.raw.emit(make_raw("binance", [(now, '{"stream": "btcusdt@bookTicker", "data": {"u": ')]))
    for kind, dt in (("connected", 0.0), ("disconnected", 1.0), ("connected", 3.0)):
        graph.health.emit(ConnectionEvent("kraken", "ws://kraken", kind, now + dt, ""))
    clock.advance_to(now + 3.0)
    graph.close()
    yield graph, clock


def test_the_ingest_counters_are_the_ledgers(replayed_graph):
    graph, clock = replayed_graph
    types, samples = parse(render_metrics(pipeline_of(graph), now_s=clock.now()))
    snapshot = graph.ledger.snapshot()["exchanges"]
    assert set(snapshot) == {"binance", "kraken"}
    assert snapshot["binance"]["quarantined"] == 1 and snapshot["kraken"]["gaps"] == 1
    for exchange, counts in snapshot.items():
        for verdict in VERDICTS:
            assert value(samples, "hedgeflow_messages_total", exchange=exchange,
                         outcome=verdict) == counts[verdict]
        assert sum(value(samples, "hedgeflow_messages_total", exchange=exchange, outcome=v)
                   for v in VERDICTS) == counts["messages"] > 0
        for table in ("trades", "quotes", "book_updates", "option_tickers", "funding"):
            assert value(samples, "hedgeflow_rows_committed_total", exchange=exchange,
                         table=table) == counts[table]
        assert value(samples, "hedgeflow_gaps_total", exchange=exchange) == counts["gaps"]
        assert value(samples, "hedgeflow_rows_pending", exchange=exchange) == 0
    assert types["hedgeflow_messages_total"] == "counter"
    assert value(samples, "hedgeflow_writer_buffered_rows") == 0  # closed: flushed
    # no desk, no chain terminal, no API: their families are left out, not faked
    assert not any(name.startswith(("hedgeflow_breaker", "hedgeflow_chain", "hedgeflow_api"))
                   for name in types)


# ------------------------------------------------------------------------------ the rest


class Client:
    """What the hub knows of a WebSocket client."""

    def __init__(self, depth: int) -> None:
        self.topics, self.depth, self.offered = {"oracle"}, depth, []

    def offer(self, text: str) -> bool:
        self.offered.append(text)
        return True


def test_lag_is_each_feeds_silence_and_each_prices_age():
    graph = SimpleNamespace(ledger=SimpleNamespace(snapshot=lambda: {"exchanges": {}}),
                            writer=SimpleNamespace(buffered_rows=12), publisher=None)
    last = LastMessage()
    last.on_raw(make_raw("binance", [(T0 - 3.0, "a"), (T0 - 1.5, "b")]))
    last.on_raw(make_raw("binance", [(T0 - 9.0, "late")]))  # an older batch does not go back
    last.on_raw(make_raw("kraken", []))
    oracle = OracleView()
    oracle.on_prices([OraclePrice("BTC", T0 - 2.0, 1e5, 5.0, 3, "ok"),
                      OraclePrice("ETH", T0 - 4.0, 3e3, 1.0, 1, "degraded")])
    _, samples = parse(render_metrics(pipeline_of(graph, views={"oracle": oracle}), now_s=T0,
                                      last_message=last))
    assert value(samples, "hedgeflow_last_message_age_seconds", exchange="binance") == 1.5
    assert ("hedgeflow_last_message_age_seconds", frozenset({("exchange", "kraken")})) not in samples
    assert value(samples, "hedgeflow_oracle_price_age_seconds", asset="ETH") == 4.0
    assert value(samples, "hedgeflow_oracle_price_ok", asset="BTC") == 1
    assert value(samples, "hedgeflow_oracle_price_ok", asset="ETH") == 0
    assert value(samples, "hedgeflow_writer_buffered_rows") == 12


def test_breakers_pause_and_dead_mans_switch_of_the_hedge_desk():
    graph = SimpleNamespace(ledger=SimpleNamespace(snapshot=lambda: {"exchanges": {}}),
                            writer=SimpleNamespace(buffered_rows=0), publisher=None)
    node = HedgeNode(HedgeDesk(DeskConfig(), T0))
    gate = node.desk.gate
    _, before = parse(render_metrics(pipeline_of(graph, hedge=node), now_s=T0))
    assert math.isnan(value(before, "hedgeflow_dead_mans_switch_seconds_left"))
    gate.trip_breaker("daily_loss_limit", T0, "test", "a bad day")
    gate.pause(T0, "operator", "maintenance")
    gate.dead_mans_switch.heartbeat(T0 - 100.0)
    _, samples = parse(render_metrics(pipeline_of(graph, hedge=node), now_s=T0))
    for state in ("closed", "open", "half_open"):
        assert value(samples, "hedgeflow_breaker_state", breaker="daily_loss_limit",
                     state=state) == (state == "open")
    assert value(samples, "hedgeflow_breaker_trips_total", breaker="daily_loss_limit") == 1
    assert value(samples, "hedgeflow_trading_paused") == 1
    assert value(samples, "hedgeflow_dead_mans_switch_seconds_left") == \
        gate.seconds_left(T0) == pytest.approx(gate.dead_mans_switch.timeout_s - 100.0)


def test_chain_submissions_and_the_api_queues():
    publisher = SimpleNamespace(stats=SimpleNamespace(counts=Counter(sent=3, confirmed=2, failed=1)),
                                assets=frozenset({"BTC", "ETH"}), tripped={"ETH"}, paused=True,
                                chain_paused=False)
    graph = SimpleNamespace(ledger=SimpleNamespace(snapshot=lambda: {"exchanges": {}}),
                            writer=SimpleNamespace(buffered_rows=0), publisher=publisher)
    hub = Hub(queue_size=8)
    for depth in (3, 5):
        hub.add(Client(depth))
    assert hub.publish("oracle", [1]) == 2
    hub.dropped["slow"] += 2
    _, samples = parse(render_metrics(pipeline_of(graph), now_s=T0, api=SimpleNamespace(hub=hub)))
    assert {k: value(samples, "hedgeflow_chain_submissions_total", outcome=k)
            for k in ("sent", "confirmed", "failed")} == {"sent": 3, "confirmed": 2, "failed": 1}
    assert value(samples, "hedgeflow_chain_breaker_tripped", asset="ETH") == 1
    assert value(samples, "hedgeflow_chain_breaker_tripped", asset="BTC") == 0
    assert value(samples, "hedgeflow_chain_publishing_paused") == 1
    assert (value(samples, "hedgeflow_api_clients"), value(samples, "hedgeflow_api_client_queue_max"),
            value(samples, "hedgeflow_api_client_queue_messages"),
            value(samples, "hedgeflow_api_client_queue_capacity")) == (2, 5, 8, 8)
    assert value(samples, "hedgeflow_api_messages_published_total", topic="oracle") == 1
    assert value(samples, "hedgeflow_api_clients_dropped_total", reason="slow") == 2
