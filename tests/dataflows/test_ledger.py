"""Tests of dataflows.ledger: every message is stored, quarantined, control or ignored."""

from __future__ import annotations

from collections import Counter

from dataflows.ledger import FIELDS, Ledger
from models.records import NormalizedBatch, QuoteBatch, TradeBatch
from storage.writer import Commit


def nb(exchange: str, n_messages: int, n_control: int = 0, n_ignored: int = 0) -> NormalizedBatch:
    return NormalizedBatch(
        exchange=exchange, n_messages=n_messages, trades=TradeBatch.empty(), quotes=QuoteBatch.empty(),
        quarantine=(), n_control=n_control, n_ignored=n_ignored,
    )


def commit(**tables: dict[str, int]) -> Commit:
    return Commit(rows={t: Counter(per) for t, per in tables.items()})


def test_empty_ledger_reconciles():
    led = Ledger()
    assert led.reconciles()
    snap = led.snapshot()
    assert snap["exchanges"] == {}
    assert snap["total"] == {**dict.fromkeys(FIELDS, 0), "pending": 0}


def test_counts_pending_until_commit_then_reconciles():
    led = Ledger()
    led.on_normalized(nb("binance", 10, n_control=1, n_ignored=3))
    assert led.pending("binance") == 6
    assert not led.reconciles()
    led.on_commit(commit(trades={"binance": 2}, quotes={"binance": 3}))
    assert led.pending("binance") == 1
    assert not led.reconciles()
    led.on_commit(commit(quarantine={"binance": 1}, oracle_prices={"": 5}))
    assert led.pending("binance") == 0
    assert led.reconciles()
    c = led.snapshot()["exchanges"]["binance"]
    assert c == {
        "messages": 10, "trades": 2, "quotes": 3, "option_tickers": 0, "book_updates": 0,
        "control": 1, "ignored": 3, "quarantined": 1, "gaps": 0, "pending": 0,
    }


def test_oracle_rows_are_not_message_counts():
    led = Ledger()
    led.on_commit(commit(oracle_prices={"": 7}))
    assert led.reconciles()
    assert "" not in led.snapshot()["exchanges"]


def test_per_exchange_counts_and_snapshot_totals():
    led = Ledger()
    led.on_normalized(nb("binance", 5, n_ignored=1))
    led.on_normalized(nb("kraken", 4, n_control=2))
    led.on_normalized(nb("binance", 3, n_control=1))
    led.on_commit(commit(quotes={"binance": 4, "kraken": 1}, trades={"binance": 1},
                         quarantine={"kraken": 1, "binance": 1}))
    snap = led.snapshot()
    assert list(snap["exchanges"]) == ["binance", "kraken"]
    b, k = snap["exchanges"]["binance"], snap["exchanges"]["kraken"]
    assert (b["messages"], b["control"], b["ignored"], b["quotes"], b["trades"], b["quarantined"]) == (8, 1, 1, 4, 1, 1)
    assert b["pending"] == 0
    assert (k["messages"], k["control"], k["quotes"], k["quarantined"], k["pending"]) == (4, 2, 1, 1, 0)
    total = snap["total"]
    assert total["messages"] == 12
    assert total["quotes"] == 5 and total["trades"] == 1 and total["quarantined"] == 2
    assert total["control"] == 3 and total["ignored"] == 1 and total["pending"] == 0
    for key in (*FIELDS, "pending"):
        assert total[key] == b[key] + k[key]
    assert led.reconciles()


def test_one_exchange_pending_blocks_reconciliation():
    led = Ledger()
    led.on_normalized(nb("binance", 1, n_control=1))
    led.on_normalized(nb("kraken", 2))
    led.on_commit(commit(quotes={"kraken": 1}))
    assert led.pending("binance") == 0 and led.pending("kraken") == 1
    assert not led.reconciles()
    assert led.snapshot()["total"]["pending"] == 1

