"""Hot path of ingestion: normalize, validate, write, and the whole graph.

Each figure is printed beside a reference measured in the same run, as a ratio, because these
machines are noisy: absolute rates move with the load, ratios much less.

    .venv/bin/python benchmarks/bench_ingest.py [N_MESSAGES]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _messages import best_of, binance_messages, raw_batches  # noqa: E402

from dataflows.adapters.binance import normalize  # noqa: E402
from dataflows.clock import SimulatedClock  # noqa: E402
from dataflows.graph import build_graph  # noqa: E402
from models.oracle import MedianOracle  # noqa: E402
from models.records import QuoteBatch  # noqa: E402
from models.validation import quote_rejections  # noqa: E402
from storage.writer import DuckDBWriter, quotes_table  # noqa: E402


def row(name: str, n: int, seconds: float, ref_name: str, ref_seconds: float) -> None:
    print(
        f"{name:<34} {n / seconds:>12,.0f} /s   {ref_name:<30} {n / ref_seconds:>12,.0f} /s"
        f"   ratio {ref_seconds / seconds:6.3f}"
    )


def main(n: int) -> None:
    messages = binance_messages(n)
    batches = raw_batches(messages, 1000)
    print(f"{n:,} Binance messages (80% bookTicker, 20% aggTrade), batches of 1,000\n")

    # 1. normalize vs. the JSON parse alone: how much the adapter adds on top of orjson.
    t_parse = best_of(lambda: [orjson.loads(m) for m in messages])
    t_norm = best_of(lambda: [normalize(b) for b in batches])
    row("normalize (binance adapter)", n, t_norm, "orjson.loads only", t_parse)

    # 2. vectorized validation vs. the same rules row by row in Python.
    quotes = QuoteBatch.concat([normalize(b).quotes for b in batches])
    m = len(quotes)

    def per_row():
        out = []
        for b, a, bs, as_ in zip(quotes.bid.tolist(), quotes.ask.tolist(),
                                 quotes.bid_size_coin.tolist(), quotes.ask_size_coin.tolist()):
            ok = all(np.isfinite(x) and x > 0 for x in (b, a, bs, as_)) and b < a
            out.append("" if ok else "bad")
        return out

    t_vec = best_of(lambda: quote_rejections(quotes))
    t_loop = best_of(per_row, repeat=2)
    row("validate quotes (vectorized)", m, t_vec, "same rules, Python loop", t_loop)

    # 3. the batched writer vs. one raw Arrow INSERT of the same rows.
    with tempfile.TemporaryDirectory() as tmp:
        def write_with_writer():
            w = DuckDBWriter(Path(tmp) / f"w{np.random.randint(1e9)}.duckdb", capacity_rows=12_500)
            for i in range(0, m, 1000):
                w.append_quotes(quotes.take(slice(i, i + 1000)), 0.0)
            w.close()

        def write_raw():
            con = duckdb.connect(str(Path(tmp) / f"r{np.random.randint(1e9)}.duckdb"))
            from storage.schema import create_schema
            create_schema(con)
            table = quotes_table(quotes)
            con.register("t", table)
            con.execute("INSERT INTO quotes BY NAME SELECT * FROM t")
            con.execute("CHECKPOINT")
            con.close()

        t_writer = best_of(write_with_writer, repeat=3)
        t_raw = best_of(write_raw, repeat=3)
        row("DuckDBWriter (1k batches)", m, t_writer, "one Arrow INSERT, same rows", t_raw)

        # 4. the whole graph (normalize → validate → oracle → writer) vs. normalize alone.
        def whole_graph():
            clock = SimulatedClock()
            g = build_graph(
                clock=clock,
                writer=DuckDBWriter(Path(tmp) / f"g{np.random.randint(1e9)}.duckdb"),
                oracle=MedianOracle(),
            )
            for b in batches:
                clock.advance_to(float(b.receive_ts[-1]))
                g.raw.emit(b)
                g.tick()
            g.close()
            assert g.ledger.reconciles()

        t_graph = best_of(whole_graph, repeat=3)
        row("whole graph to DuckDB", n, t_graph, "normalize alone", t_norm)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
