"""``FaultPlan``: the spec grammar, the programmatic API, and the per-venue draws."""

from __future__ import annotations

import pytest

from dataflows.sim.faults import FaultPlan, FaultSpecError, RateFault, TimedFault, VenueFaults

EXAMPLE = ("drop=binance@5s,stall=kraken@3s:2s,malformed=0.01,skip_seq=coinbase@0.001,"
           "repeat_trades=0.01,out_of_order=0.01,stale=bybit@10s,deviate=kraken:5%")


def test_the_example_spec_parses():
    plan = FaultPlan.parse(EXAMPLE)
    assert plan.timed == (
        TimedFault("drop", "binance", 5.0),
        TimedFault("stall", "kraken", 3.0, 2.0),
        TimedFault("stale", "bybit", 10.0),
        TimedFault("deviate", "kraken", 0.0, pct=0.05),
    )
    assert plan.rates == (
        RateFault("malformed", 0.01),
        RateFault("skip_seq", 0.001, "coinbase"),
        RateFault("repeat_trades", 0.01),
        RateFault("out_of_order", 0.01),
    )
    assert plan.rate_for("malformed", "deribit") == 0.01
    assert plan.rate_for("skip_seq", "coinbase") == 0.001
    assert plan.rate_for("skip_seq", "binance") == 0.0
    assert [t.kind for t in plan.timed_for("kraken")] == ["deviate", "stall"]
    assert FaultPlan.parse(plan.to_spec()) == plan  # round trip
    assert bool(plan) and not FaultPlan() and not FaultPlan.parse("")


def test_units_modes_and_overrides():
    plan = FaultPlan.parse(" drop=deribit@1500ms:close , stale=coinbase@1m:30s,"
                           "deviate=bybit:-2.5%@10s:5s, malformed=1%, malformed=kraken:0.2,"
                           "out_of_order=all@0.5")
    drop, stale, deviate = plan.timed
    assert (drop.at_s, drop.mode) == (1.5, "close")
    assert (stale.at_s, stale.duration_s, stale.end_s) == (60.0, 30.0, 90.0)
    assert (deviate.pct, deviate.at_s, deviate.duration_s) == (pytest.approx(-0.025), 10.0, 5.0)
    assert plan.rate_for("malformed", "kraken") == 0.2  # the venue's own clause wins
    assert plan.rate_for("malformed", "binance") == 0.01
    assert plan.rate_for("out_of_order", "bybit") == 0.5


def test_programmatic_construction():
    plan = (FaultPlan.drop("binance", 5.0) + FaultPlan.stall("kraken", 3.0, 2.0)
            + FaultPlan.rate("malformed", 0.01) + FaultPlan.deviate("kraken", 0.05))
    assert plan == FaultPlan.parse("drop=binance@5s,stall=kraken@3s:2s,deviate=kraken:5%,"
                                   "malformed=0.01")
    assert plan.with_rate("malformed", 0.5).rate_for("malformed", "bybit") == 0.5


@pytest.mark.parametrize("spec, words", [
    ("explode=binance@1s", "unknown fault kind"),
    ("drop=binance", "needs a time"),
    ("drop=ftx@1s", "unknown venue"),
    ("stall=kraken@3s", "needs a duration"),
    ("malformed=2", "[0, 1]"),
    ("malformed=lots", "fraction"),
    ("drop=binance@soon", "time"),
    ("drop=binance@1s:gently", "drop mode"),
    ("deviate=kraken", "percentage"),
    ("malformed", "KIND=VALUE"),
    ("stale=bybit@-1s", ">= 0"),
])
def test_mistakes_are_explained(spec, words):
    with pytest.raises(FaultSpecError) as info:
        FaultPlan.parse(spec)
    assert words in str(info.value) and spec.split(",")[0] in str(info.value)
    assert isinstance(info.value, ValueError)


def test_venue_draws_are_seeded_per_venue_and_kind():
    plan = FaultPlan.parse("malformed=0.3,skip_seq=0.3")
    a, b = VenueFaults("kraken", 7, plan), VenueFaults("kraken", 7, plan)
    draws = [a.draw("malformed") for _ in range(200)]
    assert draws == [b.draw("malformed") for _ in range(200)]
    assert 30 < sum(draws) < 90
    # Drawing another kind does not shift this kind's sequence.
    c = VenueFaults("kraken", 7, plan)
    mixed = []
    for _ in range(200):
        c.draw("skip_seq")
        mixed.append(c.draw("malformed"))
    assert mixed == draws
    assert draws != [VenueFaults("bybit", 7, plan).draw("malformed") for _ in range(200)]
    quiet = VenueFaults("kraken", 7, FaultPlan())
    assert not any(quiet.draw(k) for k in ("malformed", "skip_seq", "repeat_trades",
                                           "out_of_order") for _ in range(100))
    with pytest.raises(FaultSpecError):
        quiet.set_rate("malformed", 3.0)
