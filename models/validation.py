"""Validation rules for ticks (plan 003, AC-004), vectorized over columnar batches.

Each function returns one reason string per row: ``""`` for a row that passes, otherwise the
first rule it breaks, worded for the quarantine table. Rules are checked in the order listed so a
row's reason is deterministic.
"""

from __future__ import annotations

import numpy as np

from models.records import SIDES, QuoteBatch, TradeBatch


def _first_failure(n: int, rules: list[tuple[np.ndarray, str]]) -> np.ndarray:
    """Reason per row: the message of the first rule whose ``failed`` mask is true."""
    reasons = np.full(n, "", dtype=object)
    undecided = np.ones(n, dtype=bool)
    for failed, message in rules:
        hit = failed & undecided
        reasons[hit] = message
        undecided &= ~hit
    return reasons


# Event times outside [2009-01-03, 2100-01-01) are unit mistakes (ms or ns read as seconds), not
# market data: refusing them keeps them from being stored as some other instant.
MIN_EVENT_TS_S = 1_230_940_800.0
MAX_EVENT_TS_S = 4_102_444_800.0


def _implausible_time(ts: np.ndarray) -> np.ndarray:
    return ~((ts >= MIN_EVENT_TS_S) & (ts < MAX_EVENT_TS_S))


def _not_positive_finite(x: np.ndarray) -> np.ndarray:
    # NaN compares false, so `x > 0` alone rejects NaN; isfinite rejects +inf.
    return ~(np.isfinite(x) & (x > 0))


def quote_rejections(quotes: QuoteBatch) -> np.ndarray:
    """Why each quote is invalid: prices and sizes positive and finite; bid strictly below ask."""
    return _first_failure(
        len(quotes),
        [
            (_not_positive_finite(quotes.bid), "bid price not positive and finite"),
            (_not_positive_finite(quotes.ask), "ask price not positive and finite"),
            (_not_positive_finite(quotes.bid_size_coin), "bid size not positive and finite"),
            (_not_positive_finite(quotes.ask_size_coin), "ask size not positive and finite"),
            (quotes.bid >= quotes.ask, "crossed or locked book: bid >= ask"),
            (_implausible_time(quotes.event_ts), "event time not a plausible UTC time (2009-2100)"),
        ],
    )


def trade_rejections(trades: TradeBatch) -> np.ndarray:
    """Why each trade is invalid: price and size positive and finite; side is buy or sell;
    trade id present and not repeated within the batch."""
    n = len(trades)
    duplicate = np.zeros(n, dtype=bool)
    if n:
        keys = np.char.add(
            np.char.add(trades.instrument.astype(str), "\x1f"), trades.trade_id.astype(str)
        )
        _, first_index = np.unique(keys, return_index=True)
        duplicate[:] = True
        duplicate[first_index] = False
    return _first_failure(
        n,
        [
            (_not_positive_finite(trades.price), "trade price not positive and finite"),
            (_not_positive_finite(trades.size_coin), "trade size not positive and finite"),
            (~np.isin(trades.side, SIDES), "trade side is not buy or sell"),
            (trades.trade_id == "", "trade id missing"),
            (duplicate, "duplicate trade id in batch"),
            (_implausible_time(trades.event_ts), "event time not a plausible UTC time (2009-2100)"),
        ],
    )
