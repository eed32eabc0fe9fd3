"""OptionQuotesView, the streamz way: a sink on a stream of option ticker batches."""

from __future__ import annotations

import numpy as np
import pytest
from streamz import Stream

from dataflows.views.options import OptionQuotesView
from models.deribit import implied_vol_from_coin
from models.option_book import SECONDS_PER_YEAR
from models.option_chain import BTC_SURFACE, build_chain, deribit_expiries, quote_chain
from models.records import OptionTickerBatch

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
SPOT = 40_000.0


def chain_batch(now_s: float = T0, spot_usd: float = SPOT, asset: str = "BTC",
                expiry_index=(1, 4, 6), strikes_per_expiry: int = 10) -> OptionTickerBatch:
    """A small slice of the simulator's chain quoted at ``now_s``, as the Deribit adapter emits it."""
    expiries = [deribit_expiries(now_s)[i] for i in expiry_index]
    spec = build_chain(asset, spot_usd, now_s, BTC_SURFACE, 0.0,
                       strikes_per_expiry=strikes_per_expiry, expiries=expiries)
    q = quote_chain(spec, spot_usd, now_s, BTC_SURFACE, 0.0)
    n = len(spec)
    return OptionTickerBatch.from_columns(
        exchange=["deribit"] * n, instrument=list(spec.names), asset=[asset] * n,
        event_ts=[now_s] * n, receive_ts=[now_s] * n, expiry_utc=spec.expiry_ts,
        strike_usd=spec.strike, is_call=spec.is_call,
        bid_coin=np.where(q.bid_coin <= 0.0, np.nan, q.bid_coin), bid_size=np.ones(n),
        ask_coin=q.ask_coin, ask_size=np.ones(n), mark_coin=q.mark_coin, mark_iv=q.mark_iv,
        bid_iv=q.bid_iv, ask_iv=q.ask_iv, underlying_usd=q.forward, index_usd=np.full(n, spot_usd),
        open_interest=np.ones(n), delta=q.delta, gamma=q.gamma, vega=q.vega, theta=q.theta,
        rho=q.rho, raw=[""] * n,
    )


def test_snapshot_holds_the_out_of_the_money_chain_with_bid_and_ask_vols():
    source = Stream()
    view = OptionQuotesView()
    source.sink(view.on_tickers)
    assert view.snapshot("BTC") is None and view.assets == []

    batch = chain_batch()
    source.emit(batch)
    snap = view.snapshot("BTC")
    assert view.assets == ["BTC"] and view.newest_ts("BTC") == T0
    assert snap.ts == T0 and snap.n_expiries == 3
    # Out of the money only: calls at or above the forward, puts below.
    assert np.all(np.where(snap.is_call, snap.strike_usd >= snap.forward_usd,
                           snap.strike_usd < snap.forward_usd))
    quoted = np.isfinite(snap.bid_vol)
    assert quoted.sum() >= len(snap) // 2
    assert np.all(snap.bid_vol[quoted] < snap.ask_vol[quoted])
    # The vols are the quoted coin prices inverted (Deribit: on the forward, rate 0).
    names = list(batch.instrument)
    row = [names.index(name) for name in snap.instrument]
    expected_ask = implied_vol_from_coin(batch.ask_coin[row], batch.underlying_usd[row],
                                         batch.strike_usd[row],
                                         (batch.expiry_utc[row] - T0) / SECONDS_PER_YEAR,
                                         batch.is_call[row])
    np.testing.assert_allclose(snap.ask_vol, expected_ask, rtol=1e-9)


def test_snapshot_is_as_of_the_newest_ticker_and_recomputed_only_after_new_tickers():
    source = Stream()
    view = OptionQuotesView()
    source.sink(view.on_tickers)
    source.emit(chain_batch(T0))
    first = view.snapshot("BTC")
    assert view.snapshot("BTC") is first  # one computation for every session asking
    source.emit(chain_batch(T0 + 30.0, spot_usd=SPOT * 1.01))
    later = view.snapshot("BTC")
    assert later is not first and later.ts == T0 + 30.0
    assert later.spot_usd == pytest.approx(SPOT * 1.01)


def test_assets_are_kept_apart_and_stale_or_expiring_options_left_out():
    source = Stream()
    view = OptionQuotesView(max_age_s=60.0, min_expiry_s=3 * 86_400.0)
    source.sink(view.on_tickers)
    source.emit(chain_batch(T0, asset="BTC", expiry_index=(1, 4)))
    source.emit(chain_batch(T0 + 120.0, spot_usd=2_000.0, asset="ETH", expiry_index=(1, 4)))
    assert view.assets == ["BTC", "ETH"]
    eth = view.snapshot("ETH")
    assert eth.spot_usd == 2_000.0
    # the 1.4-day expiry is within min_expiry_s: only the 9.4-day one is left
    assert eth.n_expiries == 1
    assert np.all(eth.expiry_utc - eth.ts >= 3 * 86_400.0)
    # BTC's tickers are as old as its own newest one: fresh for BTC's snapshot
    assert len(view.snapshot("BTC")) > 0
    # ...until a newer BTC ticker makes the rest stale (older than max_age_s)
    late = chain_batch(T0 + 600.0, asset="BTC", expiry_index=(4,), strikes_per_expiry=4)
    source.emit(late)
    fresh = set(view.snapshot("BTC").instrument)
    assert fresh and fresh <= set(late.instrument)


def test_an_empty_batch_changes_nothing():
    view = OptionQuotesView()
    view.on_tickers(OptionTickerBatch.empty())
    assert view.version == 0 and view.assets == [] and view.newest_ts("BTC") is None
