"""Tests of models.oracle: median aggregation and the per-asset median oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.oracle import MedianOracle, MedianOracleConfig, median_aggregate
from tests.conftest import make_quotes


def quote(source: str, ts: float, bid: float, ask: float, **kw) -> dict:
    """A quote row for source "exchange:instrument"."""
    exchange, instrument = source.split(":")
    return {"exchange": exchange, "instrument": instrument, "event_ts": ts, "bid": bid, "ask": ask, **kw}


# ---------------------------------------------------------------------------- median_aggregate


def test_median_aggregate_price_is_np_median_odd_and_even():
    mids = np.array([101.0, 99.0, 100.0, 250.0, 100.5])
    price, _ = median_aggregate(mids, np.zeros(5))
    assert price == np.median(mids) == 100.5
    mids4 = np.array([10.0, 20.0, 30.0, 1000.0])
    assert median_aggregate(mids4, np.zeros(4))[0] == np.median(mids4) == 25.0


def test_median_aggregate_confidence_is_scaled_mad_when_it_dominates():
    mids = np.array([100.0, 101.0, 103.0, 110.0])
    # median 102; |dev| = 2, 1, 1, 8 -> median 1.5; 1.4826 * 1.5 = 2.2239
    price, conf = median_aggregate(mids, np.array([0.01, 0.02, 0.01, 0.05]))
    assert price == 102.0
    assert conf == pytest.approx(2.2239, abs=1e-12)


def test_median_aggregate_confidence_is_median_half_spread_when_larger():
    mids = np.array([100.0, 100.0, 100.2])  # MAD 0 -> 0
    price, conf = median_aggregate(mids, np.array([0.5, 0.25, 1.0]))
    assert price == 100.0
    assert conf == 0.5


def test_median_aggregate_single_source():
    assert median_aggregate(np.array([42.0]), np.array([0.1])) == (42.0, 0.1)


def test_median_aggregate_empty_is_nan():
    price, conf = median_aggregate(np.array([]), np.array([]))
    assert math.isnan(price) and math.isnan(conf)


# -------------------------------------------------------------------------------- MedianOracle


def test_config_validation():
    with pytest.raises(ValueError):
        MedianOracleConfig(min_sources=0)
    with pytest.raises(ValueError):
        MedianOracleConfig(stale_after_s=0)
    with pytest.raises(ValueError):
        MedianOracleConfig(interval_s=-1)


def test_single_source_price_and_sources():
    o = MedianOracle()
    o.update(make_quotes(quote("binance:BTCUSDT", 100.0, 100.0, 102.0)))
    p = o.price("BTC", 100.5)
    assert (p.asset, p.ts, p.price_usd, p.confidence_usd) == ("BTC", 100.5, 101.0, 1.0)
    assert (p.n_sources, p.status, p.reason) == (1, "ok", "")
    assert p.sources == ("binance:BTCUSDT",)


def test_non_usd_quotes_are_ignored():
    o = MedianOracle()
    o.update(make_quotes(
        quote("binance:LRCBTC", 1.0, 0.0000063, 0.0000064, asset="LRC", quote_ccy="BTC"),
        quote("binance:RUNEEUR", 1.0, 6.2, 6.3, asset="RUNE", quote_ccy="EUR"),
        quote("binance:BLZETH", 1.0, 0.0001, 0.0002, asset="BLZ", quote_ccy="ETH"),
    ))
    assert o.assets == []
    assert o.publish(2.0) == []
    o.update(make_quotes(
        quote("binance:LRCBTC", 2.0, 0.0000063, 0.0000064, asset="LRC", quote_ccy="BTC"),
        quote("binance:NKNUSDT", 2.0, 0.3521, 0.3526, asset="NKN", quote_ccy="USDT"),
        quote("kraken:NKN/USD", 2.0, 0.3520, 0.3530, asset="NKN", quote_ccy="USD"),
        quote("coinbase:NKN-USDC", 2.0, 0.3519, 0.3529, asset="NKN", quote_ccy="USDC"),
    ))
    assert o.assets == ["NKN"]
    assert o.price("NKN", 2.0).n_sources == 3


def test_latest_quote_per_source_wins():
    o = MedianOracle()
    o.update(make_quotes(quote("binance:BTCUSDT", 10.0, 100.0, 102.0), quote("binance:BTCUSDT", 11.0, 200.0, 202.0)))
    assert o.price("BTC", 11.0).price_usd == 201.0
    o.update(make_quotes(quote("binance:BTCUSDT", 12.0, 300.0, 302.0)))
    p = o.price("BTC", 12.0)
    assert p.price_usd == 301.0 and p.n_sources == 1


def test_older_out_of_order_quote_does_not_replace_newer():
    o = MedianOracle()
    o.update(make_quotes(quote("binance:BTCUSDT", 20.0, 100.0, 102.0)))
    o.update(make_quotes(quote("binance:BTCUSDT", 19.0, 500.0, 502.0)))  # late arrival
    assert o.price("BTC", 20.0).price_usd == 101.0
    # within one batch too
    o2 = MedianOracle()
    o2.update(make_quotes(quote("binance:BTCUSDT", 20.0, 100.0, 102.0), quote("binance:BTCUSDT", 19.0, 500.0, 502.0)))
    assert o2.price("BTC", 20.0).price_usd == 101.0


def test_sources_are_distinguished_by_exchange_and_instrument():
    o = MedianOracle()
    o.update(make_quotes(
        quote("binance:BTCUSDT", 1.0, 99.0, 101.0),
        quote("binance:BTCUSDC", 1.0, 101.0, 103.0),
        quote("kraken:BTCUSDT", 1.0, 103.0, 105.0),
    ))
    p = o.price("BTC", 1.0)
    assert p.n_sources == 3
    assert p.sources == ("binance:BTCUSDC", "binance:BTCUSDT", "kraken:BTCUSDT")
    assert p.price_usd == 102.0


def test_staleness_degraded_then_halted():
    o = MedianOracle(MedianOracleConfig(min_sources=2, stale_after_s=10.0, interval_s=1.0))
    o.update(make_quotes(quote("a:BTCUSD", 100.0, 99.0, 101.0), quote("b:BTCUSD", 105.0, 101.0, 103.0)))
    ok = o.price("BTC", 106.0)
    assert (ok.status, ok.n_sources, ok.price_usd, ok.reason) == ("ok", 2, 101.0, "")
    # exactly at the limit a source is still fresh
    assert o.price("BTC", 110.0).n_sources == 2
    degraded = o.price("BTC", 112.0)  # a is 12 s old
    assert degraded.status == "degraded"
    assert degraded.n_sources == 1
    assert degraded.sources == ("b:BTCUSD",)
    assert degraded.price_usd == 102.0
    assert degraded.reason == "1 of 2 required sources"
    halted = o.price("BTC", 116.0)
    assert halted.status == "halted"
    assert halted.n_sources == 0
    assert halted.reason == "no fresh sources"
    assert math.isnan(halted.price_usd) and math.isnan(halted.confidence_usd)
    assert halted.sources == ()


def test_min_sources_gives_degraded_until_enough_sources():
    o = MedianOracle(MedianOracleConfig(min_sources=3))
    o.update(make_quotes(quote("a:BTCUSD", 1.0, 99.0, 101.0), quote("b:BTCUSD", 1.0, 99.0, 101.0)))
    p = o.price("BTC", 1.0)
    assert (p.status, p.reason, p.n_sources) == ("degraded", "2 of 3 required sources", 2)
    o.update(make_quotes(quote("c:BTCUSD", 1.0, 99.0, 101.0)))
    assert o.price("BTC", 1.0).status == "ok"


def test_unknown_asset_is_halted():
    p = MedianOracle().price("DOGE", 1.0)
    assert p.status == "halted" and p.n_sources == 0


def test_publish_throttles_per_asset_per_interval():
    o = MedianOracle(MedianOracleConfig(interval_s=1.0, stale_after_s=100.0))
    o.update(make_quotes(quote("a:BTCUSD", 10.0, 99.0, 101.0)))
    first = o.publish(10.0)
    assert [(p.asset, p.ts) for p in first] == [("BTC", 10.0)]
    assert o.publish(10.5) == []
    assert o.publish(10.999) == []
    o.update(make_quotes(quote("a:ETHUSD", 10.5, 9.0, 11.0, asset="ETH")))
    # ETH was never published: due now; BTC still throttled
    assert [p.asset for p in o.publish(10.6)] == ["ETH"]
    assert [p.asset for p in o.publish(11.0)] == ["BTC"]
    assert sorted(p.asset for p in o.publish(12.0)) == ["BTC", "ETH"]


def test_publish_keeps_publishing_halted_prices_for_a_silent_feed():
    o = MedianOracle(MedianOracleConfig(stale_after_s=5.0))
    o.update(make_quotes(quote("a:BTCUSD", 0.0, 99.0, 101.0)))
    assert o.publish(1.0)[0].status == "ok"
    later = o.publish(60.0)
    assert len(later) == 1 and later[0].status == "halted"


# -------------------------------------------------------------------------------- property


@settings(max_examples=150, deadline=None)
@given(
    honest=st.lists(st.floats(min_value=1.0, max_value=1e6), min_size=1, max_size=9),
    data=st.data(),
)
def test_property_median_resists_a_corrupted_minority(honest, data):
    # b corrupted of h + b sources is fewer than half exactly when b < h
    n_bad = data.draw(st.integers(0, len(honest) - 1), "n_bad")
    bad = data.draw(
        st.lists(
            st.one_of(
                st.floats(min_value=1e9, max_value=1e300),
                st.floats(min_value=1e-300, max_value=1e-9),
            ),
            min_size=n_bad, max_size=n_bad,
        ),
        "bad",
    )
    rows = [quote(f"honest{i}:BTCUSD", 1.0, m, m) for i, m in enumerate(honest)]
    rows += [quote(f"evil{i}:BTCUSD", 1.0, m, m) for i, m in enumerate(bad)]
    o = MedianOracle()
    o.update(make_quotes(*rows))
    p = o.price("BTC", 1.0)
    assert p.n_sources == len(honest) + len(bad)
    assert min(honest) <= p.price_usd <= max(honest)


def test_usd_quotes_decide_which_pairs_count_as_usd():
    quotes = make_quotes(
        {"instrument": "BTCUSDT", "quote_ccy": "USDT", "bid": 100.0, "ask": 101.0},
        {"instrument": "BTC-USD", "exchange": "coinbase", "quote_ccy": "USD", "bid": 110.0, "ask": 111.0},
    )
    strict = MedianOracle(MedianOracleConfig(usd_quotes=("USD",)))
    strict.update(quotes)
    price = strict.price("BTC", 1_700_000_000.0)
    assert price.sources == ("coinbase:BTC-USD",)
    assert price.price_usd == 110.5
