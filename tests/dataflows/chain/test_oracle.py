"""Oracle.vy on the embedded EVM: every revert path, the breaker, the pause, events, reads."""

from __future__ import annotations

from dataflows.chain import to_micro

from .conftest import (
    BTC,
    BTC_MAX,
    BTC_MIN,
    ETH,
    MAX_AGE,
    MAX_DEVIATION_BPS,
    MAX_FUTURE,
    reverts,
)


def test_deploy_state(chain, oracle, owner, reporter):
    f = oracle.functions
    assert f.decimals().call() == 6
    assert f.is_owner(owner.address).call()
    assert f.owner_count().call() == 1
    assert f.is_reporter(reporter.address).call()
    assert not f.paused().call()
    assert (f.max_age().call(), f.max_future().call(), f.max_deviation_bps().call()) == (
        MAX_AGE, MAX_FUTURE, MAX_DEVIATION_BPS)
    assert tuple(f.bounds(BTC).call()) == (BTC_MIN, BTC_MAX)
    assert not f.healthy(BTC).call()


def test_submit_stores_round_and_emits(chain, oracle, submit, reporter):
    ts = chain.now() - 10
    receipt = submit(65_432.123456, ts=ts, confidence=0.93, n=4)
    (ev,) = chain.events(oracle, "PriceUpdated", receipt)
    assert ev["asset"] == BTC
    assert ev["round_id"] == 1
    assert ev["price"] == 65_432_123_456
    assert ev["ts"] == ts
    assert ev["confidence"] == 930_000
    assert ev["n_sources"] == 4
    assert ev["reporter"] == reporter.address
    assert oracle.functions.latestRoundData(BTC).call() == [1, 65_432_123_456, ts, ts, 1]
    assert oracle.functions.healthy(BTC).call()


def test_latest_round_data_follows_rounds(chain, oracle, submit, reporter):
    t0 = chain.now() - 100
    submit(60_000, ts=t0)
    submit(61_000, ts=t0 + 30)
    submit(60_500, ts=t0 + 60)
    f = oracle.functions
    assert f.latestRoundData(BTC).call() == [3, to_micro(60_500), t0 + 60, t0 + 60, 3]
    assert f.getRoundData(BTC, 2).call() == [2, to_micro(61_000), t0 + 30, t0 + 30, 2]
    answer, confidence, n_sources, observed_at, written_at, who = f.get_round(BTC, 1).call()
    assert (answer, confidence, n_sources, observed_at, who) == (
        to_micro(60_000), 900_000, 5, t0, reporter.address)
    assert written_at >= observed_at
    assert f.latest_round_id(BTC).call() == 3


def test_no_data_reverts_on_read(oracle):
    with reverts("oracle: no data"):
        oracle.functions.latestRoundData(BTC).call()
    with reverts("oracle: no data"):
        oracle.functions.getRoundData(BTC, 7).call()


def test_unauthorized_reporter(chain, oracle, submit, stranger, owner, reporter):
    with reverts("oracle: not reporter"):
        submit(60_000, by=stranger)
    # an owner is not a reporter either
    with reverts("oracle: not reporter"):
        submit(60_000, by=owner)
    # a removed reporter is refused
    receipt = chain.send(oracle.functions.remove_reporter(reporter.address), owner)
    (ev,) = chain.events(oracle, "ReporterRemoved", receipt)
    assert ev["reporter"] == reporter.address
    with reverts("oracle: not reporter"):
        submit(60_000)


def test_only_owners_administer(chain, oracle, stranger, reporter):
    f = oracle.functions
    for call in (
        f.add_reporter(stranger.address),
        f.remove_reporter(reporter.address),
        f.set_bounds(BTC, 1, 2),
        f.set_limits(1, 1, 1, 1),
        f.pause(),
        f.add_owner(stranger.address),
        f.reset_breaker(BTC),
    ):
        with reverts("oracle: not owner"):
            chain.send(call, stranger)


def test_reporter_added_event_and_duplicates(chain, oracle, owner, stranger, reporter):
    receipt = chain.send(oracle.functions.add_reporter(stranger.address), owner)
    (ev,) = chain.events(oracle, "ReporterAdded", receipt)
    assert (ev["reporter"], ev["by"]) == (stranger.address, owner.address)
    with reverts("oracle: already reporter"):
        chain.send(oracle.functions.add_reporter(reporter.address), owner)


def test_stale_timestamp(chain, submit):
    with reverts("oracle: stale"):
        submit(60_000, ts=chain.now() - MAX_AGE - 30)


def test_future_timestamp(chain, submit):
    with reverts("oracle: future timestamp"):
        submit(60_000, ts=chain.now() + MAX_FUTURE + 600)


def test_out_of_order_timestamp(chain, submit):
    t = chain.now() - 20
    submit(60_000, ts=t)
    with reverts("oracle: out of order"):
        submit(60_100, ts=t)  # same time
    with reverts("oracle: out of order"):
        submit(60_100, ts=t - 1)  # older
    submit(60_100, ts=t + 1)


def test_out_of_bounds(chain, oracle, owner, submit):
    with reverts("oracle: out of bounds"):
        submit(999.999999)
    with reverts("oracle: out of bounds"):
        submit(1_000_000.000001)
    submit(1_000)  # the bounds are inclusive
    # bounds are per asset, and an asset without bounds is refused (fail closed)
    with reverts("oracle: unknown asset"):
        submit(3_000, asset=ETH)
    receipt = chain.send(oracle.functions.set_bounds(ETH, to_micro(100), to_micro(100_000)), owner)
    (ev,) = chain.events(oracle, "BoundsSet", receipt)
    assert (ev["asset"], ev["min_price"], ev["max_price"]) == (ETH, 100_000_000, 100_000_000_000)
    submit(3_000, asset=ETH)
    with reverts("oracle: min >= max"):
        chain.send(oracle.functions.set_bounds(ETH, 5, 5), owner)


def test_confidence_and_sources(submit):
    with reverts("oracle: bad confidence"):
        submit(60_000, confidence=1.000001)
    with reverts("oracle: too few sources"):
        submit(60_000, n=2)
    submit(60_000, confidence=1.0, n=3)


def test_deviation_breaker(chain, oracle, owner, submit, stranger):
    f = oracle.functions
    t = chain.now() - 100
    submit(60_000, ts=t)
    submit(66_000, ts=t + 1)  # exactly 10 % = max_deviation_bps: accepted
    assert f.latestRoundData(BTC).call()[1] == to_micro(66_000)

    # +10.0015 %: the update is refused, the breaker trips, the tx itself succeeds
    receipt = submit(72_601, ts=t + 2)
    assert receipt["status"] == 1
    (ev,) = chain.events(oracle, "BreakerTripped", receipt)
    assert ev["asset"] == BTC
    assert ev["last_price"] == to_micro(66_000)
    assert ev["price"] == to_micro(72_601)
    assert ev["deviation_bps"] == 1001  # 10.0015 %, rounded up
    assert chain.events(oracle, "PriceUpdated", receipt) == []
    assert f.tripped(BTC).call()
    assert not f.healthy(BTC).call()
    assert f.latestRoundData(BTC).call()[0] == 2  # unchanged

    # while tripped every submit for that asset reverts, even a sane one
    with reverts("oracle: breaker tripped"):
        submit(66_100, ts=t + 3)
    with reverts("oracle: not owner"):
        chain.send(f.reset_breaker(BTC), stranger)

    receipt = chain.send(f.reset_breaker(BTC), owner)
    (ev,) = chain.events(oracle, "BreakerReset", receipt)
    assert (ev["asset"], ev["by"]) == (BTC, owner.address)
    with reverts("oracle: breaker not tripped"):
        chain.send(f.reset_breaker(BTC), owner)

    # after a reset the next price becomes the baseline without the deviation check ...
    submit(72_601, ts=t + 4)
    assert f.latestRoundData(BTC).call()[1:2] == [to_micro(72_601)]
    # ... but only once: a further jump trips again (a fall as well as a rise)
    receipt = submit(50_000, ts=t + 5)
    assert chain.events(oracle, "BreakerTripped", receipt)
    assert f.tripped(BTC).call()


def test_breaker_submit_returns_false(chain, oracle, reporter, submit):
    t = chain.now() - 50
    submit(60_000, ts=t)
    ok = oracle.functions.submit(BTC, to_micro(61_000), t + 1, 900_000, 5).call({"from": reporter.address})
    bad = oracle.functions.submit(BTC, to_micro(90_000), t + 1, 900_000, 5).call({"from": reporter.address})
    assert (ok, bad) == (True, False)


def test_pause_and_unpause(chain, oracle, owner, submit):
    f = oracle.functions
    t = chain.now() - 50
    submit(60_000, ts=t)
    receipt = chain.send(f.pause(), owner)
    (ev,) = chain.events(oracle, "Paused", receipt)
    assert ev["by"] == owner.address
    assert f.paused().call()
    assert not f.healthy(BTC).call()
    with reverts("oracle: paused"):
        submit(60_100, ts=t + 1)
    with reverts("oracle: already paused"):
        chain.send(f.pause(), owner)
    receipt = chain.send(f.unpause(), owner)
    assert chain.events(oracle, "Unpaused", receipt)[0]["by"] == owner.address
    with reverts("oracle: not paused"):
        chain.send(f.unpause(), owner)
    submit(60_100, ts=t + 1)
    assert f.healthy(BTC).call()


def test_owners(chain, oracle, owner, stranger):
    f = oracle.functions
    with reverts("oracle: last owner"):
        chain.send(f.remove_owner(owner.address), owner)
    receipt = chain.send(f.add_owner(stranger.address), owner)
    assert chain.events(oracle, "OwnerAdded", receipt)[0]["owner"] == stranger.address
    with reverts("oracle: already owner"):
        chain.send(f.add_owner(stranger.address), owner)
    # the second owner can lift a pause set by the first
    chain.send(f.pause(), owner)
    chain.send(f.unpause(), stranger)
    receipt = chain.send(f.remove_owner(owner.address), stranger)
    assert chain.events(oracle, "OwnerRemoved", receipt)[0]["owner"] == owner.address
    with reverts("oracle: not owner"):
        chain.send(f.pause(), owner)


def test_set_limits(chain, oracle, owner, submit):
    receipt = chain.send(oracle.functions.set_limits(60, 5, 200, 1), owner)
    (ev,) = chain.events(oracle, "LimitsSet", receipt)
    assert (ev["max_age"], ev["max_future"], ev["max_deviation_bps"], ev["min_sources"]) == (60, 5, 200, 1)
    with reverts("oracle: stale"):
        submit(60_000, ts=chain.now() - 90)
    submit(60_000, n=1)
    with reverts("oracle: max_age is 0"):
        chain.send(oracle.functions.set_limits(0, 5, 200, 1), owner)


def test_status_zero_receipt_reports_reason(chain, oracle, reporter, stranger):
    """With a fixed gas limit nothing is estimated: the revert is mined (status 0) and its
    reason recovered by replaying the transaction."""
    from dataflows.chain.embedded import TransactionReverted

    call = oracle.functions.submit(BTC, to_micro(60_000), chain.now() - 5, 900_000, 5)
    with reverts("oracle: not reporter") as info:
        chain.send(call, stranger, gas=300_000)
    assert isinstance(info.exc, TransactionReverted)
    assert info.exc.receipt["status"] == 0
