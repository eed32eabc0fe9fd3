"""Oracle submissions per second on the embedded chain: the ChainPublisher against raw sends.

The figure is ``ChainPublisher.on_prices`` publishing every price (deviation threshold ~0) to the
Oracle on the embedded EVM, with its ``chain_submissions`` rows in a DuckDB file (an insert and
three updates per submission) and the receipt checked after each send. The reference, measured in
the same run on an identical fresh chain and Oracle, is ``LocalSigner.send`` of the same ``submit``
call with the same explicit gas limit (sign, ``send_raw_transaction``, wait for the receipt). The
ratio is the publisher's overhead: rule, rows, receipt and event decoding; the same publisher
over an in-memory DuckDB separates the cost of the two durable commits per submission (the row
inserted before the send, updated after the receipt). Each side runs ``ROUNDS`` times,
alternating, and the best is kept.

    .venv/bin/python benchmarks/bench_chain.py [N_SUBMISSIONS] [ROUNDS]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataflows.chain import asset_id, to_micro
from dataflows.chain.compile import compile_all
from dataflows.chain.embedded import EmbeddedChain, LocalSigner
from dataflows.chain.keys import ephemeral_key
from dataflows.chain.terminal import (
    ChainBackend,
    ChainPublisher,
    ChainSettings,
    deploy_oracle,
)
from models.records import OraclePrice
from storage.chain import ChainStore

SETTINGS = ChainSettings(deviation_threshold=1e-9, event_sync_s=1e9)


def prices(n: int, t0: int) -> list[float]:
    """+/-1 % around 60k: every price deviates from the previous one (each one is published)."""
    return [60_000.0 * (1.01 if i % 2 else 0.99) for i in range(n)]


def raw_sends(n: int) -> float:
    chain = EmbeddedChain()
    key = ephemeral_key()
    chain.fund(key.address)
    address, _ = deploy_oracle(chain.w3, key, SETTINGS)
    oracle = chain.at("Oracle", address)
    signer = LocalSigner(chain.w3, key.account)
    t0 = chain.now() - 5
    btc = asset_id("BTC")
    ps = prices(n, t0)
    start = time.perf_counter()
    for i, p in enumerate(ps):
        signer.send(oracle.functions.submit(btc, to_micro(p), t0 + i, 999_000, 3),
                    gas=SETTINGS.gas_limit)
    dt = time.perf_counter() - start
    assert oracle.functions.latest_round_id(btc).call() == n
    return dt


def publisher(n: int, db: Path) -> float:
    backend = ChainBackend.embedded(SETTINGS)
    store = ChainStore(duckdb.connect(str(db)))
    pub = ChainPublisher(backend, store, SETTINGS)
    pub.start()
    t0 = backend.chain.now() - 5
    batches = [[OraclePrice("BTC", float(t0 + i), p, 3.0, 3, "ok")] for i, p in enumerate(prices(n, t0))]
    start = time.perf_counter()
    for batch in batches:
        pub.on_prices(batch)
    dt = time.perf_counter() - start
    counts = store.status_counts(backend.chain_id, backend.contract)
    assert counts == {"confirmed": n}, counts
    store.close()
    return dt


def main(n: int, rounds: int) -> None:
    compile_all()  # compile outside the timings
    best_raw = best_pub = best_mem = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            best_raw = min(best_raw, raw_sends(n))
            best_pub = min(best_pub, publisher(n, Path(tmp) / f"bench{r}.duckdb"))
            best_mem = min(best_mem, publisher(n, Path(":memory:")))
    result = {
        "submissions": n,
        "rounds": rounds,
        "publisher_tx_per_s": round(n / best_pub, 1),
        "publisher_in_memory_db_tx_per_s": round(n / best_mem, 1),
        "raw_localsigner_tx_per_s": round(n / best_raw, 1),
        "ratio_publisher_vs_raw": round(best_raw / best_pub, 3),
        "ratio_publisher_in_memory_db_vs_raw": round(best_raw / best_mem, 3),
        "publisher_ms_per_submission": round(1000 * best_pub / n, 2),
        "raw_ms_per_submission": round(1000 * best_raw / n, 2),
    }
    ref = f"{'raw LocalSigner.send':<22} {result['raw_localsigner_tx_per_s']:>8.1f} tx/s"
    print(f"{'ChainPublisher (DuckDB file)':<34} {result['publisher_tx_per_s']:>8.1f} tx/s   {ref}   "
          f"ratio {result['ratio_publisher_vs_raw']:.3f}")
    print(f"{'ChainPublisher (DuckDB :memory:)':<34} {result['publisher_in_memory_db_tx_per_s']:>8.1f} tx/s   "
          f"{ref}   ratio {result['ratio_publisher_in_memory_db_vs_raw']:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200, int(sys.argv[2]) if len(sys.argv) > 2 else 2)
