"""Fixtures for the contract suites: contracts compiled once per session, a fresh embedded
chain per test, keys generated here (random, never constants)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from dataflows.chain import asset_id, to_micro
from dataflows.chain.compile import CompiledContract, compile_all
from dataflows.chain.embedded import EmbeddedChain, is_revert, revert_reason

BTC = asset_id("BTC")
ETH = asset_id("ETH")

# Oracle deployment used by the suites
MAX_AGE = 600
MAX_FUTURE = 60
MAX_DEVIATION_BPS = 1000  # 10 %
MIN_SOURCES = 3
BTC_MIN = to_micro(1_000)
BTC_MAX = to_micro(1_000_000)


class RevertInfo:
    exc: BaseException | None = None
    reason: str | None = None


@contextmanager
def reverts(reason: str | None = None) -> Iterator[RevertInfo]:
    """Assert that the block reverts (any backend's revert) with exactly ``reason``."""
    info = RevertInfo()
    with pytest.raises(Exception) as excinfo:
        yield info
    exc = excinfo.value
    assert is_revert(exc), f"expected a revert, got {type(exc).__name__}: {exc}"
    info.exc = exc
    info.reason = revert_reason(exc)
    if reason is not None:
        assert info.reason == reason, f"revert reason {info.reason!r} != {reason!r}"


@pytest.fixture(scope="session")
def compiled() -> dict[str, CompiledContract]:
    return compile_all()


@pytest.fixture
def chain(compiled) -> EmbeddedChain:
    return EmbeddedChain()


@pytest.fixture
def owner(chain):
    return chain.new_account()


@pytest.fixture
def reporter(chain):
    return chain.new_account()


@pytest.fixture
def stranger(chain):
    return chain.new_account()


@pytest.fixture
def oracle(chain, owner, reporter):
    o = chain.deploy("Oracle", MAX_AGE, MAX_FUTURE, MAX_DEVIATION_BPS, MIN_SOURCES, account=owner)
    chain.send(o.functions.add_reporter(reporter.address), owner)
    chain.send(o.functions.set_bounds(BTC, BTC_MIN, BTC_MAX), owner)
    return o


@pytest.fixture
def submit(chain, oracle, reporter):
    """submit(price_usd, ts=None, asset=BTC, confidence=0.9, n=5, by=reporter) -> receipt."""

    def _submit(price_usd, ts=None, asset=BTC, confidence=0.9, n=5, by=None, gas=None):
        ts = chain.now() - 5 if ts is None else ts
        call = oracle.functions.submit(asset, to_micro(price_usd), ts, to_micro(confidence), n)
        return chain.send(call, by or reporter, gas=gas)

    return _submit
