"""storage/chain.py: chain_submissions, chain_events and chain_sync, with bound parameters."""

from __future__ import annotations

import duckdb
import pytest

from storage.chain import (
    CHAIN_TABLES,
    ChainStore,
    create_chain_schema,
    latest_chain_prices,
)

T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path):
    s = ChainStore(duckdb.connect(str(tmp_path / "c.duckdb")))
    yield s
    s.close()


def _row(id, status="queued", nonce=None, chain_id=1, contract="0xA", **kw):
    return {"id": id, "kind": "submit", "chain_id": chain_id, "contract": contract,
            "sender": "0xS", "asset": "BTC", "price_micro": 60_000_000_000, "ts": T0,
            "nonce": nonce, "status": status, "created_at": T0 + (nonce or 0),
            "updated_at": T0, **kw}


def test_schema_is_idempotent_and_shares_a_database(tmp_path):
    con = duckdb.connect(str(tmp_path / "x.duckdb"))
    create_chain_schema(con)
    create_chain_schema(con)
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert set(CHAIN_TABLES) <= names
    ChainStore(con.cursor()).insert_submission(_row("a"))  # a cursor of the writer's connection
    assert con.execute("SELECT count(*) FROM chain_submissions").fetchone()[0] == 1


def test_insert_update_and_open_rows(store):
    store.insert_submission(_row("q1"))
    store.insert_submission(_row("p2", "pending", nonce=2, tx_hash="0x2", raw_tx=b"\x02"))
    store.insert_submission(_row("p1", "pending", nonce=1, tx_hash="0x1", raw_tx=b"\x01"))
    store.insert_submission(_row("c0", "confirmed", nonce=0))
    store.insert_submission(_row("other", "pending", nonce=0, chain_id=2))
    assert [r["id"] for r in store.open_submissions(1, "0xA")] == ["p1", "p2", "q1"]
    store.update_submission("p1", status="confirmed", block_number=7, gas_used=50_000,
                            updated_at=T0 + 5, reason="it's done; DROP TABLE x --")
    r = store.submission("p1")
    assert (r["status"], r["block_number"], r["reason"]) == ("confirmed", 7, "it's done; DROP TABLE x --")
    assert r["updated_at"].timestamp() == T0 + 5 and str(r["updated_at"].tzinfo) == "UTC"
    assert bytes(store.submission("p2")["raw_tx"]) == b"\x02"
    assert store.status_counts(1, "0xA") == {"queued": 1, "pending": 1, "confirmed": 2}
    assert [r["id"] for r in store.submissions(status=["pending", "queued"], chain_id=1)] == ["q1", "p2"]
    with pytest.raises(ValueError, match="cannot update"):
        store.update_submission("p1", id="x")
    with pytest.raises(ValueError, match="unknown"):
        store.insert_submission({**_row("z"), "status; --": 1})


def test_abandon_other_chains(store):
    store.insert_submission(_row("mine", "pending", nonce=1))
    store.insert_submission(_row("old", "pending", nonce=1, contract="0xOLD"))
    store.insert_submission(_row("oldq", "queued", contract="0xOLD"))
    store.insert_submission(_row("olddone", "confirmed", nonce=0, contract="0xOLD"))
    assert store.abandon_other_chains(1, "0xA", T0 + 9, "abandoned: new chain") == 2
    st = {r["id"]: r["status"] for r in store.submissions()}
    assert st == {"mine": "pending", "old": "failed", "oldq": "failed", "olddone": "confirmed"}
    assert store.abandon_other_chains(1, "0xA", T0 + 9, "again") == 0


def test_events_are_stored_once_and_queryable(store):
    ev = [{"chain_id": 1, "contract": "0xA", "block_number": b, "block_ts": T0 + b,
           "tx_hash": f"0x{b}", "log_index": 0, "event": "PriceUpdated", "asset": a,
           "args": {"asset": a, "price": p, "ts": int(T0) + b, "round_id": r, "blob": b"\x01"}}
          for b, a, p, r in ((3, "BTC", 60_000_000_000, 1), (4, "ETH", 3_000_000_000, 1),
                             (5, "BTC", 61_000_000_000, 2))]
    assert store.insert_events(ev, T0) == 3
    assert store.insert_events(ev, T0 + 1) == 0
    rows = store.events(event="PriceUpdated")
    assert len(rows) == 3 and rows[0]["args"]["price"] == 60_000_000_000
    latest = latest_chain_prices(store.con, 1, "0xA")
    assert [(r["asset"], r["price_micro"], r["round_id"]) for r in latest] == [
        ("BTC", 61_000_000_000, 2), ("ETH", 3_000_000_000, 1)]
    assert store.sync_cursor(1, "0xA") is None
    store.set_sync_cursor(1, "0xA", 5, T0)
    store.set_sync_cursor(1, "0xA", 9, T0 + 1)
    assert store.sync_cursor(1, "0xA") == 9 and store.sync_cursor(2, "0xA") is None
