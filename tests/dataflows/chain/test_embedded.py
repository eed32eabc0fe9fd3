"""embedded.py: the embedded chain, local signing, revert detection on every backend, tx/s."""

from __future__ import annotations

from eth_abi import encode
from eth_tester.exceptions import TransactionFailed
from web3.exceptions import ContractLogicError, ContractPanicError, Web3RPCError

from dataflows.chain import to_micro
from dataflows.chain.embedded import (
    EmbeddedChain,
    TransactionReverted,
    is_revert,
    oracle_throughput,
    revert_reason,
)

from .conftest import BTC, reverts


def _error_data(msg: str) -> str:
    return "0x08c379a0" + encode(["string"], [msg]).hex()


def test_is_revert_and_reason_for_each_backend():
    cases = [
        (TransactionFailed("execution reverted: oracle: stale"), "oracle: stale"),
        (ContractLogicError("execution reverted: oracle: paused", data=_error_data("oracle: paused")),
         "oracle: paused"),
        (ContractLogicError("execution reverted", data=_error_data("params: not owner")), "params: not owner"),
        (ContractLogicError("execution reverted: registry: expired"), "registry: expired"),
        (Web3RPCError("Error: VM Exception while processing transaction: reverted with reason "
                      "string 'oracle: out of order'"), "oracle: out of order"),
        (TransactionReverted("oracle: not reporter"), "oracle: not reporter"),
        (TransactionFailed("execution reverted"), None),
        (ContractPanicError("Panic error 0x11: arithmetic underflow or overflow"), None),
    ]
    for exc, reason in cases:
        assert is_revert(exc), exc
        got = revert_reason(exc)
        if reason is None:
            assert got is None or "reverted" not in got
        else:
            assert got == reason, (exc, got)
    for exc in (ValueError("x"), Web3RPCError("nonce too low"), TimeoutError()):
        assert not is_revert(exc)
        assert revert_reason(exc) is None


def test_embedded_backend_raises_transaction_failed(chain, oracle, stranger):
    """What the EthereumTesterProvider raises with this web3: eth-tester's TransactionFailed,
    on call, on gas estimation and on transact()."""
    call = oracle.functions.submit(BTC, to_micro(60_000), chain.now(), 900_000, 5)
    for attempt in (lambda: call.call({"from": stranger.address}),
                    lambda: call.estimate_gas({"from": stranger.address}),
                    lambda: call.transact({"from": chain.accounts[3]})):
        with reverts("oracle: not reporter") as info:
            attempt()
        assert isinstance(info.exc, TransactionFailed)


def test_new_accounts_are_random_and_funded(chain):
    a, b = chain.new_account(), chain.new_account(fund_wei=5)
    assert a.address != b.address and a.key != b.key
    assert chain.balance(a.address) == 10**21
    assert chain.balance(b.address) == 5
    assert a.address not in chain.accounts


def test_local_signing_counts_nonces(chain, oracle, owner):
    signer = chain.signer(owner)
    assert chain.signer(owner) is signer
    start = chain.w3.eth.get_transaction_count(owner.address)
    for i in range(3):
        receipt = chain.send(oracle.functions.add_reporter(chain.new_account(0).address), owner)
        assert receipt["status"] == 1
        tx = chain.w3.eth.get_transaction(receipt["transactionHash"])
        assert tx["nonce"] == start + i
        assert tx["type"] == 2  # EIP-1559
        assert tx["maxFeePerGas"] >= tx["maxPriorityFeePerGas"] > 0
    assert signer.next_nonce() == start + 3


def test_nonce_recovers_after_refused_and_mined_reverts(chain, oracle, owner, reporter):
    f = oracle.functions
    # refused at estimation: nothing sent, the nonce is re-read and stays usable
    with reverts("oracle: already reporter"):
        chain.send(f.add_reporter(reporter.address), owner)
    # mined with status 0 (fixed gas): the nonce is consumed and the reason replayed
    with reverts("oracle: already reporter") as info:
        chain.send(f.add_reporter(reporter.address), owner, gas=200_000)
    assert isinstance(info.exc, TransactionReverted)
    chain.send(f.pause(), owner)
    assert f.paused().call()


def test_time_travel(chain):
    t0 = chain.now()
    target = chain.advance(3_600)
    assert target >= t0 + 3_600
    assert chain.now() >= target
    chain.mine(2)
    assert chain.now() >= target + 2


def test_deploy_from_unlocked_account(chain):
    oracle = chain.deploy("Oracle", 60, 5, 100, 1)
    assert oracle.functions.is_owner(chain.funder).call()
    assert chain.at("Oracle", oracle.address).functions.decimals().call() == 6


def test_throughput_signed_locally_beats_transact(compiled):
    chain = EmbeddedChain()
    signed = oracle_throughput(chain, 60, mode="signed")
    transact = oracle_throughput(chain, 30, mode="transact")
    print(f"\noracle submits: signed locally {signed['tx_per_second']:.1f} tx/s, "
          f"transact() {transact['tx_per_second']:.1f} tx/s")
    assert signed["rounds"] == 60 and transact["rounds"] == 30
    assert signed["tx_per_second"] > transact["tx_per_second"]
