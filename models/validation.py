"""Validation rules for ticks (plan 003, AC-004), vectorized over columnar batches.

Each function returns one reason string per row: ``""`` for a row that passes, otherwise the
first rule it breaks, worded for the quarantine table. Rules are checked in the order listed so a
row's reason is deterministic.
"""

from __future__ import annotations

import numpy as np

from models.records import (
    SIDES,
    Batch,
    BookUpdateBatch,
    FundingBatch,
    IndexPriceBatch,
    OptionTickerBatch,
    QuoteBatch,
    TradeBatch,
)


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


def plausible_time(ts: float) -> bool:
    """One time (epoch s) within the range ``_implausible_time`` accepts."""
    return MIN_EVENT_TS_S <= ts < MAX_EVENT_TS_S


def _not_positive_finite(x: np.ndarray) -> np.ndarray:
    # NaN compares false, so `x > 0` alone rejects NaN; isfinite rejects +inf.
    return ~(np.isfinite(x) & (x > 0))


def _present_but_not_positive_finite(x: np.ndarray) -> np.ndarray:
    # NaN means "the venue did not say" (old Coinbase tickers carry no sizes): allowed.
    return ~np.isnan(x) & _not_positive_finite(x)


def _present_but_negative_or_infinite(x: np.ndarray) -> np.ndarray:
    return ~np.isnan(x) & ~(np.isfinite(x) & (x >= 0))


def quote_rejections(quotes: QuoteBatch) -> np.ndarray:
    """Why each quote is invalid: prices positive and finite, sizes too when given; bid strictly
    below ask."""
    return _first_failure(
        len(quotes),
        [
            (_not_positive_finite(quotes.bid), "bid price not positive and finite"),
            (_not_positive_finite(quotes.ask), "ask price not positive and finite"),
            (_present_but_not_positive_finite(quotes.bid_size_coin), "bid size not positive and finite"),
            (_present_but_not_positive_finite(quotes.ask_size_coin), "ask size not positive and finite"),
            (quotes.bid >= quotes.ask, "crossed or locked book: bid >= ask"),
            (_implausible_time(quotes.event_ts), "event time not a plausible UTC time (2009-2100)"),
        ],
    )


def trade_rejections(trades: TradeBatch) -> np.ndarray:
    """Why each trade is invalid: price and size positive and finite; side is buy or sell; trade
    id present. (Repeated trades are the validator's to refuse: it remembers across batches.)"""
    return _first_failure(
        len(trades),
        [
            (_not_positive_finite(trades.price), "trade price not positive and finite"),
            (_not_positive_finite(trades.size_coin), "trade size not positive and finite"),
            (~np.isin(trades.side, SIDES), "trade side is not buy or sell"),
            (trades.trade_id == "", "trade id missing"),
            (_implausible_time(trades.event_ts), "event time not a plausible UTC time (2009-2100)"),
        ],
    )


def book_update_rejections(book: BookUpdateBatch) -> np.ndarray:
    """Why each book level is invalid: price positive and finite; size finite and not negative
    (0 deletes the level); side is bid or ask."""
    return _first_failure(
        len(book),
        [
            (_not_positive_finite(book.price), "book price not positive and finite"),
            (~(np.isfinite(book.size_coin) & (book.size_coin >= 0)), "book size negative or not finite"),
            (~np.isin(book.side, ("bid", "ask")), "book side is not bid or ask"),
            (_implausible_time(book.event_ts), "event time not a plausible UTC time (2009-2100)"),
        ],
    )


def option_ticker_rejections(t: OptionTickerBatch) -> np.ndarray:
    """Why each option ticker is invalid. Bids, asks and IVs may be absent (NaN) but not
    negative; a present bid must be below a present ask; strike, underlying and mark must make
    sense; expiry must be a plausible time."""
    both = ~np.isnan(t.bid_coin) & ~np.isnan(t.ask_coin)
    return _first_failure(
        len(t),
        [
            (_not_positive_finite(t.strike_usd), "strike not positive and finite"),
            (_implausible_time(t.expiry_utc), "expiry not a plausible UTC time (2009-2100)"),
            (_present_but_negative_or_infinite(t.bid_coin), "option bid negative or not finite"),
            (_present_but_negative_or_infinite(t.ask_coin), "option ask negative or not finite"),
            (both & (t.bid_coin > t.ask_coin), "crossed option book: bid > ask"),
            (~(np.isfinite(t.mark_coin) & (t.mark_coin >= 0)), "mark price negative or not finite"),
            (_present_but_negative_or_infinite(t.mark_iv), "mark IV negative or not finite"),
            (_not_positive_finite(t.underlying_usd), "underlying price not positive and finite"),
            (_implausible_time(t.event_ts), "event time not a plausible UTC time (2009-2100)"),
        ],
    )


def funding_rejections(f: FundingBatch) -> np.ndarray:
    """Why each funding row is invalid: mark positive; index positive when given; the rate finite
    and below 100% per interval (larger is a unit mistake)."""
    return _first_failure(
        len(f),
        [
            (_not_positive_finite(f.mark_usd), "mark price not positive and finite"),
            (_present_but_not_positive_finite(f.index_usd), "index price not positive and finite"),
            (~(np.abs(f.funding_rate) < 1.0), "funding rate not finite or beyond ±100% per interval"),
            (_implausible_time(f.event_ts), "event time not a plausible UTC time (2009-2100)"),
        ],
    )


def index_price_rejections(ix: IndexPriceBatch) -> np.ndarray:
    return _first_failure(
        len(ix),
        [
            (_not_positive_finite(ix.price_usd), "index price not positive and finite"),
            (_implausible_time(ix.event_ts), "event time not a plausible UTC time (2009-2100)"),
        ],
    )


RULES = {
    "trades": trade_rejections,
    "quotes": quote_rejections,
    "option_tickers": option_ticker_rejections,
    "book_updates": book_update_rejections,
    "funding": funding_rejections,
    "index_prices": index_price_rejections,
}


def rejections(table: str, batch: Batch) -> np.ndarray:
    """Reason per row for a batch of ``table`` (a key of ``models.records.DATA_BATCHES``)."""
    return RULES[table](batch)
