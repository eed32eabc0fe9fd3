"""The chain side of hedgeflow: Vyper contracts compiled by the project, and the EVMs they run on.

- ``contracts/*.vy``: ``Oracle`` (reporters, validated prices, breaker, pause, ``latestRoundData``),
  ``Parameters`` (premium parameters behind k-of-n owner approvals) and ``PolicyRegistry``
  (protection puts created, activated, exercised against the oracle, expired).
- ``compile``: the vyper compiler API, EVM version pinned, results cached by source hash.
- ``embedded``: an in-process EVM (eth-tester on py-evm) behind web3, locally signed
  transactions, and ``is_revert`` / ``revert_reason`` for both eth-tester's ``TransactionFailed``
  and web3's ``ContractLogicError``.

On-chain values are integers in micro-units (x 10**6); assets are ``bytes32`` keys made by
``asset_id("BTC")``. This module imports neither web3 nor vyper, so it is cheap to import.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

MICRO = 1_000_000

# PolicyRegistry states (uint8 on chain)
POLICY_NONE = 0
POLICY_CREATED = 1
POLICY_ACTIVE = 2
POLICY_EXERCISED = 3
POLICY_EXPIRED = 4
POLICY_STATES = {
    POLICY_NONE: "none",
    POLICY_CREATED: "created",
    POLICY_ACTIVE: "active",
    POLICY_EXERCISED: "exercised",
    POLICY_EXPIRED: "expired",
}


def asset_id(symbol: str) -> bytes:
    """The on-chain key of an asset: its upper-case ASCII symbol, left-aligned in 32 bytes."""
    raw = symbol.strip().upper().encode("ascii")
    if not raw or len(raw) > 32:
        raise ValueError(f"asset symbol must be 1..32 ASCII characters, got {symbol!r}")
    return raw.ljust(32, b"\0")


def asset_symbol(key: bytes) -> str:
    """Inverse of :func:`asset_id`."""
    return bytes(key).rstrip(b"\0").decode("ascii")


def to_micro(value: float | str | Decimal) -> int:
    """A USD amount, fraction or coin amount as an integer number of micro-units (half-even)."""
    d = Decimal(str(value)) * MICRO
    return int(d.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def from_micro(value: int) -> float:
    return int(value) / MICRO


def put_payout_micro(strike_micro: int, price_micro: int, amount_micro: int) -> int:
    """The PolicyRegistry payout rule, in Python: (strike - price) * amount // 10**6, 0 if OTM."""
    if price_micro >= strike_micro:
        return 0
    return (strike_micro - price_micro) * amount_micro // MICRO


__all__ = [
    "MICRO",
    "POLICY_ACTIVE",
    "POLICY_CREATED",
    "POLICY_EXERCISED",
    "POLICY_EXPIRED",
    "POLICY_NONE",
    "POLICY_STATES",
    "asset_id",
    "asset_symbol",
    "from_micro",
    "put_payout_micro",
    "to_micro",
]
