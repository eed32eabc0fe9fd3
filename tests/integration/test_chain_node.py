"""The chain terminal against a real JSON-RPC node over HTTP: Hardhat 2 on 127.0.0.1, installed by
the test command into chain-node/ (npm). The Oracle is deployed by the terminal, prices are
published and confirmed, a revert comes back as web3's error with its reason, and events are read
back — the same code path as the embedded chain, over the network."""

from __future__ import annotations

import socket
import subprocess
import time

import duckdb
import pytest
import requests
from eth_account import Account

from dataflows.chain import asset_id
from dataflows.chain.keys import SigningKey
from dataflows.chain.terminal import ChainBackend, ChainPublisher, ChainSettings
from models.records import OraclePrice
from storage.chain import ChainStore
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

NODE_DIR = REPO_ROOT / "chain-node"
HARDHAT = NODE_DIR / "node_modules" / ".bin" / "hardhat"


def _rpc(url: str, method: str, params: list):
    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                           timeout=5).json()
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer["result"]


@pytest.fixture(scope="module")
def node_url():
    if not HARDHAT.exists():
        pytest.fail("Hardhat is missing: `make test` installs it (npm install --prefix chain-node)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(HARDHAT), "node", "--hostname", "127.0.0.1", "--port", str(port)],
        cwd=NODE_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _rpc(url, "eth_chainId", [])
                break
            except (requests.ConnectionError, requests.Timeout):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("the Hardhat node did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def funded_key(node_url) -> SigningKey:
    account = Account.create()  # a fresh key for this test: none is written in the code
    _rpc(node_url, "hardhat_setBalance", [account.address, hex(10**21)])
    return SigningKey(account, "test")


def _price(asset: str, ts: float, price: float) -> OraclePrice:
    return OraclePrice(asset=asset, ts=ts, price_usd=price, confidence_usd=5.0, n_sources=3,
                       status="ok")


def test_publishes_over_json_rpc_and_reads_reverts_and_events_back(node_url, funded_key, tmp_path):
    settings = ChainSettings(deploy_oracle=True, heartbeat_s=30.0, event_sync_s=1e9)
    backend = ChainBackend.from_url(node_url, "", funded_key, settings=settings)
    assert backend.kind == "rpc" and backend.chain_id == 31337
    con = duckdb.connect(str(tmp_path / "node.duckdb"))
    publisher = ChainPublisher(backend, ChainStore(con), settings)
    publisher.start()
    now = backend.w3.eth.get_block("latest")["timestamp"]

    publisher.on_prices([_price("BTC", now - 5, 97_000.0), _price("ETH", now - 5, 3_100.0)])
    rows = {r["asset"]: r for r in publisher.store.submissions()}
    assert {a: r["status"] for a, r in rows.items()} == {"BTC": "confirmed", "ETH": "confirmed"}
    _, answer, _, updated, _ = backend.oracle.functions.latestRoundData(asset_id("BTC")).call()
    assert (answer, updated) == (97_000_000_000, now - 5)

    # Out of the contract's bounds: the node reverts; the reason is recorded, nothing retried.
    publisher.on_prices([_price("BTC", now - 2, 50_000_000.0)])
    rejected = [r for r in publisher.store.submissions() if r["asset"] == "BTC" and r["status"] != "confirmed"]
    assert [r["status"] for r in rejected] == ["reverted"]
    assert "out of bounds" in rejected[0]["reason"]

    publisher.sync_events()
    events = {e for (e,) in con.execute("SELECT DISTINCT event FROM chain_events").fetchall()}
    assert {"PriceUpdated", "BoundsSet", "ReporterAdded"} <= events
    publisher.close(close_store=True)


def test_replay_publishes_to_the_node(node_url, tmp_path, capsys, monkeypatch):
    """replay → oracle → chain over JSON-RPC: a capture of three venues quoting BTC, written here
    with current times, replayed with `--chain` against the Hardhat node."""
    import json

    from dataflows import cli

    now = time.time() - 30
    capture = tmp_path / "capture"
    capture.mkdir()
    for i, venue in enumerate(("BINANCE", "COINBASE", "KRAKEN")):
        lines = []
        for k in range(8):
            ts, mid = now + k * 0.5 + i * 0.01, 97_000.0 + k
            if venue == "BINANCE":
                raw = ('{"stream":"btcusdt@bookTicker","data":{"u":%d,"s":"BTCUSDT","b":"%.2f",'
                       '"B":"1.0","a":"%.2f","A":"1.0"}}' % (k + 1, mid - 5, mid + 5))
            elif venue == "COINBASE":
                raw = ('{"type":"ticker","sequence":%d,"product_id":"BTC-USD","price":"%.2f",'
                       '"best_bid":"%.2f","best_ask":"%.2f","time":"%s"}'
                       % (k + 1, mid, mid - 4, mid + 4,
                          time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(ts))))
            else:
                raw = ('{"channel":"ticker","type":"update","data":[{"symbol":"BTC/USD",'
                       '"bid":%.1f,"bid_qty":1.0,"ask":%.1f,"ask_qty":1.0,"last":%.1f}]}'
                       % (mid - 6, mid + 6, mid))
            lines.append(f"{ts!r}: {raw}\n")
        (capture / f"{venue}.ws.1").write_text("".join(lines))

    monkeypatch.setenv("HEDGEFLOW_CHAIN__BACKEND", "rpc")
    monkeypatch.setenv("HEDGEFLOW_CHAIN__RPC_URL", node_url)
    monkeypatch.setenv("HEDGEFLOW_CHAIN__DEPLOY_ORACLE", "true")
    account = Account.create()  # the key comes from the environment, as in production
    _rpc(node_url, "hardhat_setBalance", [account.address, hex(10**21)])
    monkeypatch.setenv("HEDGEFLOW_CHAIN_KEY", account.key.hex())
    db = tmp_path / "node-replay.duckdb"
    assert cli.main(["replay", str(capture), "--db", str(db), "--chain"]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["pending"] == 0
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT asset, status FROM chain_submissions").fetchall()
    con.close()
    assert rows and set(rows) == {("BTC", "confirmed")}
