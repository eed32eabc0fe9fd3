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
