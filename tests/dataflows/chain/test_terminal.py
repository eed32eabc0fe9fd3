"""terminal.py: the chain publisher on the embedded EVM — publishing rule, rows, reverts, retries,
replacement of a stuck transaction, restart, events read back, keys kept out of logs and rows."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from types import SimpleNamespace

import duckdb
import pytest

from dataflows.chain import asset_id, to_micro
from dataflows.chain.embedded import EmbeddedChain
from dataflows.chain.keys import ENV_KEY, ephemeral_key
from dataflows.chain.terminal import (
    ChainBackend,
    ChainPublisher,
    ChainSettings,
    ChainTerminalError,
    build_publisher,
    classify_send_error,
    confidence_score_micro,
    deploy_oracle,
)
from models.records import OraclePrice
from storage.chain import ChainStore, latest_chain_prices

BTC = asset_id("BTC")


class FakeTimer:
    """The publisher's monotonic timer, moved by hand (stuck timeouts, backoff, polling)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


class Crash(BaseException):
    """The process dying mid-call (not an Exception, so nothing in the publisher catches it)."""


def px(asset: str, ts: float, price: float, status: str = "ok", n: int = 3, conf: float = 5.0):
    return OraclePrice(asset=asset, ts=float(ts), price_usd=price, confidence_usd=conf,
                       n_sources=n, status=status)


@pytest.fixture
def settings() -> ChainSettings:
    return ChainSettings(heartbeat_s=30.0, receipt_poll_s=1.0, stuck_after_s=60.0,
                         revert_backoff_s=60.0, backoff_initial_s=1.0, event_sync_s=1e9)


@pytest.fixture
def backend(compiled, settings) -> ChainBackend:
    return ChainBackend.embedded(settings)


@pytest.fixture
def db(tmp_path):
    return tmp_path / "chain.duckdb"


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer()


@pytest.fixture
def make(backend, settings, db, timer):
    """make(**overrides) -> a started publisher on ``backend`` over the DuckDB file ``db``."""
    made = []

    def _make(b=None, s=None, start=True):
        con = duckdb.connect(str(db))
        pub = ChainPublisher(b or backend, ChainStore(con), s or settings, timer=timer)
        if start:
            pub.start()
        made.append(pub)
        return pub

    yield _make
    for pub in made:
        with contextlib.suppress(duckdb.Error):  # some tests close theirs (a "crash")
            pub.store.close()


def tx_count(backend) -> int:
    return backend.w3.eth.get_transaction_count(backend.address)


def onchain(backend, asset="BTC"):
    rid, answer, _, ts, _ = backend.oracle.functions.latestRoundData(asset_id(asset)).call()
    return rid, answer, ts


# ----------------------------------------------------------------------------- publishing rule

def test_deviation_rule_and_only_ok_prices(backend, make):
    pub = make()
    t0 = backend.chain.now() - 100
    pub.on_prices([px("BTC", t0, 60_000.0), px("ETH", t0, 3_000.0)])  # first prices: pushed
    pub.on_prices([px("BTC", t0 + 1, 60_240.0)])                     # +0.4 %: not
    pub.on_prices([px("BTC", t0 + 2, 60_320.0)])                     # +0.53 % vs 60k: pushed
    pub.on_prices([px("BTC", t0 + 3, 63_000.0, status="degraded"),   # not ok: never
                   px("BTC", t0 + 4, 63_000.0, status="halted"),
                   px("SOL", t0 + 4, 150.0)])                          # not configured
    pub.on_prices([px("BTC", t0 + 5, 60_000.0)])                     # -0.53 % vs 60,320: pushed
    rows = pub.store.submissions()
    assert [(r["asset"], r["price_micro"], r["status"]) for r in rows] == [
        ("BTC", to_micro(60_000), "confirmed"), ("ETH", to_micro(3_000), "confirmed"),
        ("BTC", to_micro(60_320), "confirmed"), ("BTC", to_micro(60_000), "confirmed")]
    assert onchain(backend) == (3, to_micro(60_000), int(t0 + 5))
    assert pub.stats["skipped_status"] == 2 and pub.stats["skipped_asset"] == 1


def test_heartbeat_on_prices_and_on_ticks(backend, make, settings):
    pub = make()
    t0 = backend.chain.now() - 200
    pub.on_prices([px("BTC", t0, 60_000.0)])
    pub.on_prices([px("BTC", t0 + 10, 60_010.0)])        # still, before the heartbeat
    assert len(pub.store.submissions()) == 1
    pub.on_tick(t0 + 29)                                  # not yet
    assert len(pub.store.submissions()) == 1
    pub.on_tick(t0 + settings.heartbeat_s)                # heartbeat: latest ok price goes out
    assert onchain(backend)[1:] == (to_micro(60_010), int(t0 + 10))
    pub.on_prices([px("BTC", t0 + 71, 60_020.0)])        # 61 s after the last one: heartbeat
    assert onchain(backend)[1:] == (to_micro(60_020), int(t0 + 71))
    pub.on_prices([px("BTC", t0 + 110, 60_000.0, status="degraded")])
    pub.on_tick(t0 + 140)                                  # latest is not ok: nothing
    assert [r["status"] for r in pub.store.submissions()] == ["confirmed"] * 3
    assert pub.stats["trigger_heartbeat"] == 2


def test_same_second_not_resent_and_confidence_score(backend, make):
    pub = make()
    t0 = backend.chain.now() - 50
    pub.on_prices([px("BTC", t0 + 0.2, 60_000.0), px("BTC", t0 + 0.9, 61_000.0)])
    assert len(pub.store.submissions()) == 1  # same whole second: the chain would refuse it
    row = pub.store.submissions()[0]
    assert row["confidence_micro"] == confidence_score_micro(60_000.0, 5.0) == to_micro(1 - 5 / 60_000)
    assert confidence_score_micro(100.0, float("nan")) == 0 and confidence_score_micro(1.0, 3.0) == 0


# ----------------------------------------------------------------------------- rows

def test_confirmed_row_matches_the_chain(backend, make):
    pub = make()
    before = tx_count(backend)
    t0 = backend.chain.now() - 10
    pub.on_prices([px("BTC", t0, 61_234.5678, n=4)])
    (row,) = pub.store.submissions()
    receipt = backend.w3.eth.get_transaction_receipt(row["tx_hash"])
    tx = backend.w3.eth.get_transaction(row["tx_hash"])
    assert row["status"] == "confirmed" and row["reason"] == "" and row["attempts"] == 1
    assert row["kind"] == "submit" and row["sender"] == backend.address
    assert row["chain_id"] == backend.chain_id and row["contract"] == backend.contract
    assert row["nonce"] == before == tx["nonce"] and tx["type"] == 2 and tx["gas"] == 300_000
    assert row["max_fee_per_gas"] == tx["maxFeePerGas"] and row["priority_fee_per_gas"] == tx["maxPriorityFeePerGas"]
    assert row["block_number"] == receipt["blockNumber"] and row["gas_used"] == receipt["gasUsed"]
    assert row["price_micro"] == 61_234_567_800 and row["n_sources"] == 4
    assert int(row["ts"].timestamp()) == int(t0) and str(row["ts"].tzinfo) == "UTC"
    assert row["created_at"] <= row["sent_at"] <= row["updated_at"]
    assert "0x" + bytes(backend.w3.keccak(bytes(row["raw_tx"]))).hex() == row["tx_hash"]


# ----------------------------------------------------------------------------- reverts

def test_revert_out_of_bounds_recorded_with_reason_not_retried(backend, make, timer):
    pub = make()
    t0 = backend.chain.now() - 50
    pub.on_prices([px("BTC", t0, 60_000.0)])
    n = tx_count(backend)
    pub.on_prices([px("BTC", t0 + 1, 20_000_000.0)])  # above the 10M USD bound
    row = pub.store.submissions()[-1]
    assert (row["status"], row["reason"], row["attempts"]) == ("reverted", "oracle: out of bounds", 1)
    assert row["block_number"] is not None  # mined with status 0 (explicit gas: no estimation)
    assert tx_count(backend) == n + 1
    for i in range(5):  # more of the same, and ticks: the revert is not retried
        timer.advance(5)
        pub.on_prices([px("BTC", t0 + 2 + i, 20_000_000.0)])
        pub.on_tick(t0 + 2 + i)
    assert tx_count(backend) == n + 1
    assert pub.stats["skipped_cooldown"] >= 5
    assert onchain(backend)[1] == to_micro(60_000)
    timer.advance(60)  # after the cooldown a valid price goes through
    pub.on_prices([px("BTC", t0 + 20, 60_500.0)])
    assert onchain(backend)[1] == to_micro(60_500)


def test_revert_on_a_contract_paused_behind_its_back(backend, make, timer):
    """The Oracle is paused by a transaction the publisher did not send: its local nonce is now
    stale (a nonce error, resynced and re-signed), and the submission reverts 'oracle: paused'."""
    pub = make()
    t0 = backend.chain.now() - 50
    pub.on_prices([px("BTC", t0, 60_000.0)])
    backend.chain.send(backend.oracle.functions.pause(), backend.key.account)  # same key, out of band
    pub.on_prices([px("ETH", t0 + 1, 3_000.0)])
    row = pub.store.submissions()[-1]
    assert (row["status"], row["reason"]) == ("reverted", "oracle: paused")
    assert "re-signed" not in row["reason"]
    assert row["attempts"] == 2  # nonce refused once, re-signed with the chain's nonce
    assert pub.chain_paused
    n = tx_count(backend)
    pub.on_prices([px("ETH", t0 + 2, 3_100.0)])  # the publisher now knows: nothing sent
    assert tx_count(backend) == n
    pub.resume_on_chain()
    assert not pub.chain_paused and not backend.oracle.functions.paused().call()
    timer.advance(61)  # past the revert cooldown of ETH
    pub.on_prices([px("ETH", t0 + 3, 3_100.0)])
    assert onchain(backend, "ETH")[1] == to_micro(3_100)


def test_breaker_trip_is_recorded_and_stops_the_asset(backend, make):
    pub = make()
    t0 = backend.chain.now() - 50
    pub.on_prices([px("BTC", t0, 60_000.0)])
    pub.on_prices([px("BTC", t0 + 1, 90_000.0)])  # +50 % > 20 % on-chain breaker
    row = pub.store.submissions()[-1]
    assert row["status"] == "tripped" and "breaker tripped (5000 bps" in row["reason"]
    assert pub.tripped == {"BTC"} and onchain(backend)[1] == to_micro(60_000)
    n = tx_count(backend)
    pub.on_prices([px("BTC", t0 + 2, 91_000.0)])
    assert tx_count(backend) == n


# ----------------------------------------------------------------------------- pause

def test_pause_off_chain_and_on_chain(backend, make):
    pub = make()
    t0 = backend.chain.now() - 50
    pub.pause()
    pub.on_prices([px("BTC", t0, 60_000.0)])
    assert pub.store.submissions() == [] and pub.stats["skipped_paused"] == 1
    pub.resume()
    pub.on_prices([px("BTC", t0 + 1, 60_000.0)])
    assert pub.store.submissions()[-1]["status"] == "confirmed"
    rid = pub.pause_on_chain()
    row = pub.store.submission(rid)
    assert (row["kind"], row["status"], row["asset"]) == ("pause", "confirmed", None)
    assert backend.oracle.functions.paused().call() and pub.chain_paused
    n = tx_count(backend)
    pub.on_prices([px("BTC", t0 + 2, 65_000.0)])
    assert tx_count(backend) == n
    pub.sync_events()
    assert [e["event"] for e in pub.store.events(event="Paused")] == ["Paused"]


def test_pause_file(backend, make, tmp_path, settings):
    import dataclasses

    flag = tmp_path / "chain.pause"
    pub = make(s=dataclasses.replace(settings, pause_file=str(flag)))
    t0 = backend.chain.now() - 50
    flag.write_text("on-chain\n")
    pub.on_tick(t0)
    assert pub.paused and backend.oracle.functions.paused().call()
    flag.unlink()
    pub.on_tick(t0 + 1)
    assert not pub.paused and not backend.oracle.functions.paused().call()
    pub.on_prices([px("BTC", t0 + 2, 60_000.0)])
    assert onchain(backend)[1] == to_micro(60_000)
    # `hedgeflow pause` without --on-chain writes "off-chain": the publisher stops, the contract
    # is left running.
    flag.write_text("off-chain\n")
    pub.on_tick(t0 + 3)
    assert pub.paused and not backend.oracle.functions.paused().call()


# ----------------------------------------------------------------------------- retries

def test_transient_errors_retry_the_same_signed_bytes_with_backoff(backend, make, timer, monkeypatch):
    pub = make()
    real = backend.w3.eth.send_raw_transaction
    failures = {"left": 2}
    sent = []

    def flaky(raw):
        sent.append(bytes(raw))
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("connection reset by peer")
        return real(raw)

    monkeypatch.setattr(backend.w3.eth, "send_raw_transaction", flaky)
    t0 = backend.chain.now() - 50
    pub.on_prices([px("BTC", t0, 60_000.0)])
    row = pub.store.submissions()[0]
    assert row["status"] == "pending" and "retry in 1s" in row["reason"] and row["attempts"] == 1
    pub.on_tick(t0)                    # backoff not over: nothing
    assert len(sent) == 1
    timer.advance(1.0)
    pub.on_tick(t0 + 1)                # 2nd attempt fails: next in 2 s
    assert len(sent) == 2
    timer.advance(1.0)
    pub.on_tick(t0 + 2)
    assert len(sent) == 2
    timer.advance(1.0)
    pub.on_tick(t0 + 3)                # 3rd attempt goes through
    assert len(sent) == 3 and len(set(sent)) == 1  # the same signed transaction every time
    row = pub.store.submissions()[0]
    assert (row["status"], row["attempts"]) == ("confirmed", 3)
    assert onchain(backend)[0] == 1


def test_retries_exhausted_marks_failed_and_frees_the_nonce(backend, make, timer, monkeypatch, settings):
    pub = make()

    def down(raw):
        raise TimeoutError("node did not answer")

    real = backend.w3.eth.send_raw_transaction
    monkeypatch.setattr(backend.w3.eth, "send_raw_transaction", down)
    t0 = backend.chain.now() - 100
    nonce = tx_count(backend)
    pub.on_prices([px("BTC", t0, 60_000.0)])
    for i in range(10):
        timer.advance(settings.backoff_max_s)
        pub.on_tick(t0 + i)
    row = pub.store.submissions()[0]
    assert row["status"] == "failed" and row["attempts"] == settings.max_attempts
    assert "gave up after 5 attempts: TimeoutError" in row["reason"]
    monkeypatch.setattr(backend.w3.eth, "send_raw_transaction", real)
    pub.on_prices([px("BTC", t0 + 20, 60_000.0)])  # the baseline went back: published again
    row = pub.store.submissions()[-1]
    assert row["status"] == "confirmed" and row["nonce"] == nonce


def test_unsent_prices_are_coalesced_and_the_queue_is_bounded(backend, make, timer, monkeypatch):
    pub = make()
    real = backend.w3.eth.send_raw_transaction
    monkeypatch.setattr(backend.w3.eth, "send_raw_transaction",
                        lambda raw: (_ for _ in ()).throw(ConnectionError("down")))
    t0 = backend.chain.now() - 100
    pub.on_prices([px("BTC", t0, 60_000.0)])            # signed, waiting for its retry
    pub.on_prices([px("BTC", t0 + 1, 61_000.0)])        # queued behind it
    pub.on_prices([px("BTC", t0 + 2, 62_000.0)])        # supersedes the unsigned 61,000
    statuses = [(r["price_micro"], r["status"]) for r in pub.store.submissions()]
    assert statuses == [(to_micro(60_000), "pending"), (to_micro(61_000), "superseded"),
                        (to_micro(62_000), "queued")]
    monkeypatch.setattr(backend.w3.eth, "send_raw_transaction", real)
    timer.advance(1.0)
    pub.on_tick(t0 + 3)
    assert [r["status"] for r in pub.store.submissions()] == ["confirmed", "superseded", "confirmed"]
    assert onchain(backend)[1] == to_micro(62_000)


# ----------------------------------------------------------------------------- stuck transaction

def test_stuck_transaction_is_replaced_with_higher_fees(backend, make, timer, settings):
    """eth-tester with auto-mining off holds sent transactions in its pool (a node that does not
    mine them); a replacement with the same nonce displaces the original there, as on a real node.
    The stuck timeout runs on the fake timer."""
    pub = make()
    chain = backend.chain
    t0 = chain.now() - 100
    chain.tester.disable_auto_mine_transactions()
    try:
        pub.on_prices([px("BTC", t0, 60_000.0)])
        (orig,) = pub.store.submissions()
        assert orig["status"] == "pending" and orig["sent_at"] is not None
        timer.advance(settings.stuck_after_s - 1)
        pub.on_tick(t0 + 1)
        assert len(pub.store.submissions()) == 1  # not stuck yet
        timer.advance(2)
        pub.on_tick(t0 + 2)
        orig, repl = pub.store.submissions()
        assert repl["replaces"] == orig["id"] and repl["nonce"] == orig["nonce"]
        assert repl["tx_hash"] != orig["tx_hash"] and repl["status"] == "pending"
        assert repl["max_fee_per_gas"] >= int(orig["max_fee_per_gas"] * 1.25)
        assert repl["priority_fee_per_gas"] >= int(orig["priority_fee_per_gas"] * 1.25)
        assert "no receipt after 61s" in repl["reason"]
        chain.mine()
    finally:
        chain.tester.enable_auto_mine_transactions()
    timer.advance(settings.receipt_poll_s)
    pub.on_tick(t0 + 3)
    orig, repl = pub.store.submissions()
    assert repl["status"] == "confirmed" and repl["block_number"] is not None
    assert orig["status"] == "replaced" and repl["tx_hash"] in orig["reason"]
    assert onchain(backend)[:2] == (1, to_micro(60_000))


# ----------------------------------------------------------------------------- restart

def test_restart_pending_row_whose_tx_was_mined_is_confirmed_not_resent(backend, make, monkeypatch):
    first = make()

    def crash(tx):
        raise Crash()  # dies right after send_raw_transaction, before recording anything more

    monkeypatch.setattr(first, "_sent_ok", crash)
    t0 = backend.chain.now() - 50
    with pytest.raises(Crash):
        first.on_prices([px("BTC", t0, 60_000.0)])
    (row,) = first.store.submissions()
    assert row["status"] == "pending" and row["sent_at"] is None
    first.store.close()
    n = tx_count(backend)

    second = make()  # a new process over the same database file and chain
    (row,) = second.store.submissions()
    assert row["status"] == "confirmed" and row["block_number"] is not None
    assert tx_count(backend) == n  # nothing sent again
    second.on_prices([px("BTC", t0 + 1, 60_010.0)])  # baseline from the chain: no new push
    assert tx_count(backend) == n and onchain(backend)[0] == 1


def test_restart_rebroadcasts_a_signed_tx_the_node_never_got(backend, make, monkeypatch):
    first = make()
    monkeypatch.setattr(backend.w3.eth, "send_raw_transaction",
                        lambda raw: (_ for _ in ()).throw(Crash()))
    t0 = backend.chain.now() - 50
    with pytest.raises(Crash):
        first.on_prices([px("BTC", t0, 60_000.0)])
    monkeypatch.undo()
    (row,) = first.store.submissions()
    assert row["status"] == "pending" and row["raw_tx"] and row["tx_hash"]
    first.store.close()
    second = make()
    (after,) = second.store.submissions()
    assert after["status"] == "confirmed" and after["tx_hash"] == row["tx_hash"]
    assert "re-broadcast" in after["reason"] and onchain(backend)[0] == 1
    second.on_prices([px("BTC", t0 + 1, 62_000.0)])  # the nonce count carries on
    assert onchain(backend)[0] == 2


def test_restart_on_a_new_chain_abandons_the_old_rows(backend, make, monkeypatch, settings):
    first = make()
    monkeypatch.setattr(first, "_sent_ok", lambda tx: (_ for _ in ()).throw(Crash()))
    queued_before = backend.chain.now() - 50
    with pytest.raises(Crash):
        first.on_prices([px("BTC", queued_before, 60_000.0)])
    first.store.close()
    other = ChainBackend.embedded(settings)  # a new process: a new embedded chain and Oracle
    second = make(b=other)
    (row,) = second.store.submissions()
    assert row["status"] == "failed" and "abandoned" in row["reason"]


# ----------------------------------------------------------------------------- events

def test_events_are_read_back_once(backend, make):
    pub = make()
    t0 = backend.chain.now() - 50
    pub.on_prices([px("BTC", t0, 60_000.0), px("ETH", t0, 3_000.0)])
    pub.on_prices([px("BTC", t0 + 1, 61_000.0)])
    added = pub.sync_events()
    assert added == 3 and pub.sync_events() == 0
    names = [e["event"] for e in pub.store.events()]
    assert names[:2] == ["LimitsSet", "OwnerAdded"] and names.count("BoundsSet") == 2
    assert "ReporterAdded" in names
    ups = pub.store.events(event="PriceUpdated")
    assert [(e["asset"], e["args"]["price"], e["args"]["round_id"]) for e in ups] == [
        ("BTC", to_micro(60_000), 1), ("ETH", to_micro(3_000), 1), ("BTC", to_micro(61_000), 2)]
    confirmed = {r["tx_hash"] for r in pub.store.submissions(status="confirmed")}
    assert {e["tx_hash"] for e in ups} == confirmed
    assert all(str(e["block_ts"].tzinfo) == "UTC" for e in ups)
    latest = latest_chain_prices(pub.store.con, backend.chain_id, backend.contract)
    assert [(r["asset"], r["price_micro"], r["round_id"]) for r in latest] == [
        ("BTC", to_micro(61_000), 2), ("ETH", to_micro(3_000), 1)]
    # an owner resetting a breaker elsewhere is picked up by the sync
    pub.on_prices([px("BTC", t0 + 2, 90_000.0)])
    assert pub.tripped == {"BTC"}
    backend.chain.send(backend.oracle.functions.reset_breaker(BTC), backend.key.account)
    pub.sync_events()
    assert pub.tripped == set()


# ----------------------------------------------------------------------------- backends

def test_any_web3_chain_uses_the_same_code_path(compiled, settings, make, db):
    """A second EmbeddedChain stands in for a JSON-RPC node: the Oracle is deployed by an
    operator's key and the backend is built from (w3, address, key), as from_url does."""
    node = EmbeddedChain()
    key = ephemeral_key()
    node.fund(key.address)
    address, _ = deploy_oracle(node.w3, key, settings)
    remote = ChainBackend(node.w3, address, key, kind="rpc")
    pub = make(b=remote)
    t0 = node.now() - 20
    pub.on_prices([px("ETH", t0, 3_000.0)])
    assert pub.store.submissions()[0]["status"] == "confirmed"
    assert remote.oracle.functions.latestRoundData(asset_id("ETH")).call()[1] == to_micro(3_000)


def test_backend_errors_say_what_to_fix(compiled, settings):
    with pytest.raises(ChainTerminalError, match="cannot reach the chain node at chain.rpc_url"):
        ChainBackend.from_url("http://127.0.0.1:9", "0x" + "11" * 20, ephemeral_key(), timeout_s=0.5)
    node = EmbeddedChain()
    with pytest.raises(ChainTerminalError, match="no contract at chain.oracle_address"):
        ChainBackend(node.w3, "0x" + "11" * 20, ephemeral_key())
    with pytest.raises(ChainTerminalError, match="not an address"):
        ChainBackend(node.w3, "oracle", ephemeral_key())
    with pytest.raises(ChainTerminalError, match="chain.rpc_url must be an http"):
        ChainSettings(backend="rpc")
    key = ephemeral_key()
    node.fund(key.address)
    address, _ = deploy_oracle(node.w3, key, settings)
    stranger = ephemeral_key()
    pub = ChainPublisher(ChainBackend(node.w3, address, stranger), ChainStore(duckdb.connect()), settings)
    with pytest.raises(ChainTerminalError, match="not a reporter"):
        pub.start()


def test_send_errors_are_classified():
    from eth_tester.exceptions import TransactionFailed
    from eth_utils.exceptions import ValidationError
    from web3.exceptions import ContractLogicError, Web3RPCError

    assert classify_send_error(TransactionFailed("execution reverted: oracle: stale")) == "revert"
    assert classify_send_error(ContractLogicError("execution reverted: oracle: paused")) == "revert"
    assert classify_send_error(ValidationError("Invalid transaction nonce: Expected 5, but got 3")) == "nonce"
    assert classify_send_error(Web3RPCError("nonce too low")) == "nonce"
    assert classify_send_error(Web3RPCError("already known")) == "known"
    assert classify_send_error(Web3RPCError("replacement transaction underpriced")) == "fees"
    assert classify_send_error(ValidationError("Sender's max fee per gas (1) is lower than block's base fee")) == "fees"
    assert classify_send_error(Web3RPCError("insufficient funds for gas * price + value")) == "funds"
    assert classify_send_error(ConnectionError("reset")) == "transient"


# ----------------------------------------------------------------------------- keys

class _Capture(logging.Handler):
    """Every record, formatted by the project's text and JSON formatters (the suite runs with
    ``-p no:logging``, so pytest's caplog is not available)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        from dataflows.logs import JsonFormatter, TextFormatter

        self.formatters = (TextFormatter(), JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(f.format(record) for f in self.formatters)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def caplog_all():
    root = logging.getLogger()
    handler, level = _Capture(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_key_from_environment_never_logged_nor_stored(compiled, tmp_path, caplog_all):
    caplog = caplog_all
    key = ephemeral_key()
    secret = key.account.key.hex().removeprefix("0x")
    section = SimpleNamespace(backend="embedded", deviation_threshold=0.005, heartbeat_s=30.0,
                              assets=["BTC", "ETH"], keystore_path="")
    con = duckdb.connect(str(tmp_path / "k.duckdb"))
    pub = build_publisher(section, con, env={ENV_KEY: "0x" + secret})
    assert pub.address == key.address and pub.backend.key.source == "environment"
    t0 = pub.backend.chain.now() - 50
    pub.on_prices([px("BTC", t0, 60_000.0)])
    pub.on_prices([px("BTC", t0 + 1, 99_000_000.0)])  # a revert, logged with its reason
    pub.pause_on_chain()
    pub.sync_events()
    pub.close()
    statuses = [r["status"] for r in pub.store.submissions()]
    assert statuses == ["confirmed", "reverted", "confirmed"]
    assert "reverted" in caplog.text and "confirmed" in caplog.text
    texts = [caplog.text, repr(pub.backend), repr(pub.backend.key), str(pub.backend.key),
             f"{pub.backend.key}", repr(pub.snapshot())]
    for table in ("chain_submissions", "chain_events", "chain_sync"):
        for row in con.execute(f"SELECT * FROM {table}").fetchall():
            texts.append(" ".join(v.hex() if isinstance(v, bytes) else str(v) for v in row))
    blob = "\n".join(texts).lower()
    assert secret.lower() not in blob
    assert key.address.lower() in blob  # the address is public, and shown


# ----------------------------------------------------------------------------- graph wiring

def test_graph_wiring_shares_the_writers_database(compiled, tmp_path):
    """The wiring the runtime adds: the publisher on the writer's database (a cursor of its
    connection), fed by ``oracle_prices`` and the clock ticks; closed before the writer."""
    from dataflows.clock import SimulatedClock
    from dataflows.graph import build_graph
    from storage.writer import DuckDBWriter

    class StubOracle:  # the graph's oracle is not under test here: every method returns []
        def __getattr__(self, name):
            return lambda *args, **kwargs: []

    backend = ChainBackend.embedded(ChainSettings())
    t0 = backend.chain.now() - 30
    clock = SimulatedClock(t0)
    writer = DuckDBWriter(tmp_path / "g.duckdb")
    graph = build_graph(clock=clock, writer=writer, oracle=StubOracle())
    pub = ChainPublisher(backend, ChainStore(writer.con.cursor()), ChainSettings())
    pub.start()
    graph.oracle_prices.sink(pub.on_prices)
    graph.ticks.sink(pub.on_tick)
    graph.oracle_prices.emit([px("BTC", t0, 60_000.0), px("ETH", t0, 3_000.0, status="degraded")])
    clock.advance_to(t0 + 1)
    graph.tick()
    pub.close()
    graph.close()
    con = duckdb.connect(str(tmp_path / "g.duckdb"))
    assert con.execute("SELECT asset, status FROM chain_submissions").fetchall() == [("BTC", "confirmed")]
    assert con.execute("SELECT count(*) FROM oracle_prices").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM chain_events WHERE event = 'PriceUpdated'").fetchone()[0] == 1


def test_confirmations_wait_for_depth(backend, make, settings, timer):
    import dataclasses

    pub = make(s=dataclasses.replace(settings, confirmations=3))
    t0 = backend.chain.now() - 30
    pub.on_prices([px("BTC", t0, 60_000.0)])
    row = pub.store.submissions()[0]
    assert row["status"] == "pending" and row["block_number"] is not None
    backend.chain.mine(2)
    timer.advance(settings.receipt_poll_s)
    pub.on_tick(t0 + 1)
    assert pub.store.submissions()[0]["status"] == "confirmed"


def test_receipts_are_followed_on_ticks_and_errors_never_reach_the_graph(backend, make, timer,
                                                                          monkeypatch, settings):
    pub = make()
    real = backend.w3.eth.get_transaction_receipt
    monkeypatch.setattr(backend.w3.eth, "get_transaction_receipt",
                        lambda h: (_ for _ in ()).throw(ConnectionError("node went away")))
    t0 = backend.chain.now() - 30
    pub.on_prices([px("BTC", t0, 60_000.0)])  # sent; its receipt cannot be read now
    row = pub.store.submissions()[0]
    assert row["status"] == "pending" and row["sent_at"] is not None
    timer.advance(settings.receipt_poll_s)
    pub.on_tick(t0 + 1)  # still failing: logged, not raised
    monkeypatch.setattr(pub.store, "insert_submission",
                        lambda row: (_ for _ in ()).throw(duckdb.IOException("disk full")))
    n = tx_count(backend)
    pub.on_prices([px("ETH", t0 + 1, 3_000.0)])  # cannot record it: not sent, not raised
    assert tx_count(backend) == n and pub.stats["errors"] == 1
    monkeypatch.setattr(backend.w3.eth, "get_transaction_receipt", real)
    timer.advance(settings.receipt_poll_s)
    pub.on_tick(t0 + 2)
    assert [r["status"] for r in pub.store.submissions()] == ["confirmed"]
    monkeypatch.undo()
    pub.on_prices([px("ETH", t0 + 3, 3_000.0)])  # the unrecorded decision left no trace
    assert [r["status"] for r in pub.store.submissions()] == ["confirmed", "confirmed"]
    assert pub.store.submissions()[-1]["nonce"] == n


def test_refused_replacement_is_recorded_and_tried_again_later(backend, make, timer, settings,
                                                               monkeypatch):
    pub = make()
    chain = backend.chain
    t0 = chain.now() - 100
    chain.tester.disable_auto_mine_transactions()
    try:
        pub.on_prices([px("BTC", t0, 60_000.0)])
        real = backend.w3.eth.send_raw_transaction
        monkeypatch.setattr(backend.w3.eth, "send_raw_transaction",
                            lambda raw: (_ for _ in ()).throw(ValueError("replacement transaction underpriced")))
        timer.advance(settings.stuck_after_s)
        pub.on_tick(t0 + 1)
        orig, refused = pub.store.submissions()
        assert refused["status"] == "failed" and "underpriced" in refused["reason"]
        assert orig["status"] == "pending"
        monkeypatch.setattr(backend.w3.eth, "send_raw_transaction", real)
        timer.advance(settings.receipt_poll_s)
        pub.on_tick(t0 + 2)  # the stuck period started again: no new replacement yet
        assert len(pub.store.submissions()) == 2 and pub.stats["errors"] == 0
        timer.advance(settings.stuck_after_s)
        pub.on_tick(t0 + 3)
        assert len(pub.store.submissions()) == 3
        chain.mine()
    finally:
        chain.tester.enable_auto_mine_transactions()
    timer.advance(settings.receipt_poll_s)
    pub.on_tick(t0 + 4)
    assert [r["status"] for r in pub.store.submissions()] == ["replaced", "failed", "confirmed"]


def test_the_config_sections_defaults_are_the_terminals_defaults():
    # ChainSettings mirrors [chain] so the terminal can run without the config module; the two
    # must not drift apart.
    from dataflows.config import ChainConfig

    assert ChainSettings.from_section(ChainConfig()) == ChainSettings(
        **{**dataclasses.asdict(ChainSettings()), "pause_file": ChainConfig().pause_file}
    )
