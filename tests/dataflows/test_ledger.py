"""Tests of dataflows.ledger: every message has one verdict, and every row made is committed."""

from __future__ import annotations

from collections import Counter

from dataflows.ledger import FIELDS, ROW_TABLES, VERDICTS, Ledger
from models.records import (
    DATA_BATCHES,
    BookUpdateBatch,
    Gap,
    NormalizedBatch,
    QuarantineRecord,
    QuoteBatch,
)
from storage.writer import Commit
from tests.conftest import make_quotes, make_trades


def nb(exchange: str, n_messages: int, n_control: int = 0, n_ignored: int = 0, quarantined: int = 0,
       **tables) -> NormalizedBatch:
    full = {name: tables.get(name, cls.empty()) for name, cls in DATA_BATCHES.items()}
    quarantine = tuple(QuarantineRecord(exchange, float(i), "why", f"raw {i}") for i in range(quarantined))
    return NormalizedBatch(exchange=exchange, n_messages=n_messages, quarantine=quarantine,
                           n_control=n_control, n_ignored=n_ignored, **full)


def commit(**tables: dict[str, int]) -> Commit:
    return Commit(rows={t: Counter(per) for t, per in tables.items()})


def gap(exchange: str = "binance") -> Gap:
    return Gap(exchange, "BTCUSDT", "sequence", 1.0, 1.0, 3, "ids missing")


def test_fields():
    assert VERDICTS == ("data", "control", "ignored", "quarantined")
    assert ROW_TABLES == ("trades", "quotes", "option_tickers", "book_updates", "funding", "index_prices", "gaps")
    assert FIELDS == ("messages", *VERDICTS, *ROW_TABLES, "duplicates", "out_of_order")


def test_empty_ledger_reconciles():
    led = Ledger()
    assert led.reconciles()
    snap = led.snapshot()
    assert snap["exchanges"] == {}
    assert snap["total"] == {**dict.fromkeys(FIELDS, 0), "pending": 0}


def test_counts_pending_until_commit_then_reconciles():
    led = Ledger()
    # 10 messages: 1 control, 3 ignored, 1 quarantined, 5 data making 2 trades and 3 quotes
    led.on_validated(nb("binance", 10, n_control=1, n_ignored=3, quarantined=1,
                        trades=make_trades({}, {}), quotes=make_quotes({}, {}, {})))
    assert led.pending("binance") == 6  # 5 data rows and 1 quarantine row, none committed
    assert not led.reconciles()
    led.on_commit(commit(trades={"binance": 2}, quotes={"binance": 3}))
    assert led.pending("binance") == 1
    assert not led.reconciles()
    led.on_commit(commit(quarantine={"binance": 1}, oracle_prices={"": 5}))
    assert led.pending("binance") == 0
    assert led.reconciles()
    c = led.snapshot()["exchanges"]["binance"]
    assert c == {
        "messages": 10, "data": 5, "control": 1, "ignored": 3, "quarantined": 1,
        "trades": 2, "quotes": 3, "option_tickers": 0, "book_updates": 0, "funding": 0,
        "index_prices": 0, "gaps": 0, "duplicates": 0, "out_of_order": 0, "pending": 0,
    }
    assert c["messages"] == sum(c[v] for v in VERDICTS)


def test_rows_count_records_not_messages():
    # one depth message of 5 levels: one data message, five book rows
    n = 5
    levels = BookUpdateBatch.from_columns(
        exchange=["binance"] * n, instrument=["BTCUSDT"] * n, asset=["BTC"] * n,
        event_ts=[1.7e9] * n, receive_ts=[1.7e9] * n, side=["bid"] * n,
        price=[100.0 - i for i in range(n)], size_coin=[1.0] * n, is_snapshot=[False] * n,
        sequence=[9] * n, raw=["depth"] * n, msg_index=[0] * n,
    )
    led = Ledger()
    led.on_validated(nb("binance", 1, book_updates=levels))
    assert led.pending("binance") == 5
    led.on_commit(commit(book_updates={"binance": 5}))
    snap = led.snapshot()["exchanges"]["binance"]
    assert (snap["messages"], snap["data"], snap["book_updates"], snap["pending"]) == (1, 1, 5, 0)
    assert led.reconciles()


def test_committed_rows_only_count_once_committed():
    led = Ledger()
    led.on_validated(nb("binance", 3, trades=make_trades({}, {}, {})))
    assert led.snapshot()["exchanges"]["binance"]["trades"] == 0  # made, not yet stored
    led.on_commit(commit(trades={"binance": 1}))
    assert led.snapshot()["exchanges"]["binance"]["trades"] == 1
    assert led.pending("binance") == 2


def test_gaps_are_made_rows_until_committed():
    led = Ledger()
    led.on_gaps([gap(), gap(), gap("kraken")])
    assert led.pending("binance") == 2 and led.pending("kraken") == 1
    assert not led.reconciles()
    led.on_commit(commit(gaps={"binance": 2, "kraken": 1}))
    assert led.reconciles()
    snap = led.snapshot()
    assert snap["exchanges"]["binance"]["gaps"] == 2 and snap["exchanges"]["kraken"]["gaps"] == 1
    assert snap["total"]["gaps"] == 3
    assert snap["exchanges"]["binance"]["messages"] == 0  # gaps are not messages


def test_oracle_rows_are_not_message_counts():
    led = Ledger()
    led.on_commit(commit(oracle_prices={"": 7}))
    assert led.reconciles()
    assert "" not in led.snapshot()["exchanges"]


def test_per_exchange_counts_and_snapshot_totals():
    led = Ledger()
    led.on_validated(nb("binance", 5, n_ignored=1, quarantined=1, quotes=make_quotes({}, {}), trades=make_trades({})))
    led.on_validated(nb("kraken", 4, n_control=2, quarantined=1, quotes=make_quotes({})))
    led.on_validated(nb("binance", 3, n_control=1, quotes=make_quotes({}, {})))
    led.on_gaps([gap("kraken")])
    led.on_commit(commit(quotes={"binance": 4, "kraken": 1}, trades={"binance": 1},
                         quarantine={"kraken": 1, "binance": 1}, gaps={"kraken": 1}))
    snap = led.snapshot()
    assert list(snap["exchanges"]) == ["binance", "kraken"]
    b, k = snap["exchanges"]["binance"], snap["exchanges"]["kraken"]
    assert (b["messages"], b["data"], b["control"], b["ignored"], b["quarantined"]) == (8, 5, 1, 1, 1)
    assert (b["quotes"], b["trades"], b["gaps"], b["pending"]) == (4, 1, 0, 0)
    assert (k["messages"], k["data"], k["control"], k["quarantined"]) == (4, 1, 2, 1)
    assert (k["quotes"], k["gaps"], k["pending"]) == (1, 1, 0)
    total = snap["total"]
    assert total["messages"] == 12 and total["data"] == 6
    assert total["quotes"] == 5 and total["trades"] == 1 and total["quarantined"] == 2
    assert total["control"] == 3 and total["ignored"] == 1 and total["pending"] == 0 and total["gaps"] == 1
    for key in (*FIELDS, "pending"):
        assert total[key] == b[key] + k[key]
    assert set(total) == {*FIELDS, "pending"}
    assert led.reconciles()


def test_one_exchange_pending_blocks_reconciliation():
    led = Ledger()
    led.on_validated(nb("binance", 1, n_control=1))
    led.on_validated(nb("kraken", 2, quotes=make_quotes({"exchange": "kraken"}, {"exchange": "kraken"})))
    led.on_commit(commit(quotes={"kraken": 1}))
    assert led.pending("binance") == 0 and led.pending("kraken") == 1
    assert not led.reconciles()
    assert led.snapshot()["total"]["pending"] == 1
    led.on_commit(commit(quotes={"kraken": 1}))
    assert led.reconciles()


def test_a_batch_with_only_control_and_ignored_messages_needs_no_commit():
    led = Ledger()
    led.on_validated(nb("binance", 4, n_control=3, n_ignored=1))
    assert led.pending("binance") == 0 and led.reconciles()
    s = led.snapshot()["exchanges"]["binance"]
    assert (s["messages"], s["data"], s["control"], s["ignored"]) == (4, 0, 3, 1)


def test_trades_refused_by_the_database_are_counted_not_pending():
    ledger = Ledger()
    batch = NormalizedBatch(
        exchange="binance", n_messages=2, trades=make_trades({"trade_id": "1"}, {"trade_id": "2"}),
        quotes=QuoteBatch.empty(), quarantine=(), n_control=0, n_ignored=0,
    )
    ledger.on_validated(batch)
    ledger.on_commit(Commit(rows={"trades": Counter({"binance": 1})},
                            refused={"trades": Counter({"binance": 1})}))
    snap = ledger.snapshot()["exchanges"]["binance"]
    assert (snap["trades"], snap["duplicates"], snap["pending"]) == (1, 1, 0)
    assert ledger.reconciles()
