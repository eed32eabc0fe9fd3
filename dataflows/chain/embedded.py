"""An embedded EVM (eth-tester on py-evm) behind web3, and locally signed transactions.

``EmbeddedChain()`` starts an in-process chain whose unlocked test accounts hold ether; it
deploys the project's Vyper contracts (compiled on first use, EVM version pinned) and sends
transactions signed locally with an eth-account key: nonce tracked locally, EIP-1559 fees
taken from the chain, ``send_raw_transaction``, receipt awaited, a status-0 receipt raised
as :class:`TransactionReverted` with its reason.

:class:`LocalSigner` does the signing part for any ``Web3`` (the embedded chain or a JSON-RPC
node by URL). Keys are never created from constants here: :meth:`EmbeddedChain.new_account`
draws a fresh random key (``eth_account.Account.create``) and funds it.

Reverts differ by backend: eth-tester raises ``eth_tester.exceptions.TransactionFailed``
(on calls, gas estimation and ``transact``), a JSON-RPC node makes web3 raise
``ContractLogicError`` (calls, estimation) or ``Web3RPCError`` (a node that refuses a
reverting ``eth_sendRawTransaction``), and a mined status-0 receipt becomes
:class:`TransactionReverted` here. :func:`is_revert` recognises all of them and
:func:`revert_reason` extracts the reason string.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.logs import DISCARD

from .compile import EVM_VERSION, CompiledContract, compile_contract

try:  # eth-tester is the embedded backend; a node over HTTP does not need it
    from eth_tester.exceptions import TransactionFailed
except ImportError:  # pragma: no cover - eth-tester is a dependency of the project
    class TransactionFailed(Exception):  # type: ignore[no-redef]
        """Stand-in so isinstance checks work without eth-tester installed."""


ERROR_SELECTOR = "08c379a0"  # Error(string)
DEFAULT_FUNDING_WEI = 10**21  # 1000 ether
GAS_MARGIN = 1.25


class TransactionReverted(Exception):
    """A transaction was mined with status 0 (or refused by the node as reverting)."""

    def __init__(self, reason: str | None, receipt: Any = None, tx_hash: bytes | None = None):
        self.reason = reason
        self.receipt = receipt
        self.tx_hash = tx_hash
        super().__init__(f"execution reverted: {reason}" if reason else "execution reverted")


# ----------------------------------------------------------------------------- reverts

_REASON_PATTERNS = (
    re.compile(r"reverted with reason string '(.*)'", re.DOTALL),  # Hardhat
    re.compile(r"execution reverted:\s*(.*)", re.DOTALL),  # eth-tester, geth, web3
    re.compile(r"revert(?:ed)?:?\s+(.+)", re.DOTALL),
)


def _decode_error_data(data: Any) -> str | None:
    """Decode ABI ``Error(string)`` revert data (hex string or bytes) to its message."""
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, (bytes, bytearray)):
        data = data.hex()
    if not isinstance(data, str):
        return None
    data = data.removeprefix("0x")
    if not data.startswith(ERROR_SELECTOR) or len(data) < 8 + 128:
        return None
    try:
        from eth_abi import decode

        (msg,) = decode(["string"], bytes.fromhex(data[8:]))
        return msg
    except Exception:  # noqa: BLE001 - malformed revert data: no reason to report
        return None


def _message_of(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    if isinstance(msg, str) and msg:
        return msg
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    if exc.args and isinstance(exc.args[0], dict):
        return str(exc.args[0].get("message", ""))
    return str(exc)


def is_revert(exc: BaseException) -> bool:
    """True for a contract revert from any backend (eth-tester, web3 over HTTP, a status-0 receipt)."""
    if isinstance(exc, (TransactionFailed, ContractLogicError, TransactionReverted)):
        return True
    if isinstance(exc, Web3RPCError):
        return "revert" in _message_of(exc).lower()
    return False


def revert_reason(exc: BaseException) -> str | None:
    """The reason string of a revert (``"oracle: stale"``), or None (no reason, or not a revert)."""
    if not is_revert(exc):
        return None
    if isinstance(exc, TransactionReverted):
        return exc.reason
    decoded = _decode_error_data(getattr(exc, "data", None))
    if decoded:
        return decoded
    msg = _message_of(exc).strip()
    for pat in _REASON_PATTERNS:
        m = pat.search(msg)
        if m and m.group(1).strip():
            return m.group(1).strip()
    return None


# ----------------------------------------------------------------------------- signing

@dataclass
class SendStats:
    sent: int = 0
    reverted: int = 0
    seconds: float = 0.0

    @property
    def tx_per_second(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class LocalSigner:
    """Signs and sends transactions for one eth-account key over any ``Web3``.

    The nonce is fetched once (``pending``) and then counted locally; it is re-read from the
    chain after a send that raised. Fees are EIP-1559: ``maxPriorityFeePerGas`` from the node,
    ``maxFeePerGas = 2 * baseFee + tip`` from the latest block. Gas is estimated (which also
    surfaces a revert and its reason before anything is sent) unless given.
    """

    def __init__(self, w3: Web3, account: LocalAccount, *, receipt_timeout: float = 120.0,
                 poll_latency: float = 0.05):
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.chain_id = w3.eth.chain_id
        self.receipt_timeout = receipt_timeout
        self.poll_latency = poll_latency
        self._nonce: int | None = None
        self._lock = threading.RLock()
        self.stats = SendStats()

    # -- pieces
    def next_nonce(self) -> int:
        if self._nonce is None:
            self._nonce = self.w3.eth.get_transaction_count(self.address, "pending")
        return self._nonce

    def resync_nonce(self) -> int:
        self._nonce = None
        return self.next_nonce()

    def fees(self) -> dict[str, int]:
        base = self.w3.eth.get_block("latest").get("baseFeePerGas") or 0
        try:
            tip = int(self.w3.eth.max_priority_fee)
        except Exception:  # noqa: BLE001 - a node without eth_maxPriorityFeePerGas
            tip = 10**9
        return {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}

    def build(self, call: Any = None, *, to: str | None = None, data: bytes | str | None = None,
              value: int = 0, gas: int | None = None) -> dict[str, Any]:
        """A complete EIP-1559 transaction dict for a contract function call or a raw (to, data)."""
        tx: dict[str, Any] = {"from": self.address, "value": value, "chainId": self.chain_id,
                              "nonce": self.next_nonce(), **self.fees()}
        if call is not None:
            # a gas value (0 when unknown) stops web3 estimating here; we estimate below, once
            tx = call.build_transaction({**tx, "gas": gas or 0})
            if gas is None:
                tx.pop("gas", None)
        else:
            if to is not None:
                tx["to"] = to
            if data is not None:
                tx["data"] = data
        if gas is None:
            est = self.w3.eth.estimate_gas({k: v for k, v in tx.items() if k != "nonce"})
            gas = int(est * GAS_MARGIN) + 10_000
        tx["gas"] = gas
        return tx

    def send(self, call: Any = None, *, to: str | None = None, data: bytes | str | None = None,
             value: int = 0, gas: int | None = None, wait: bool = True) -> Any:
        """Sign locally, send raw, and (by default) wait for the receipt.

        Returns the receipt (or the hash when ``wait=False``). Raises whatever the backend
        raises for a revert found during estimation, or :class:`TransactionReverted` when
        the receipt has status 0.
        """
        with self._lock:
            t0 = time.perf_counter()
            try:
                tx = self.build(call, to=to, data=data, value=value, gas=gas)
                signed = self.account.sign_transaction(tx)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except Exception:
                self.resync_nonce()
                raise
            self._nonce = tx["nonce"] + 1
            if not wait:
                self.stats.sent += 1
                self.stats.seconds += time.perf_counter() - t0
                return tx_hash
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout, poll_latency=self.poll_latency)
            self.stats.sent += 1
            self.stats.seconds += time.perf_counter() - t0
            if receipt["status"] != 1:
                self.stats.reverted += 1
                raise TransactionReverted(self._replay_reason(tx, receipt), receipt, tx_hash)
            return receipt

    def _replay_reason(self, tx: dict[str, Any], receipt: Any) -> str | None:
        """Re-run a failed transaction as a call on the parent block to learn its reason."""
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
        try:
            self.w3.eth.call(call, max(int(receipt["blockNumber"]) - 1, 0))
        except Exception as exc:  # noqa: BLE001 - we want the revert, whatever its class
            return revert_reason(exc)
        return None


# ----------------------------------------------------------------------------- the chain

class EmbeddedChain:
    """An in-process EVM: eth-tester with the py-evm backend, reached through web3.

    ``accounts`` are eth-tester's unlocked, funded accounts (used with ``transact``, e.g. to
    deploy); :meth:`new_account` makes a random key, funds it and returns a
    ``LocalAccount`` to sign with. Block timestamps follow the wall clock unless moved
    forward with :meth:`time_travel` / :meth:`advance`.
    """

    def __init__(self, evm_version: str = EVM_VERSION):
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        self.evm_version = evm_version
        self.tester = EthereumTester(PyEVMBackend())
        self.w3 = Web3(EthereumTesterProvider(self.tester))
        self.chain_id = self.w3.eth.chain_id
        self._signers: dict[str, LocalSigner] = {}
        self._lock = threading.RLock()

    # -- accounts
    @property
    def accounts(self) -> list[str]:
        return list(self.w3.eth.accounts)

    @property
    def funder(self) -> str:
        return self.w3.eth.accounts[0]

    def fund(self, address: str, wei: int = DEFAULT_FUNDING_WEI) -> Any:
        with self._lock:
            tx_hash = self.w3.eth.send_transaction({"from": self.funder, "to": address, "value": wei})
            return self.w3.eth.wait_for_transaction_receipt(tx_hash)

    def new_account(self, fund_wei: int = DEFAULT_FUNDING_WEI) -> LocalAccount:
        """A fresh random key (never a constant), funded with ``fund_wei``."""
        acct = Account.create()
        if fund_wei:
            self.fund(acct.address, fund_wei)
        return acct

    def balance(self, address: str) -> int:
        return self.w3.eth.get_balance(address)

    def signer(self, account: LocalAccount) -> LocalSigner:
        """The (cached) :class:`LocalSigner` for a key, so its nonce is counted in one place."""
        with self._lock:
            s = self._signers.get(account.address)
            if s is None:
                s = self._signers[account.address] = LocalSigner(self.w3, account)
            return s

    # -- contracts
    def compiled(self, name: str) -> CompiledContract:
        return compile_contract(name, self.evm_version)

    def deploy(self, name: str, *args: Any, account: LocalAccount | None = None) -> Contract:
        """Deploy ``contracts/<name>.vy`` with constructor ``args``.

        From ``account`` (signed locally) when given, else from the funded unlocked account
        ``accounts[0]``; ``msg.sender`` (owner, issuer) is that sender.
        """
        c = self.compiled(name)
        factory = self.w3.eth.contract(abi=c.abi, bytecode=c.bytecode)
        with self._lock:
            if account is not None:
                receipt = self.signer(account).send(factory.constructor(*args))
            else:
                tx_hash = factory.constructor(*args).transact({"from": self.funder})
                receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
                if receipt["status"] != 1:
                    raise TransactionReverted(None, receipt, tx_hash)
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=c.abi)

    def at(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=address, abi=self.compiled(name).abi)

    # -- transactions
    def send(self, call: Any, account: LocalAccount, *, gas: int | None = None,
             value: int = 0, wait: bool = True) -> Any:
        """Send a contract call signed locally by ``account``; returns the receipt."""
        with self._lock:
            return self.signer(account).send(call, gas=gas, value=value, wait=wait)

    def transact(self, call: Any, sender: str | None = None) -> Any:
        """Send through an unlocked account with web3's ``transact()`` (node-side signing)."""
        with self._lock:
            tx_hash = call.transact({"from": sender or self.funder})
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
            if receipt["status"] != 1:
                raise TransactionReverted(None, receipt, tx_hash)
            return receipt

    # -- time
    def now(self) -> int:
        """The timestamp the next transaction will see as ``block.timestamp`` (at least)."""
        return int(self.w3.eth.get_block("pending")["timestamp"])

    def time_travel(self, timestamp: int) -> None:
        """Mine a block at ``timestamp`` (must not go backwards); later blocks follow it."""
        with self._lock:
            self.tester.time_travel(int(timestamp))

    def advance(self, seconds: int) -> int:
        target = self.now() + int(seconds)
        self.time_travel(target)
        return target

    def mine(self, blocks: int = 1) -> None:
        with self._lock:
            self.tester.mine_blocks(blocks)

    # -- events
    @staticmethod
    def events(contract: Contract, name: str, receipt: Any) -> list[dict[str, Any]]:
        """The decoded ``name`` events of ``contract`` in ``receipt``, as dicts of their args."""
        return [dict(ev["args"]) for ev in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)]


# ----------------------------------------------------------------------------- throughput

def oracle_throughput(chain: EmbeddedChain, n: int = 200, *, mode: str = "signed",
                      reporter: LocalAccount | None = None, estimate_gas: bool = False,
                      asset: bytes | None = None) -> dict[str, float]:
    """Deploy an Oracle and time ``n`` price submissions; returns counts and tx/s.

    ``mode="signed"`` signs locally (LocalSigner, fixed gas unless ``estimate_gas``);
    ``mode="transact"`` uses web3's ``transact()`` from an unlocked account.
    """
    from . import asset_id

    asset = asset or asset_id("BTC")
    oracle = chain.deploy("Oracle", 3600, 60, 10_000, 1)
    chain.transact(oracle.functions.set_bounds(asset, 1, 10**15))
    if mode == "signed":
        reporter = reporter or chain.new_account()
        chain.transact(oracle.functions.add_reporter(reporter.address))
    elif mode == "transact":
        sender = chain.accounts[1]
        chain.transact(oracle.functions.add_reporter(sender))
    else:
        raise ValueError(f"mode must be 'signed' or 'transact', not {mode!r}")
    ts0 = chain.now() - 1800  # room for n increasing observation times
    gas = None if estimate_gas else 200_000
    price = 60_000 * 10**6
    t0 = time.perf_counter()
    for i in range(n):
        call = oracle.functions.submit(asset, price + i, ts0 + i, 900_000, 5)
        if mode == "signed":
            chain.send(call, reporter, gas=gas)
        else:
            chain.transact(call, sender)
    dt = time.perf_counter() - t0
    rid = oracle.functions.latest_round_id(asset).call()
    return {"n": float(n), "seconds": dt, "tx_per_second": n / dt, "rounds": float(rid)}


