"""The order types every part of the hedge engine shares (issue 7): a proposed ``Order``, the
``Fill`` a venue reports for it and the ``Rejection`` the safety gate returns instead of it.

Conventions: ``ts_s`` epoch seconds (passed in, never read from a clock); ``quantity_coin`` the
size in coins of ``asset`` (> 0; the direction is ``side``); prices in USD; ``fee_usd`` the fee
paid (negative for a maker rebate). ``kind`` is one of ``KINDS``: ``"spot"``, ``"perp"`` (a
perpetual swap), ``"quarterly"`` (a dated future), ``"put"`` (a protective option, the hedge).

``Order`` is plain data and does not validate itself: a malformed order must reach the safety
gate, which refuses it with a ``Rejection`` (``order_problems`` lists what is wrong). A ``Fill``
is produced by a venue and must be well formed, so it checks itself on construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = ["Side", "SIDES", "KINDS", "LIQUIDITIES", "Order", "Fill", "Rejection", "order_problems",
           "side_sign"]

Side = Literal["buy", "sell"]
SIDES = ("buy", "sell")
KINDS = ("spot", "perp", "quarterly", "put")
LIQUIDITIES = ("maker", "taker")


def side_sign(side: str) -> int:
    """+1 for ``"buy"``, -1 for ``"sell"``; ValueError for anything else."""
    if side == "buy":
        return 1
    if side == "sell":
        return -1
    raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")


@dataclass(frozen=True, slots=True)
class Order:
    """A proposed order, before the safety gate.

    ``reason`` says why the engine wants it (``"rebalance"``, ``"take_profit"``,
    ``"panic_close"``, ...). ``venue`` ``""`` lets the router choose. ``limit_price_usd`` NaN
    makes it a market order. ``order_id`` is set by whoever creates it (``f"{reason}-{n}"``).
    """

    ts_s: float
    asset: str
    kind: str
    side: str
    quantity_coin: float
    reason: str
    venue: str = ""
    limit_price_usd: float = math.nan
    reduce_only: bool = False
    order_id: str = ""

    @property
    def is_market(self) -> bool:
        """True when the order has no limit price (NaN)."""
        return math.isnan(self.limit_price_usd)

    @property
    def signed_quantity_coin(self) -> float:
        """``+quantity`` for a buy, ``-quantity`` for a sell."""
        return side_sign(self.side) * self.quantity_coin


def order_problems(order: Order) -> tuple[str, ...]:
    """What is structurally wrong with ``order`` (empty when nothing is): unknown side or kind,
    a quantity that is not a finite positive number, a limit price that is neither NaN nor a
    finite positive number, a non-finite timestamp, an empty asset."""
    problems = []
    if order.side not in SIDES:
        problems.append(f"side {order.side!r} is not one of {SIDES}")
    if order.kind not in KINDS:
        problems.append(f"kind {order.kind!r} is not one of {KINDS}")
    if not (math.isfinite(order.quantity_coin) and order.quantity_coin > 0):
        problems.append(f"quantity_coin {order.quantity_coin!r} is not a finite positive number")
    if not (math.isnan(order.limit_price_usd)
            or (math.isfinite(order.limit_price_usd) and order.limit_price_usd > 0)):
        problems.append(f"limit_price_usd {order.limit_price_usd!r} is neither NaN (market) "
                        "nor a finite positive price")
    if not math.isfinite(order.ts_s):
        problems.append(f"ts_s {order.ts_s!r} is not finite")
    if not order.asset:
        problems.append("asset is empty")
    return tuple(problems)


@dataclass(frozen=True, slots=True)
class Fill:
    """An execution of (part of) an order: ``quantity_coin`` > 0 at ``price_usd`` (the
    volume-weighted price of this fill), ``fee_usd`` paid in USD (negative: a rebate),
    ``liquidity`` ``"maker"`` or ``"taker"``."""

    ts_s: float
    order_id: str
    asset: str
    kind: str
    side: str
    venue: str
    quantity_coin: float
    price_usd: float
    fee_usd: float
    liquidity: str

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"Fill.side must be one of {SIDES}, got {self.side!r}")
        if self.liquidity not in LIQUIDITIES:
            raise ValueError(f"Fill.liquidity must be one of {LIQUIDITIES}, got {self.liquidity!r}")
        if not (math.isfinite(self.quantity_coin) and self.quantity_coin > 0):
            raise ValueError(f"Fill.quantity_coin must be finite and > 0, got {self.quantity_coin!r}")
        if not (math.isfinite(self.price_usd) and self.price_usd > 0):
            raise ValueError(f"Fill.price_usd must be finite and > 0, got {self.price_usd!r}")
        if not math.isfinite(self.fee_usd):
            raise ValueError(f"Fill.fee_usd must be finite, got {self.fee_usd!r}")

    @property
    def signed_quantity_coin(self) -> float:
        """``+quantity`` for a buy, ``-quantity`` for a sell."""
        return side_sign(self.side) * self.quantity_coin

    @property
    def notional_usd(self) -> float:
        """``quantity_coin * price_usd`` (unsigned, before fees)."""
        return self.quantity_coin * self.price_usd


@dataclass(frozen=True, slots=True)
class Rejection:
    """The safety gate's refusal of ``order``: ``rule`` names the rule that refused,
    ``detail`` says why in words."""

    ts_s: float
    order: Order
    rule: str
    detail: str
