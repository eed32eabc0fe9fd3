"""Parameters.vy: premium parameters behind k-of-n owner approvals."""

from __future__ import annotations

import pytest

from .conftest import reverts

TTL = 3600


@pytest.fixture
def owners(chain):
    return [chain.new_account() for _ in range(3)]


@pytest.fixture
def params(chain, owners):
    return chain.deploy("Parameters", [o.address for o in owners], 2, TTL, account=owners[0])


def test_deploy_state(params, owners):
    f = params.functions
    assert f.threshold().call() == 2
    assert f.owner_count().call() == 3
    assert [f.owners(i).call() for i in range(3)] == [o.address for o in owners]
    assert all(f.is_owner(o.address).call() for o in owners)
    assert f.proposal_count().call() == 0
    assert f.version().call() == 0
    assert f.param_count().call() == 0


def test_two_of_three_change(chain, params, owners):
    a, b, _ = owners
    f = params.functions
    receipt = chain.send(f.propose("base_vol_micro", 550_000), a)
    (prop,) = chain.events(params, "Proposed", receipt)
    assert (prop["proposal_id"], prop["proposer"], prop["name"], prop["value"]) == (
        1, a.address, "base_vol_micro", 550_000)
    (appr,) = chain.events(params, "Approved", receipt)  # the proposal is the proposer's approval
    assert (appr["owner"], appr["approvals"]) == (a.address, 1)
    assert f.approved(1, a.address).call()

    with reverts("params: too few approvals"):
        chain.send(f.execute(1), a)
    with reverts("params: unknown name"):
        f.get("base_vol_micro").call()

    receipt = chain.send(f.approve(1), b)
    (appr,) = chain.events(params, "Approved", receipt)
    assert (appr["proposal_id"], appr["owner"], appr["approvals"]) == (1, b.address, 2)

    receipt = chain.send(f.execute(1), b)
    (ex,) = chain.events(params, "Executed", receipt)
    assert (ex["proposal_id"], ex["name"], ex["old_value"], ex["new_value"], ex["version"]) == (
        1, "base_vol_micro", 0, 550_000, 1)
    assert f.get("base_vol_micro").call() == 550_000
    assert f.is_set("base_vol_micro").call()
    assert f.names(0).call() == "base_vol_micro"
    assert f.version().call() == 1
    name, value, proposer, created_at, approvals, executed = f.get_proposal(1).call()
    assert (name, value, proposer, approvals, executed) == ("base_vol_micro", 550_000, a.address, 2, True)
    assert created_at > 0

    # executed proposals are closed
    with reverts("params: already executed"):
        chain.send(f.execute(1), a)
    with reverts("params: already executed"):
        chain.send(f.approve(1), owners[2])


def test_update_and_negative_value(chain, params, owners):
    a, _, c = owners
    f = params.functions
    for value in (-25_000, 40_000):
        pid = f.propose("jump_premium_micro", value).call({"from": c.address})
        chain.send(f.propose("jump_premium_micro", value), c)
        chain.send(f.approve(pid), a)
        receipt = chain.send(f.execute(pid), c)
        assert f.get("jump_premium_micro").call() == value
    (ex,) = chain.events(params, "Executed", receipt)
    assert (ex["old_value"], ex["new_value"]) == (-25_000, 40_000)
    assert f.param_count().call() == 1  # same name, one entry
    assert f.version().call() == 2


def test_double_approval_reverts(chain, params, owners):
    a, b, _ = owners
    f = params.functions
    chain.send(f.propose("risk_free_micro", 45_000), a)
    with reverts("params: already approved"):
        chain.send(f.approve(1), a)  # the proposer approved by proposing
    chain.send(f.approve(1), b)
    with reverts("params: already approved"):
        chain.send(f.approve(1), b)
    assert f.get_proposal(1).call()[4] == 2


def test_three_of_three_needs_everyone(chain, owners):
    a, b, c = owners
    params = chain.deploy("Parameters", [o.address for o in owners], 3, TTL, account=a)
    f = params.functions
    chain.send(f.propose("base_vol_micro", 600_000), b)
    chain.send(f.approve(1), a)
    with reverts("params: too few approvals"):
        chain.send(f.execute(1), a)
    chain.send(f.approve(1), c)
    chain.send(f.execute(1), c)
    assert f.get("base_vol_micro").call() == 600_000


def test_non_owners_refused(chain, params, owners, stranger):
    f = params.functions
    with reverts("params: not owner"):
        chain.send(f.propose("base_vol_micro", 1), stranger)
    chain.send(f.propose("base_vol_micro", 1), owners[0])
    with reverts("params: not owner"):
        chain.send(f.approve(1), stranger)
    chain.send(f.approve(1), owners[1])
    with reverts("params: not owner"):
        chain.send(f.execute(1), stranger)


def test_unknown_and_expired_proposals(chain, params, owners):
    a, b, _ = owners
    f = params.functions
    with reverts("params: unknown proposal"):
        chain.send(f.approve(7), a)
    with reverts("params: unknown proposal"):
        chain.send(f.execute(0), a)
    with reverts("params: empty name"):
        chain.send(f.propose("", 1), a)
    chain.send(f.propose("base_vol_micro", 1), a)
    chain.send(f.approve(1), b)
    chain.advance(TTL + 10)
    with reverts("params: proposal expired"):
        chain.send(f.execute(1), a)
    with reverts("params: proposal expired"):
        chain.send(f.approve(1), owners[2])


@pytest.mark.parametrize(
    ("n_owners", "threshold", "duplicate", "reason"),
    [
        (3, 0, False, "params: bad threshold"),
        (3, 4, False, "params: bad threshold"),
        (2, 1, True, "params: duplicate owner"),
        (0, 1, False, "params: no owners"),
    ],
)
def test_bad_deployments(chain, n_owners, threshold, duplicate, reason):
    accounts = [chain.new_account(fund_wei=0) for _ in range(n_owners)]
    addrs = [a.address for a in accounts]
    if duplicate:
        addrs[1] = addrs[0]
    with reverts(reason):
        chain.deploy("Parameters", addrs, threshold, TTL, account=chain.new_account())
