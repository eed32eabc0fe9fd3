"""Parse throughput of each exchange adapter on the recorded real traffic, against ``json.loads``
of the same lines (and ``orjson.loads``, which the adapters use), measured in the same run.

    .venv/bin/python benchmarks/bench_adapters.py [REPEAT]

The recordings are small (a few thousand messages), so each is cycled until ~50,000 messages are
timed; a fresh adapter per pass keeps sequence checks from calling the repeats stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _messages import best_of  # noqa: E402

from dataflows.adapters import ADAPTER_FACTORIES  # noqa: E402
from dataflows.replay import read_capture  # noqa: E402
from models.records import RawBatch  # noqa: E402

RECORDED = ROOT.parent / "shared" / "data" / "recorded"


def main(repeat: int) -> None:
    files = sorted(p for p in RECORDED.glob("*.ws.*"))
    by_exchange: dict[str, list] = {}
    for f in files:
        by_exchange.setdefault(f.name.split(".")[0].lower(), []).extend(read_capture(f))
    print(f"{'exchange':<10}{'messages':>10}{'adapter msg/s':>16}{'json.loads msg/s':>19}"
          f"{'ratio':>8}{'orjson msg/s':>15}{'ratio':>8}{'rows/msg':>10}")
    for exchange, lines in by_exchange.items():
        texts = [line.message for line in lines]
        times = np.array([line.receive_ts for line in lines])
        passes = max(1, 50_000 // len(texts))
        batches = [RawBatch(exchange, times[i : i + 1000], texts[i : i + 1000])
                   for i in range(0, len(texts), 1000)]
        n = passes * len(texts)

        def adapter_run():
            rows = 0
            for _ in range(passes):
                adapter = ADAPTER_FACTORIES[exchange]()
                for b in batches:
                    out = adapter.normalize(b)
                    rows += sum(len(x) for x in out.data().values())
            return rows

        rows = adapter_run()
        t_adapter = best_of(adapter_run, repeat)
        t_json = best_of(lambda: [json.loads(t) for _ in range(passes) for t in texts], repeat)
        t_orjson = best_of(lambda: [orjson.loads(t) for _ in range(passes) for t in texts], repeat)
        print(f"{exchange:<10}{len(texts):>10,}{n / t_adapter:>16,.0f}{n / t_json:>19,.0f}"
              f"{t_json / t_adapter:>8.3f}{n / t_orjson:>15,.0f}{t_orjson / t_adapter:>8.3f}"
              f"{rows / passes / len(texts):>10.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
