"""Tests of models.oracle: the median building block, the oracle's interface (kept from the
foundation's median oracle), the robust aggregation, and property tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.oracle import (
    DEFAULT_EXCLUDE,
    MedianOracle,
    MedianOracleConfig,
    RobustOracle,
    RobustOracleConfig,
    aggregate,
    arbitrage_edges_bps,
    median_aggregate,
    pyth_confidence,
    weighted_quantile,
)
from models.oracle_sources import SourceFilter
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
    o = MedianOracle(MedianOracleConfig(min_sources=1))
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
    o = MedianOracle(MedianOracleConfig(min_sources=1, stale_after_s=5.0))
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
    assert p.n_sources + len(p.rejected) == len(honest) + len(bad)
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


# =============================================================================== robust oracle


# ------------------------------------------------------------------------------------ config


def test_the_foundation_names_are_the_robust_oracle_with_the_old_keywords():
    assert MedianOracle is RobustOracle and MedianOracleConfig is RobustOracleConfig
    cfg = MedianOracleConfig(min_sources=2, stale_after_s=5.0, interval_s=0.5, usd_quotes=["USD"])
    assert (cfg.min_sources, cfg.stale_after_s, cfg.interval_s, cfg.usd_quotes) == (2, 5.0, 0.5, ("USD",))
    assert RobustOracleConfig().min_sources == 3
    assert RobustOracleConfig().exclude == DEFAULT_EXCLUDE


def test_config_coerces_lists_and_fee_mappings_and_stays_hashable():
    cfg = RobustOracleConfig(exclude=["bybit:*"], include=["*USD*"], venue_fees_bps={"binance": 7.5})
    assert cfg.exclude == ("bybit:*",) and cfg.include == ("*USD*",)
    assert cfg.venue_fees_bps == (("binance", 7.5),)
    assert (cfg.fee_for("binance"), cfg.fee_for("kraken")) == (7.5, 10.0)
    hash(cfg)


def test_config_from_a_mapping_ignores_other_keys():
    cfg = RobustOracleConfig.from_mapping({
        "min_sources": 2, "usd_quotes": ["USD", "USDC"], "exclude": ["bybit:*"],
        "venue_fees_bps": {"kraken": 16.0}, "max_confidence_bps": 150, "not_a_knob": 1,
    })
    assert (cfg.min_sources, cfg.usd_quotes, cfg.exclude) == (2, ("USD", "USDC"), ("bybit:*",))
    assert cfg.venue_fees_bps == (("kraken", 16.0),) and cfg.max_confidence_bps == 150


@pytest.mark.parametrize("kw", [
    {"mad_k": 0}, {"mad_floor_bps": -1}, {"divergence_bps": 0}, {"decimal_tolerance": 0.5},
    {"jump_z": float("nan")}, {"min_reliability": 0}, {"max_confidence_bps": -5},
    {"fee_bps": -1}, {"venue_fees_bps": (("x", -1.0),)}, {"usd_quotes": ()},
    {"reliability_halflife_s": 0}, {"vol_initial_annual": float("inf")},
])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        RobustOracleConfig(**kw)


# -------------------------------------------------------------------------------- sources


@pytest.mark.parametrize("source, counts", [
    ("binance:BTCUSDT", True),
    ("coinbase:BTC-USD", True),
    ("kraken:BTC/USD", True),
    ("deribit:BTC-PERPETUAL", False),
    ("deribit:ETH_USDC-PERPETUAL", False),
    ("deribit:BTC-27DEC24", False),
    ("deribit:BTC-7MAR25", False),
    ("deribit:BTC_USDC-27DEC24", False),
    ("deribit:BTC_USDC", True),  # a spot pair, were the adapter to emit one
    ("bybit:BTCUSDT", False),
])
def test_default_source_filter_keeps_spot_and_leaves_derivatives_out(source, counts):
    assert SourceFilter().accepts(source) is counts


def test_include_patterns_narrow_the_sources():
    f = SourceFilter(include=("coinbase:*", "kraken:*"), exclude=("kraken:XBT*",))
    assert [f.accepts(s) for s in ("coinbase:BTC-USD", "kraken:BTC/USD", "kraken:XBT/USD", "binance:BTCUSDT")] == [
        True, True, False, False]


def test_excluded_quotes_never_reach_the_oracle():
    o = RobustOracle()
    o.update(make_quotes(
        quote("bybit:BTCUSDT", 1.0, 100.0, 101.0),
        quote("deribit:BTC-PERPETUAL", 1.0, 100.0, 101.0, quote_ccy="USD"),
    ))
    assert o.assets == []
    o2 = RobustOracle(RobustOracleConfig(exclude=()))
    o2.update(make_quotes(quote("bybit:BTCUSDT", 1.0, 100.0, 101.0)))
    assert o2.assets == ["BTC"]


def test_update_keeps_each_sources_latest_quote_like_a_row_by_row_loop():
    rng = np.random.default_rng(5)
    sources = ["a:BTCUSD", "b:BTCUSD", "c:ETHUSD", "d:BTCUSD"]
    o = RobustOracle(RobustOracleConfig(min_sources=1, stale_after_s=1e9))
    expected: dict[str, tuple[float, float]] = {}
    for _ in range(20):
        rows = []
        for _ in range(int(rng.integers(1, 30))):
            s = sources[int(rng.integers(0, 4))]
            ts = float(rng.integers(0, 50))  # many ties and late arrivals
            mid = float(rng.uniform(90, 110))
            rows.append(quote(s, ts, mid - 0.5, mid + 0.5, asset=s[2:5]))
            if s not in expected or ts >= expected[s][0]:
                expected[s] = (ts, mid)
        o.update(make_quotes(*rows))
    for asset in ("BTC", "ETH"):
        names, ts, bid, ask = o._quotes.arrays(asset)
        for s, t, b, a in zip(names, ts, bid, ask):
            assert (t, 0.5 * (b + a)) == pytest.approx(expected[s])


def test_quotes_without_a_usable_mid_are_ignored():
    o = RobustOracle(RobustOracleConfig(min_sources=1))
    o.update(make_quotes(
        quote("a:BTCUSD", 1.0, float("nan"), 101.0),
        quote("b:BTCUSD", 1.0, 0.0, 0.0),
        quote("c:BTCUSD", 1.0, -5.0, 1.0),
    ))
    assert o.assets == []


# ------------------------------------------------------------------------- pure statistics


def test_weighted_quantile_and_pyth_confidence():
    v = np.array([3.0, 1.0, 2.0, 4.0])
    assert weighted_quantile(v, np.ones(4), [0.25, 0.5, 0.75, 1.0]).tolist() == [1.0, 2.0, 3.0, 4.0]
    assert weighted_quantile(v, np.array([0.0, 0.0, 0.0, 1.0]), 0.1) == 4.0
    # one source: its half-spread
    assert pyth_confidence(np.array([101.0]), np.array([1.0]), np.array([1.0]), 101.0) == 1.0
    # two sources far apart with tight books: the spread between them dominates
    conf = pyth_confidence(np.array([100.0, 104.0]), np.array([0.1, 0.1]), np.ones(2), 102.0)
    assert conf == pytest.approx(2.0)
    assert math.isnan(pyth_confidence(np.array([]), np.array([]), np.array([]), 1.0))


def test_arbitrage_edges_after_fees():
    edge = arbitrage_edges_bps(np.array([100.5, 99.0]), np.array([100.6, 100.0]), np.array([10.0, 5.0]))
    assert math.isnan(edge[0, 0]) and math.isnan(edge[1, 1])
    assert edge[0, 1] == pytest.approx(50.0 - 15.0)  # sell 0 at 100.5, buy 1 at 100.0
    assert edge[1, 0] < 0


def test_aggregate_identical_quotes_and_one_outlier_the_mad_floor():
    # identical quotes make the MAD zero: the floor (5 bps x 5) still lets a 1 bp difference in
    # and keeps a 30 bps one out
    agg = aggregate([100.0, 100.0, 100.0, 100.01], [0.01] * 4)
    assert agg.kinds == ("", "", "", "") and agg.status == "ok"
    agg = aggregate([100.0, 100.0, 100.0, 100.3], [0.01] * 4)
    assert agg.kinds == ("", "", "", "outlier") and agg.price_usd == 100.0
    assert agg.reasons[3].startswith("6.0 robust deviations (+30.0 bps)")


def test_aggregate_weights_follow_spread_and_reliability():
    mids, halves = [100.0, 100.1, 100.2], [0.01, 0.01, 0.01]
    even = aggregate(mids, halves)
    assert even.price_usd == pytest.approx(100.1)
    assert aggregate(mids, [0.01, 0.01, 0.2]).price_usd < even.price_usd  # wide book, less weight
    assert aggregate(mids, halves, [1.0, 1.0, 0.1]).price_usd < even.price_usd  # unreliable
    assert aggregate(mids, halves, [0.1, 1.0, 1.0]).price_usd > even.price_usd


def test_aggregate_falls_back_to_the_median_when_confidence_is_low():
    # no outlier (evenly spread), but a weighted mean that one unreliable venue barely counts in
    # has a confidence wider than 50 bps: the median replaces it
    agg = aggregate([100.0, 101.2, 102.4], [0.01, 0.01, 0.01], [1.0, 1.0, 0.05])
    assert agg.kinds == ("", "", "")
    assert agg.fallback and agg.price_usd == agg.median_usd == 101.2
    assert agg.weighted_usd < 100.7
    assert agg.status == "ok"
    tight = aggregate([100.0, 100.01, 100.02], [0.01] * 3)
    assert not tight.fallback and tight.price_usd == tight.weighted_usd


def test_aggregate_confidence_too_wide_is_degraded():
    agg = aggregate([100.0, 101.5, 103.0], [0.01] * 3, config=RobustOracleConfig(max_confidence_bps=100))
    assert agg.status == "degraded"
    assert agg.reason == "confidence ±147 bps wider than 100 bps"  # P25, P75 = 100.01, 102.99
    assert agg.price_usd == 101.5


def test_aggregate_without_a_majority_is_degraded_on_the_median():
    # two venues at 100, two at 110: no side is a majority
    agg = aggregate([100.0, 100.0, 110.0, 110.0], [0.01] * 4)
    assert agg.status == "degraded" and agg.reason.startswith("no majority")
    assert agg.price_usd == 105.0 and agg.used.all()


def test_aggregate_halted_without_sources():
    agg = aggregate([], [])
    assert (agg.status, agg.reason) == ("halted", "no fresh sources") and math.isnan(agg.price_usd)


def test_aggregate_clips_into_the_order_statistics():
    # 4 sources, one arbitrary but plausible with a huge weight: it cannot drag the price past
    # the second-highest quote
    mids = [100.0, 100.05, 100.1, 100.2]
    agg = aggregate(mids, [1.0, 1.0, 1.0, 0.0], config=RobustOracleConfig(mad_floor_bps=100))
    assert agg.kinds == ("", "", "", "")
    assert agg.price_usd <= 100.1


# ------------------------------------------------------------------------------ behaviour


def feed(o, ts, mids, half=0.01, names=None):
    names = names or [f"v{i}:BTCUSD" for i in range(len(mids))]
    o.update(make_quotes(*[quote(n, ts, m - half, m + half) for n, m in zip(names, mids)]))


def test_price_is_idempotent_at_the_same_time_and_alerts_are_not_repeated():
    o = RobustOracle()
    for t in range(5):
        feed(o, float(t), [100.0, 100.01, 100.02, 100.0])
        o.price("BTC", float(t))
    feed(o, 5.0, [100.0, 100.01, 100.02, 130.0])
    first = o.price("BTC", 5.0)
    alerts = o.take_alerts()
    assert [a.kind for a in alerts] == ["oracle_jump"]
    again = o.price("BTC", 5.0)
    assert again == first
    assert o.take_alerts() == []
    assert o.reliability()["v3:BTCUSD"]["n_evaluations"] == 6


def test_take_alerts_drains():
    o = RobustOracle()
    feed(o, 0.0, [100.0, 100.0])
    o.price("BTC", 0.0)
    assert [a.kind for a in o.take_alerts()] == ["oracle_status"]
    assert o.take_alerts() == []


def test_reliability_view_for_dashboards():
    o = RobustOracle()
    feed(o, 0.0, [100.0, 100.0, 100.0, 1000.0])
    o.price("BTC", 0.0)
    view = o.reliability()
    assert set(view) == {"v0:BTCUSD", "v1:BTCUSD", "v2:BTCUSD", "v3:BTCUSD"}
    bad, good = view["v3:BTCUSD"], view["v0:BTCUSD"]
    assert set(bad) >= {"asset", "state", "reason", "reliability", "uptime", "deviation_bps",
                        "reject_rate", "last_quote_ts", "n_quotes", "n_evaluations", "n_used",
                        "n_rejected", "n_stale"}
    assert (bad["state"], bad["n_rejected"], bad["reliability"]) == ("rejected", 1, 0.05)
    assert (good["state"], good["n_used"], good["reliability"]) == ("used", 1, 1.0)
    assert bad["reason"].startswith("off by a power of ten")


def test_rejected_sources_are_listed_with_their_reason():
    o = RobustOracle(RobustOracleConfig(stale_after_s=5.0))
    feed(o, 0.0, [100.0], names=["old:BTCUSD"])
    feed(o, 10.0, [100.0, 100.0, 100.0, 100.0 * 1000], names=["a:BTCUSD", "b:BTCUSD", "c:BTCUSD", "d:BTCUSD"])
    p = o.price("BTC", 10.0)
    assert p.sources == ("a:BTCUSD", "b:BTCUSD", "c:BTCUSD")
    assert p.rejected == (
        "d:BTCUSD: off by a power of ten: ×10^+3 the median (1000×)",
        "old:BTCUSD: stale (10.0 s old)",
    )


# ------------------------------------------------------------------------------ properties

honest_base = st.floats(min_value=1e-4, max_value=1e6)
# honest venues within a small band (±10 bps of a common price)
honest_offsets = st.lists(st.floats(min_value=-0.001, max_value=0.001), min_size=3, max_size=8)
positive = st.floats(min_value=1e-300, max_value=1e300)


@settings(max_examples=300, deadline=None)
@given(
    base=honest_base, offsets=honest_offsets, bad=positive,
    halves=st.lists(st.floats(min_value=0.0, max_value=0.002), min_size=9, max_size=9),
    bad_half=st.floats(min_value=0.0, max_value=1e3),
    reliability=st.lists(st.floats(min_value=0.05, max_value=1.0), min_size=9, max_size=9),
)
def test_property_one_arbitrary_source_cannot_leave_the_honest_range(
    base, offsets, bad, halves, bad_half, reliability
):
    honest = [base * (1 + e) for e in offsets]
    mids = honest + [bad]
    half = [m * h for m, h in zip(honest, halves)] + [min(bad * bad_half, bad * 0.99)]
    rel = reliability[: len(mids)]
    agg = aggregate(mids, half, rel)
    assert min(honest) <= agg.price_usd <= max(honest)
    if abs(math.log(bad / base)) > 0.05:  # plainly off: it is rejected and the price is fit
        assert agg.kinds[-1] != "" and agg.used[:-1].all()
        assert agg.status == "ok"
    # and through the oracle, with names (its mids are (bid + ask) / 2, rounded)
    o = RobustOracle()
    rows = [quote(f"h{i}:BTCUSD", 1.0, m - h, m + h) for i, (m, h) in enumerate(zip(mids, half))]
    o.update(make_quotes(*rows))
    p = o.price("BTC", 1.0)
    seen = [0.5 * ((m - h) + (m + h)) for m, h in zip(honest, half)]
    assert min(seen) <= p.price_usd <= max(seen)


@settings(max_examples=150, deadline=None)
@given(
    base=honest_base, offsets=honest_offsets, bad=positive, data=st.data(),
)
def test_property_permuting_sources_changes_nothing(base, offsets, bad, data):
    mids = [base * (1 + e) for e in offsets] + [bad]
    names = [f"s{i}:BTCUSD" for i in range(len(mids))]
    perm = data.draw(st.permutations(range(len(mids))), "perm")
    # the same (name, quote) rows in another order, over two evaluations (so history counts)
    moved = [m * 1.001 for m in mids]

    def run(order):
        o = RobustOracle()
        for t, ms in ((1.0, mids), (2.0, moved)):
            o.update(make_quotes(*[quote(names[i], t, ms[i] * 0.9999, ms[i] * 1.0001) for i in order]))
            p = o.price("BTC", t)
        return p, o.take_alerts()

    assert run(range(len(mids))) == run(perm)
    # values moved between names: the same price (weights are equal on a fresh oracle)
    agg1 = aggregate(mids, [m * 1e-4 for m in mids])
    agg2 = aggregate([mids[i] for i in perm], [mids[i] * 1e-4 for i in perm])
    assert (agg1.price_usd, agg1.confidence_usd, agg1.status) == (agg2.price_usd, agg2.confidence_usd, agg2.status)


@settings(max_examples=150, deadline=None)
@given(
    base=honest_base, offsets=honest_offsets,
    factor=st.one_of(st.just(0.92), st.floats(min_value=0.5, max_value=2.0)),
)
def test_property_a_shared_move_is_followed(base, offsets, factor):
    o = RobustOracle()
    names = [f"s{i}:BTCUSD" for i in range(len(offsets))]
    mids = [base * (1 + e) for e in offsets]
    for t in range(5):
        feed(o, float(t), mids, half=base * 1e-4, names=names)
        before = o.price("BTC", float(t))
    assert before.status == "ok"
    o.take_alerts()
    moved = [m * factor for m in mids]
    feed(o, 5.0, moved, half=base * factor * 1e-4, names=names)
    after = o.price("BTC", 5.0)
    assert (after.status, after.n_sources, after.rejected) == ("ok", len(names), ())
    assert min(moved) <= after.price_usd <= max(moved)
    assert after.price_usd == pytest.approx(before.price_usd * factor, rel=0.011)
    kinds = [a.kind for a in o.take_alerts()]
    assert set(kinds) <= {"oracle_consensus_jump"}
