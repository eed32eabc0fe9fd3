"""dataflows.chain helpers: asset keys, micro-units, the payout rule."""

from __future__ import annotations

import pytest

from dataflows.chain import (
    MICRO,
    asset_id,
    asset_symbol,
    from_micro,
    put_payout_micro,
    to_micro,
)


def test_asset_id_roundtrip():
    key = asset_id("btc")
    assert key == b"BTC" + b"\0" * 29 and len(key) == 32
    assert asset_symbol(key) == "BTC"
    with pytest.raises(ValueError):
        asset_id("")
    with pytest.raises(ValueError):
        asset_id("X" * 33)


def test_micro_units():
    assert MICRO == 10**6
    assert to_micro(65_432.123456) == 65_432_123_456
    assert to_micro("0.55") == 550_000
    assert to_micro(0.1 + 0.2) == 300_000
    assert to_micro(0.0000005) == 0 and to_micro(0.0000015) == 2  # half-even
    assert from_micro(1_250_000_000) == 1_250.0


def test_put_payout():
    assert put_payout_micro(60_000 * MICRO, 50_000 * MICRO, MICRO // 2) == 5_000 * MICRO
    assert put_payout_micro(60_000 * MICRO, 60_000 * MICRO, MICRO) == 0
    assert put_payout_micro(60_000 * MICRO, 70_000 * MICRO, MICRO) == 0
    assert put_payout_micro(3, 1, 1) == 0  # floors like the contract
