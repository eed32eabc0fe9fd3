"""Scenario tests of the robust oracle: the model fed with quote sequences, one batch per second.

Four spot venues quote one BTC market (each with its own small basis and spread); a Bybit linear
perp and a Deribit perpetual quote it too, with a basis, and must stay out of the price. Each
scenario asserts the price, the status, the reason, what was rejected and the alerts raised.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from models.oracle import MedianOracle, RobustOracle, RobustOracleConfig
from tests.conftest import make_quotes

T0 = 1_700_000_000.0
WARMUP = 30  # seconds of normal quoting before each scenario's event

# source -> (quote currency, basis in bps, half-spread in bps)
VENUES = {
    "binance:BTCUSDT": ("USDT", 1.0, 0.5),
    "coinbase:BTC-USD": ("USD", -1.5, 1.0),
    "kraken:BTC/USD": ("USD", 2.0, 1.5),
    "gemini:BTCUSD": ("USD", -0.5, 2.0),
}
# derivatives: excluded by the default source filter whatever they quote
DERIVATIVES = {
    "bybit:BTCUSDT": ("USDT", 30.0, 0.5),
    "deribit:BTC-PERPETUAL": ("USD", 35.0, 1.0),
    "deribit:BTC-27DEC24": ("USD", 120.0, 2.0),
}


def market_path(n: int, seed: int = 11, spot: float = 97_000.0) -> np.ndarray:
    """A calm market: 55 % annual volatility, one price per second."""
    rng = np.random.default_rng(seed)
    sigma_1s = 0.55 / math.sqrt(365 * 24 * 3600)
    return spot * np.exp(np.cumsum(rng.normal(0.0, sigma_1s, n)))


def batch(t: float, true_mid: float, *, skip=(), override=None, derivatives: bool = True):
    """One second of quotes: every venue (and derivative) not in ``skip``; ``override`` maps a
    source to a function of its honest mid giving the mid it quotes instead."""
    override = override or {}
    rows = []
    table = {**VENUES, **(DERIVATIVES if derivatives else {})}
    for source, (ccy, basis_bps, half_bps) in table.items():
        if source in skip:
            continue
        mid = true_mid * (1 + basis_bps * 1e-4)
        if source in override:
            mid = override[source](mid)
        exchange, instrument = source.split(":")
        half = mid * half_bps * 1e-4
        rows.append({"exchange": exchange, "instrument": instrument, "quote_ccy": ccy,
                     "event_ts": t, "bid": mid - half, "ask": mid + half})
    return make_quotes(*rows)


class Run:
    """An oracle fed second by second; ``step`` returns the OraclePrice published at that second
    and the alerts raised by that step."""

    def __init__(self, config: RobustOracleConfig | None = None, seconds: int = 120):
        self.oracle = RobustOracle(config or RobustOracleConfig())
        self.path = market_path(seconds)
        self.t = 0

    def step(self, **kw):
        now = T0 + self.t
        true_mid = kw.pop("true_mid", self.path[self.t])
        quiet = kw.pop("quiet", False)
        if not quiet:
            self.oracle.update(batch(now, true_mid, **kw))
        published = self.oracle.publish(now)
        self.t += 1
        assert [p.asset for p in published] == ["BTC"]
        return published[0], self.oracle.take_alerts()

    def warm_up(self, seconds: int = WARMUP):
        for _ in range(seconds):
            p, alerts = self.step()
            assert p.status == "ok", p
            assert alerts == [], alerts
        return p

    def honest_range(self, t: int | None = None, skip=()) -> tuple[float, float]:
        true_mid = self.path[self.t - 1 if t is None else t]
        mids = [true_mid * (1 + b * 1e-4) for s, (_, b, _) in VENUES.items() if s not in skip]
        return min(mids), max(mids)


def kinds(alerts):
    return [(a.kind, a.severity, a.subject) for a in alerts]


def rejected_sources(p):
    return {r.split(": ", 1)[0]: r.split(": ", 1)[1] for r in p.rejected}


def test_normal_market_uses_the_four_spot_venues_and_leaves_derivatives_out():
    run = Run()
    p = run.warm_up()
    assert p.sources == tuple(sorted(VENUES))
    assert (p.n_sources, p.status, p.reason, p.rejected) == (4, "ok", "", ())
    lo, hi = run.honest_range()
    assert lo <= p.price_usd <= hi
    # the derivatives (30 to 120 bps of basis) do not pull the price
    assert p.price_usd == pytest.approx(run.path[run.t - 1], rel=3e-4)
    assert 0 < p.confidence_usd < p.price_usd * 5e-4
    assert set(run.oracle.reliability()) == set(VENUES)
    assert all(v.status == "used" for v in run.oracle.cross_venue("BTC"))
    assert run.oracle.arbitrage("BTC") == []


def test_one_venue_up_20_percent_is_rejected_and_alerted_once():
    run = Run()
    run.warm_up()
    up = {"binance:BTCUSDT": lambda m: m * 1.20}
    p, alerts = run.step(override=up)
    lo, hi = run.honest_range(skip=("binance:BTCUSDT",))
    assert lo <= p.price_usd <= hi
    assert (p.status, p.reason, p.n_sources) == ("ok", "", 3)
    assert "binance:BTCUSDT" not in p.sources
    why = rejected_sources(p)["binance:BTCUSDT"]
    assert re.match(r"jump of \+20\.0\d% in 1\.0 s not shared by the other venues \(consensus "
                    r"[+-]0\.0\d%, \d+ sigma\)$", why), why
    assert kinds(alerts) == [("oracle_jump", "warning", "binance:BTCUSDT")]
    # it stays there: still out (now a divergence), no new alert
    for _ in range(10):
        p, alerts = run.step(override=up)
        assert (p.status, p.n_sources) == ("ok", 3)
        assert rejected_sources(p)["binance:BTCUSDT"].startswith("+20.00% from the median of 4")
        assert alerts == []
    stats = run.oracle.reliability()["binance:BTCUSDT"]
    assert stats["state"] == "rejected" and stats["n_rejected"] == 11
    assert stats["reliability"] < run.oracle.reliability()["kraken:BTC/USD"]["reliability"]
    venue = {v.source: v for v in run.oracle.cross_venue("BTC")}["binance:BTCUSDT"]
    assert venue.deviation_bps == pytest.approx(1e4 * math.log(1.2), abs=5.0)
    assert (venue.status, venue.weight) == ("rejected", 0.0)
    # the venue is fixed: readmitted automatically
    p, alerts = run.step()
    assert (p.status, p.n_sources, p.rejected) == ("ok", 4, ())
    assert kinds(alerts) == [("oracle_source_readmitted", "info", "binance:BTCUSDT")]


def test_a_decimal_bug_on_one_venue_is_rejected_as_critical():
    run = Run()
    run.warm_up()
    before = run.oracle.price("BTC", T0 + run.t - 1).price_usd
    p, alerts = run.step(override={"kraken:BTC/USD": lambda m: m * 10})
    lo, hi = run.honest_range(skip=("kraken:BTC/USD",))
    assert lo <= p.price_usd <= hi
    assert p.price_usd == pytest.approx(before, rel=5e-4)
    assert (p.status, p.reason, p.n_sources) == ("ok", "", 3)
    assert rejected_sources(p)["kraken:BTC/USD"].startswith("off by a power of ten: ×10^+1")
    assert kinds(alerts) == [("oracle_decimal", "critical", "kraken:BTC/USD")]
    # and ÷100 on another venue: both out, two of four left
    p, alerts = run.step(override={"kraken:BTC/USD": lambda m: m * 10,
                                   "gemini:BTCUSD": lambda m: m / 100})
    assert rejected_sources(p)["gemini:BTCUSD"].startswith("off by a power of ten: ×10^-2")
    assert (p.status, p.reason, p.n_sources) == ("degraded", "2 of 3 required sources", 2)
    assert kinds(alerts) == [
        ("oracle_decimal", "critical", "gemini:BTCUSD"),
        ("oracle_status", "warning", "BTC"),
    ]


def test_a_decimal_bug_is_caught_against_the_last_ok_price_with_only_two_sources():
    run = Run(RobustOracleConfig(min_sources=2))
    skip = ("coinbase:BTC-USD", "gemini:BTCUSD")
    for _ in range(5):
        p, alerts = run.step(skip=skip)
        assert (p.status, p.n_sources, alerts) == ("ok", 2, [])
    p, alerts = run.step(skip=skip, override={"kraken:BTC/USD": lambda m: m / 10})
    assert p.sources == ("binance:BTCUSDT",)
    assert rejected_sources(p)["kraken:BTC/USD"].startswith(
        "off by a power of ten: ×10^-1 the last ok price")
    assert (p.status, p.reason) == ("degraded", "1 of 2 required sources")
    assert kinds(alerts) == [("oracle_decimal", "critical", "kraken:BTC/USD"),
                             ("oracle_status", "warning", "BTC")]
    lo, hi = run.honest_range(skip=skip)
    assert lo <= p.price_usd <= hi


def test_one_venue_stale_fails_over_and_recovers():
    run = Run()
    run.warm_up()
    gone = ("coinbase:BTC-USD",)
    for k in range(10):  # its last quote is still fresh for 10 s
        p, alerts = run.step(skip=gone)
        assert (p.status, p.n_sources, alerts) == ("ok", 4, [])
    p, alerts = run.step(skip=gone)  # 11 s old now
    assert (p.status, p.reason, p.n_sources) == ("ok", "", 3)
    assert rejected_sources(p) == {"coinbase:BTC-USD": "stale (11.0 s old)"}
    lo, hi = run.honest_range(skip=gone)
    assert lo <= p.price_usd <= hi
    assert kinds(alerts) == [("oracle_source_stale", "warning", "coinbase:BTC-USD")]
    for _ in range(20):
        p, alerts = run.step(skip=gone)
        assert (p.status, p.n_sources, alerts) == ("ok", 3, [])
    rel = run.oracle.reliability()["coinbase:BTC-USD"]
    assert (rel["state"], rel["n_stale"]) == ("stale", 1)
    assert rel["uptime"] < 1.0
    p, alerts = run.step()
    assert (p.status, p.n_sources, p.rejected) == ("ok", 4, ())
    assert kinds(alerts) == [("oracle_source_recovered", "info", "coinbase:BTC-USD")]
    # its weight comes back gradually: below a source that never dropped
    venues = {v.source: v for v in run.oracle.cross_venue("BTC")}
    assert venues["coinbase:BTC-USD"].reliability < venues["gemini:BTCUSD"].reliability


def test_two_of_four_venues_stale_is_degraded():
    run = Run()
    run.warm_up()
    gone = ("coinbase:BTC-USD", "gemini:BTCUSD")
    for _ in range(10):
        p, _ = run.step(skip=gone)
    p, alerts = run.step(skip=gone)
    assert (p.status, p.reason, p.n_sources) == ("degraded", "2 of 3 required sources", 2)
    assert p.sources == ("binance:BTCUSDT", "kraken:BTC/USD")
    assert set(rejected_sources(p)) == set(gone)
    lo, hi = run.honest_range(skip=gone)
    assert lo <= p.price_usd <= hi
    assert kinds(alerts) == [
        ("oracle_source_stale", "warning", "coinbase:BTC-USD"),
        ("oracle_source_stale", "warning", "gemini:BTCUSD"),
        ("oracle_status", "warning", "BTC"),
    ]
    assert alerts[-1].message == "BTC: oracle degraded: 2 of 3 required sources"
    p, alerts = run.step()
    assert (p.status, p.n_sources) == ("ok", 4)
    assert ("oracle_status", "info", "BTC") in kinds(alerts)


def test_a_genuine_crash_on_all_venues_is_followed():
    run = Run()
    run.warm_up()
    before = run.oracle.price("BTC", T0 + run.t - 1).price_usd
    vol_before = run.oracle.volatility("BTC")
    crash = run.path[run.t] * 0.92
    p, alerts = run.step(true_mid=crash)
    assert (p.status, p.reason, p.n_sources, p.rejected) == ("ok", "", 4, ())
    assert p.price_usd == pytest.approx(before * 0.92, rel=5e-4)
    assert crash * (1 - 3e-4) <= p.price_usd <= crash * (1 + 3e-4)
    assert kinds(alerts) == [("oracle_consensus_jump", "info", "BTC")]
    assert re.match(r"BTC: consensus moved -(7\.9\d|8\.0\d)% in 1\.0 s \(\d+ sigma\), shared by 4 "
                    r"venues: followed$", alerts[0].message), alerts[0].message
    assert run.oracle.volatility("BTC") > 3 * vol_before
    # and it stays down, quietly
    p, alerts = run.step(true_mid=crash)
    assert (p.status, p.n_sources, alerts) == ("ok", 4, [])


def test_a_crash_led_by_one_venue_is_held_back_one_second_then_followed():
    run = Run()
    run.warm_up()
    before = run.oracle.price("BTC", T0 + run.t - 1).price_usd
    lead = {"binance:BTCUSDT": lambda m: m * 0.92}
    p, alerts = run.step(override=lead)
    assert (p.status, p.n_sources) == ("ok", 3)
    assert p.price_usd == pytest.approx(before, rel=5e-4)
    assert kinds(alerts) == [("oracle_jump", "warning", "binance:BTCUSDT")]
    crash = run.path[run.t] * 0.92
    p, alerts = run.step(true_mid=crash)
    assert (p.status, p.n_sources, p.rejected) == ("ok", 4, ())
    assert p.price_usd == pytest.approx(crash, rel=5e-4)
    assert kinds(alerts) == [
        ("oracle_source_readmitted", "info", "binance:BTCUSDT"),
        ("oracle_consensus_jump", "info", "BTC"),
    ]


def test_all_venues_down_halts_then_recovers():
    run = Run()
    run.warm_up()
    for _ in range(10):
        p, alerts = run.step(quiet=True)
        assert (p.status, alerts) == ("ok", [])
    p, alerts = run.step(quiet=True)
    assert (p.status, p.reason, p.n_sources, p.sources) == ("halted", "no fresh sources", 0, ())
    assert math.isnan(p.price_usd) and math.isnan(p.confidence_usd)
    assert sorted(rejected_sources(p)) == sorted(VENUES)
    assert kinds(alerts) == [
        *(("oracle_source_stale", "warning", s) for s in sorted(VENUES)),
        ("oracle_status", "critical", "BTC"),
    ]
    assert alerts[-1].message == "BTC: oracle halted: no fresh sources"
    p, alerts = run.step()
    assert (p.status, p.n_sources) == ("ok", 4)
    assert kinds(alerts) == [
        *(("oracle_source_recovered", "info", s) for s in sorted(VENUES)),
        ("oracle_status", "info", "BTC"),
    ]


def test_a_venue_out_of_line_by_more_than_fees_is_an_arbitrage_alert():
    run = Run()
    run.warm_up()
    rich = {"gemini:BTCUSD": lambda m: m * 1.004}  # 40 bps rich: its bid is above the others' asks
    p, alerts = run.step(override=rich)
    assert (p.status, p.n_sources) == ("ok", 3)
    assert re.match(r"\d+\.\d robust deviations \(\+3\d\.\d bps\) from the median$",
                    rejected_sources(p)["gemini:BTCUSD"])
    arbs = run.oracle.arbitrage("BTC")
    assert {a.sell_source for a in arbs} == {"gemini:BTCUSD"}
    # gemini's bid is ~37 bps over the mid; the others' asks are within 4 bps of it
    assert {a.buy_source for a in arbs} == {"binance:BTCUSDT", "coinbase:BTC-USD", "kraken:BTC/USD"}
    for a in arbs:
        assert a.fees_bps == 20.0
        assert a.net_bps == pytest.approx(a.gross_bps - 20.0)
        assert a.net_bps > 10.0
    assert kinds(alerts) == [
        ("oracle_outlier", "info", "gemini:BTCUSD"),
        ("oracle_arbitrage", "info", "binance:BTCUSDT>gemini:BTCUSD"),
        ("oracle_arbitrage", "info", "coinbase:BTC-USD>gemini:BTCUSD"),
        ("oracle_arbitrage", "info", "kraken:BTC/USD>gemini:BTCUSD"),
    ]
    assert alerts[1].message.startswith("BTC: buy binance:BTCUSDT at ")
    assert "bps gross" in alerts[1].message and "after 20.0 bps fees" in alerts[1].message
    # the opportunity persists: no repeated alerts
    p, alerts = run.step(override=rich)
    assert alerts == []
    # higher fees on gemini close it
    run2 = Run(RobustOracleConfig(venue_fees_bps=(("gemini", 40.0),)))
    run2.warm_up()
    run2.step(override=rich)
    assert run2.oracle.arbitrage("BTC") == []


def test_cross_venue_comparison_in_bps():
    run = Run()
    run.warm_up()
    venues = {v.source: v for v in run.oracle.cross_venue("BTC")}
    assert set(venues) == set(VENUES)
    for source, (_, basis_bps, half_bps) in VENUES.items():
        v = venues[source]
        assert v.spread_bps == pytest.approx(2 * half_bps, rel=1e-6)
        assert v.status == "used" and v.reason == ""
        assert v.ask_usd > v.bid_usd
    devs = np.array([venues[s].deviation_bps for s in VENUES])
    bases = np.array([b for _, b, _ in VENUES.values()])
    # deviations from the consensus are the bases up to a common offset
    assert np.allclose(devs - devs.mean(), bases - bases.mean(), atol=0.05)
    assert sum(v.weight for v in venues.values()) == pytest.approx(1.0)
    # tighter books weigh more
    assert venues["binance:BTCUSDT"].weight > venues["gemini:BTCUSD"].weight


def test_median_oracle_is_the_robust_oracle():
    assert MedianOracle is RobustOracle
