"""PolicyRegistry.vy: protection puts created, activated, exercised against the oracle, expired."""

from __future__ import annotations

import pytest

from dataflows.chain import (
    POLICY_ACTIVE,
    POLICY_CREATED,
    POLICY_EXERCISED,
    POLICY_EXPIRED,
    put_payout_micro,
    to_micro,
)

from .conftest import BTC, ETH, reverts

MAX_PRICE_AGE = 300
DAY = 86_400


@pytest.fixture
def issuer(owner):
    return owner  # the oracle's owner also runs the registry


@pytest.fixture
def holder(chain):
    return chain.new_account()


@pytest.fixture
def registry(chain, oracle, issuer):
    return chain.deploy("PolicyRegistry", oracle.address, MAX_PRICE_AGE, account=issuer)


@pytest.fixture
def policy(chain, registry, issuer, holder):
    """An active BTC put: strike 60,000 USD on 0.5 BTC, premium 1,250 USD, expiring in 7 days.
    Returns (policy_id, expiry)."""

    def _make(strike=60_000, amount=0.5, premium=1_250, days=7, activate=True, asset=BTC):
        expiry = chain.now() + days * DAY
        call = registry.functions.create(holder.address, asset, to_micro(strike), to_micro(amount),
                                         to_micro(premium), expiry)
        pid = call.call({"from": issuer.address})
        chain.send(call, issuer)
        if activate:
            chain.send(registry.functions.activate(pid), issuer)
        return pid, expiry

    return _make


def test_create_and_activate(chain, registry, issuer, holder):
    f = registry.functions
    expiry = chain.now() + 7 * DAY
    receipt = chain.send(f.create(holder.address, BTC, to_micro(60_000), to_micro(0.5),
                                  to_micro(1_250), expiry), issuer)
    (ev,) = chain.events(registry, "PolicyCreated", receipt)
    assert (ev["policy_id"], ev["holder"], ev["asset"], ev["strike"], ev["amount"], ev["premium"],
            ev["expiry"]) == (1, holder.address, BTC, 60_000_000_000, 500_000, 1_250_000_000, expiry)
    assert f.state_of(1).call() == POLICY_CREATED
    assert f.policy_count().call() == 1
    p = f.get_policy(1).call()
    assert list(p[:7]) == [holder.address, BTC, 60_000_000_000, 500_000, 1_250_000_000, expiry, POLICY_CREATED]

    receipt = chain.send(f.activate(1), issuer)
    assert chain.events(registry, "PolicyActivated", receipt)[0]["policy_id"] == 1
    assert f.state_of(1).call() == POLICY_ACTIVE
    with reverts("registry: not created"):
        chain.send(f.activate(1), issuer)


def test_create_validation(chain, registry, issuer, holder, stranger):
    f = registry.functions
    future = chain.now() + DAY
    with reverts("registry: not issuer"):
        chain.send(f.create(holder.address, BTC, 1, 1, 1, future), stranger)
    with reverts("registry: expiry in the past"):
        chain.send(f.create(holder.address, BTC, 1, 1, 1, chain.now() - 1), issuer)
    with reverts("registry: zero strike"):
        chain.send(f.create(holder.address, BTC, 0, 1, 1, future), issuer)
    with reverts("registry: zero amount"):
        chain.send(f.create(holder.address, BTC, 1, 0, 1, future), issuer)
    with reverts("registry: zero holder"):
        chain.send(f.create("0x" + "00" * 20, BTC, 1, 1, 1, future), issuer)
    with reverts("registry: unknown policy"):
        f.get_policy(42).call()


def test_activation_is_the_issuers(chain, registry, policy, holder, stranger):
    pid, _ = policy(activate=False)
    for who in (holder, stranger):
        with reverts("registry: not issuer"):
            chain.send(registry.functions.activate(pid), who)


def test_exercise_pays_intrinsic_value(chain, registry, policy, submit, holder, issuer):
    pid, _ = policy(strike=60_000, amount=0.5)
    submit(52_345.678901)
    f = registry.functions
    expected = put_payout_micro(to_micro(60_000), to_micro(52_345.678901), to_micro(0.5))
    assert expected == (60_000_000_000 - 52_345_678_901) * 500_000 // 1_000_000 == 3_827_160_549
    assert f.exercise(pid).call({"from": holder.address}) == expected
    receipt = chain.send(f.exercise(pid), holder)
    (ev,) = chain.events(registry, "PolicyExercised", receipt)
    assert (ev["policy_id"], ev["holder"], ev["price"], ev["payout"], ev["oracle_round"]) == (
        pid, holder.address, 52_345_678_901, expected, 1)
    p = f.get_policy(pid).call()
    assert p[6] == POLICY_EXERCISED
    assert (p[8], p[9]) == (52_345_678_901, expected)
    assert f.total_payout().call() == expected
    # wrong state: exercised once, never twice; nor expired afterwards
    with reverts("registry: not active"):
        chain.send(f.exercise(pid), holder)
    chain.advance(8 * DAY)
    with reverts("registry: not open"):
        chain.send(f.expire(pid), issuer)


@pytest.mark.parametrize(
    ("strike", "price", "amount"),
    [(60_000, 59_999.999999, 0.000001), (2_500, 1_234.5, 12.345678), (100_000, 1_000, 3)],
)
def test_payout_math(chain, registry, policy, submit, holder, strike, price, amount):
    pid, _ = policy(strike=strike, amount=amount)
    submit(price)
    payout = registry.functions.exercise(pid).call({"from": holder.address})
    assert payout == (to_micro(strike) - to_micro(price)) * to_micro(amount) // 10**6
    assert payout == put_payout_micro(to_micro(strike), to_micro(price), to_micro(amount))


def test_exercise_wrong_state_and_holder(chain, registry, policy, submit, holder, issuer, stranger):
    submit(50_000)
    pid, _ = policy(activate=False)
    with reverts("registry: not active"):
        chain.send(registry.functions.exercise(pid), holder)  # created, not yet active
    chain.send(registry.functions.activate(pid), issuer)
    for who in (stranger, issuer):
        with reverts("registry: not holder"):
            chain.send(registry.functions.exercise(pid), who)
    with reverts("registry: unknown policy"):
        chain.send(registry.functions.exercise(pid + 1), holder)


def test_exercise_out_of_the_money(chain, registry, policy, submit, holder):
    """'Early': the put cannot be exercised before the price is below the strike."""
    pid, _ = policy(strike=60_000)
    submit(60_000)  # at the strike: no intrinsic value
    with reverts("registry: out of the money"):
        chain.send(registry.functions.exercise(pid), holder)
    submit(59_999)
    chain.send(registry.functions.exercise(pid), holder)


def test_exercise_after_expiry_is_late(chain, registry, policy, submit, holder):
    pid, expiry = policy(days=1)
    chain.time_travel(expiry + 1)
    submit(40_000)
    with reverts("registry: expired"):
        chain.send(registry.functions.exercise(pid), holder)


def test_expire(chain, registry, policy, issuer, stranger):
    f = registry.functions
    pid, expiry = policy(days=2)
    with reverts("registry: not yet expired"):
        chain.send(f.expire(pid), stranger)  # early
    chain.time_travel(expiry)
    receipt = chain.send(f.expire(pid), stranger)  # anyone may expire at or after expiry
    (ev,) = chain.events(registry, "PolicyExpired", receipt)
    assert (ev["policy_id"], ev["by"]) == (pid, stranger.address)
    assert f.state_of(pid).call() == POLICY_EXPIRED
    with reverts("registry: not open"):
        chain.send(f.expire(pid), stranger)


def test_created_policy_cannot_activate_after_expiry(chain, registry, policy, issuer):
    pid, expiry = policy(days=1, activate=False)
    chain.time_travel(expiry)
    with reverts("registry: expired"):
        chain.send(registry.functions.activate(pid), issuer)
    chain.send(registry.functions.expire(pid), issuer)
    assert registry.functions.state_of(pid).call() == POLICY_EXPIRED


def test_exercise_fails_closed_on_the_oracle(chain, oracle, registry, policy, submit, holder, owner):
    f = registry.functions
    pid, _ = policy()
    with reverts("registry: oracle unhealthy"):
        chain.send(f.exercise(pid), holder)  # no price yet
    t = chain.now() - 5
    submit(50_000, ts=t)
    chain.send(oracle.functions.pause(), owner)
    with reverts("registry: oracle unhealthy"):
        chain.send(f.exercise(pid), holder)
    chain.send(oracle.functions.unpause(), owner)
    submit(20_000, ts=t + 1)  # -60 %: trips the breaker, price not stored
    with reverts("registry: oracle unhealthy"):
        chain.send(f.exercise(pid), holder)
    chain.send(oracle.functions.reset_breaker(BTC), owner)
    chain.advance(MAX_PRICE_AGE + 60)
    with reverts("registry: stale price"):
        chain.send(f.exercise(pid), holder)
    submit(50_000)
    chain.send(f.exercise(pid), holder)


def test_assets_are_separate(chain, oracle, registry, policy, submit, holder, owner):
    chain.send(oracle.functions.set_bounds(ETH, to_micro(100), to_micro(100_000)), owner)
    submit(3_000, asset=ETH)
    pid, _ = policy(strike=3_500, amount=2, asset=ETH)
    btc_pid, _ = policy(strike=70_000)
    with reverts("registry: oracle unhealthy"):  # a BTC put never settles on the ETH price
        chain.send(registry.functions.exercise(btc_pid), holder)
    assert registry.functions.exercise(pid).call({"from": holder.address}) == 500 * 2 * 10**6
