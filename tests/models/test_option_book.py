"""models.option_book: the latest ticker per option, and chain snapshots with hedgeflow's own IVs."""

from __future__ import annotations

import dataclasses

import numpy as np

from models.option_book import SECONDS_PER_YEAR, OptionBook
from models.option_chain import SurfaceParams, build_chain, implied_vol_surface, quote_chain
from models.records import OptionTickerBatch

NOW = 1_795_000_000.0  # 2026-11-18 UTC
SPOT = 95_000.0
SURFACE = SurfaceParams()


def tickers(spot=SPOT, now=NOW, event_ts=None, asset="BTC", chain=None):
    """A Deribit-style ticker of every listed option, from the simulator's SSVI chain."""
    chain = chain or build_chain(asset, spot, now, SURFACE)
    q = quote_chain(chain, spot, now, SURFACE)
    n = len(chain)
    nan = np.full(n, np.nan)
    return chain, q, OptionTickerBatch.from_columns(
        exchange=["deribit"] * n, instrument=list(chain.names), asset=[asset] * n,
        event_ts=np.full(n, now if event_ts is None else event_ts), receive_ts=np.full(n, now),
        expiry_utc=chain.expiry_ts, strike_usd=chain.strike, is_call=chain.is_call,
        bid_coin=np.where(q.bid_coin > 0, q.bid_coin, np.nan), bid_size=nan,
        ask_coin=q.ask_coin, ask_size=nan, mark_coin=q.mark_coin, mark_iv=q.mark_iv,
        bid_iv=q.bid_iv, ask_iv=q.ask_iv, underlying_usd=q.forward, index_usd=np.full(n, spot),
        open_interest=nan, delta=q.delta, gamma=q.gamma, vega=q.vega, theta=q.theta, rho=q.rho,
        raw=[""] * n,
    )


def test_snapshot_keeps_out_of_the_money_options_with_their_implied_vols():
    chain, q, batch = tickers()
    book = OptionBook()
    book.update(batch)
    snap = book.snapshot("BTC", NOW)
    assert len(snap) > 0 and snap.n_expiries >= 10
    # Out of the money only: calls at or above the forward, puts below.
    assert np.all(np.where(snap.is_call, snap.strike_usd >= snap.forward_usd,
                           snap.strike_usd < snap.forward_usd))
    # Exactly one option per (expiry, strike).
    keys = set(zip(snap.expiry_utc.tolist(), snap.strike_usd.tolist()))
    assert len(keys) == len(snap)
    np.testing.assert_allclose(snap.expiry_years, (snap.expiry_utc - NOW) / SECONDS_PER_YEAR)
    # Bid and ask vols bracket the surface vol the simulator marked from.
    truth = implied_vol_surface(np.log(snap.strike_usd / snap.forward_usd), snap.expiry_years, SURFACE)
    both = np.isfinite(snap.bid_vol)
    assert both.sum() > 0.5 * len(snap)
    assert np.all(snap.bid_vol[both] <= truth[both] + 1e-9)
    assert np.all(snap.ask_vol >= truth - 1e-9)
    assert np.all(np.isfinite(snap.mid_vol))
    assert snap.spot_usd == SPOT


def test_mid_vol_falls_back_to_the_mark_without_a_bid():
    chain, q, batch = tickers()
    # Take the bid away from every third option, as a far wing nobody bids on.
    dropped = np.arange(len(chain)) % 3 == 0
    batch = dataclasses.replace(batch, bid_coin=np.where(dropped, np.nan, batch.bid_coin))
    book = OptionBook()
    book.update(batch)
    snap = book.snapshot("BTC", NOW)
    no_bid = ~np.isfinite(snap.bid_vol)
    assert no_bid.any() and not no_bid.all()
    truth = implied_vol_surface(np.log(snap.strike_usd / snap.forward_usd), snap.expiry_years, SURFACE)
    # The mark is priced at the surface vol exactly: its implied vol is the surface's.
    np.testing.assert_allclose(snap.mid_vol[no_bid], truth[no_bid], atol=1e-8)


def test_older_ticker_arriving_late_is_ignored_and_stale_tickers_are_left_out():
    chain, _, fresh = tickers()
    _, _, older = tickers(spot=SPOT * 1.1, event_ts=NOW - 60.0, chain=chain)
    book = OptionBook()
    book.update(fresh)
    book.update(older)
    snap = book.snapshot("BTC", NOW)
    assert snap.spot_usd == SPOT
    assert len(book.snapshot("BTC", NOW + 301.0, max_age_s=300.0)) == 0


def test_options_about_to_expire_are_left_out_and_assets_are_separate():
    _, _, btc = tickers()
    _, _, eth = tickers(spot=3_000.0, asset="ETH")
    book = OptionBook()
    book.update(btc)
    book.update(eth)
    assert book.assets == ["BTC", "ETH"]
    snap = book.snapshot("BTC", NOW, min_expiry_s=30 * 86_400.0)
    assert len(snap) > 0 and np.all(snap.expiry_years >= 30 / 365 - 1e-12)
    assert np.all(book.snapshot("ETH", NOW).strike_usd < 20_000.0)
    assert len(book.snapshot("SOL", NOW)) == 0


def test_empty_book_gives_an_empty_snapshot():
    snap = OptionBook().snapshot("BTC", NOW)
    assert len(snap) == 0 and snap.n_expiries == 0 and np.isnan(snap.spot_usd)


def test_a_price_no_volatility_reproduces_gives_nan_on_that_side_only():
    chain, q, batch = tickers()
    cols = batch.column_dict(exclude=())
    # An inverse call is worth at most 1 coin (the whole forward): an ask of 1.5 coin has no
    # implied volatility; the bid side is untouched.
    cols["ask_coin"] = np.where(batch.is_call, 1.5, cols["ask_coin"])
    book = OptionBook()
    book.update(OptionTickerBatch.from_columns(**cols))
    snap = book.snapshot("BTC", NOW)
    calls = snap.is_call
    assert calls.any() and (~calls).any()
    assert np.all(np.isnan(snap.ask_vol[calls]))
    assert np.all(np.isfinite(snap.ask_vol[~calls]))
    has_bid = np.isfinite(snap.bid_vol)
    assert has_bid[calls].any()


def test_a_snapshot_as_of_a_time_reads_nothing_quoted_after_it_and_expired_options_are_evicted():
    chain, _, batch = tickers()
    book = OptionBook()
    book.update(batch)
    assert len(book.snapshot("BTC", NOW - 1.0)) == 0  # every ticker is from after that time
    assert len(book.snapshot("BTC", NOW)) > 0
    first_expiry = float(np.min(chain.expiry_ts))
    n_first = int(np.sum(chain.expiry_ts == first_expiry))
    assert book.evict_expired(first_expiry - 1.0) == 0
    assert book.evict_expired(first_expiry) == n_first and len(book) == len(chain) - n_first


def test_a_premium_is_inverted_with_the_time_left_when_it_was_quoted():
    _, _, batch = tickers()
    book = OptionBook()
    book.update(batch)
    now = book.snapshot("BTC", NOW)
    later = book.snapshot("BTC", NOW + 120.0)  # the same tickers, looked at two minutes on
    np.testing.assert_array_equal(later.mid_vol, now.mid_vol)
    assert np.all(later.expiry_years < now.expiry_years)
