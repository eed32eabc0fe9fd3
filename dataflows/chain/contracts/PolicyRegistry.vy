# pragma version ~=0.4.0
"""
@title hedgeflow protection policies
@notice Puts on an asset (BTC, ETH) sold by the issuer (the deployer) to a holder.
        Units: strike and premium in micro-USD, amount in micro-units of the asset,
        payout = (strike - price) * amount // 10**6 in micro-USD.
        States: CREATED -> ACTIVE -> EXERCISED | EXPIRED (a CREATED policy that was
        never activated may also be expired once past its expiry).
        - create / activate: issuer only (activation records that the premium was paid);
        - exercise: the holder only, while ACTIVE and before expiry, when the oracle is
          healthy (not paused, breaker closed), its price no older than `max_price_age`
          and strictly below the strike;
        - expire: anyone, at or after expiry.
"""

interface Oracle:
    def latestRoundData(asset: bytes32) -> (uint80, int256, uint256, uint256, uint80): view
    def healthy(asset: bytes32) -> bool: view

MICRO: constant(uint256) = 1000000

STATE_NONE: constant(uint8) = 0
STATE_CREATED: constant(uint8) = 1
STATE_ACTIVE: constant(uint8) = 2
STATE_EXERCISED: constant(uint8) = 3
STATE_EXPIRED: constant(uint8) = 4

struct Policy:
    holder: address
    asset: bytes32
    strike: uint256
    amount: uint256
    premium: uint256
    expiry: uint256
    state: uint8
    created_at: uint256
    settle_price: uint256
    payout: uint256

event PolicyCreated:
    policy_id: indexed(uint256)
    holder: indexed(address)
    asset: indexed(bytes32)
    strike: uint256
    amount: uint256
    premium: uint256
    expiry: uint256

event PolicyActivated:
    policy_id: indexed(uint256)
    holder: indexed(address)

event PolicyExercised:
    policy_id: indexed(uint256)
    holder: indexed(address)
    price: uint256
    payout: uint256
    oracle_round: uint80

event PolicyExpired:
    policy_id: indexed(uint256)
    holder: indexed(address)
    by: address

issuer: public(address)
oracle: public(Oracle)
max_price_age: public(uint256)
policy_count: public(uint256)
policies: HashMap[uint256, Policy]
total_payout: public(uint256)


@deploy
def __init__(oracle: address, max_price_age: uint256):
    assert oracle != empty(address), "registry: zero oracle"
    assert max_price_age > 0, "registry: max_price_age is 0"
    self.issuer = msg.sender
    self.oracle = Oracle(oracle)
    self.max_price_age = max_price_age


@internal
@view
def _get(policy_id: uint256) -> Policy:
    p: Policy = self.policies[policy_id]
    assert p.state != STATE_NONE, "registry: unknown policy"
    return p


@external
def create(holder: address, asset: bytes32, strike_micro: uint256, amount_micro: uint256,
           premium_micro: uint256, expiry_ts: uint256) -> uint256:
    assert msg.sender == self.issuer, "registry: not issuer"
    assert holder != empty(address), "registry: zero holder"
    assert strike_micro > 0, "registry: zero strike"
    assert amount_micro > 0, "registry: zero amount"
    assert expiry_ts > block.timestamp, "registry: expiry in the past"
    pid: uint256 = self.policy_count + 1
    self.policy_count = pid
    self.policies[pid] = Policy(holder=holder, asset=asset, strike=strike_micro,
                                amount=amount_micro, premium=premium_micro, expiry=expiry_ts,
                                state=STATE_CREATED, created_at=block.timestamp,
                                settle_price=0, payout=0)
    log PolicyCreated(policy_id=pid, holder=holder, asset=asset, strike=strike_micro,
                      amount=amount_micro, premium=premium_micro, expiry=expiry_ts)
    return pid


@external
def activate(policy_id: uint256):
    assert msg.sender == self.issuer, "registry: not issuer"
    p: Policy = self._get(policy_id)
    assert p.state == STATE_CREATED, "registry: not created"
    assert block.timestamp < p.expiry, "registry: expired"
    self.policies[policy_id].state = STATE_ACTIVE
    log PolicyActivated(policy_id=policy_id, holder=p.holder)


@external
def exercise(policy_id: uint256) -> uint256:
    p: Policy = self._get(policy_id)
    assert msg.sender == p.holder, "registry: not holder"
    assert p.state == STATE_ACTIVE, "registry: not active"
    assert block.timestamp < p.expiry, "registry: expired"
    assert staticcall self.oracle.healthy(p.asset), "registry: oracle unhealthy"
    rid: uint80 = 0
    answer: int256 = 0
    started: uint256 = 0
    updated: uint256 = 0
    answered: uint80 = 0
    rid, answer, started, updated, answered = staticcall self.oracle.latestRoundData(p.asset)
    assert updated + self.max_price_age >= block.timestamp, "registry: stale price"
    assert answer > 0, "registry: bad price"
    price: uint256 = convert(answer, uint256)
    assert price < p.strike, "registry: out of the money"
    payout: uint256 = (p.strike - price) * p.amount // MICRO
    self.policies[policy_id].state = STATE_EXERCISED
    self.policies[policy_id].settle_price = price
    self.policies[policy_id].payout = payout
    self.total_payout += payout
    log PolicyExercised(policy_id=policy_id, holder=p.holder, price=price, payout=payout,
                        oracle_round=rid)
    return payout


@external
def expire(policy_id: uint256):
    p: Policy = self._get(policy_id)
    assert p.state == STATE_CREATED or p.state == STATE_ACTIVE, "registry: not open"
    assert block.timestamp >= p.expiry, "registry: not yet expired"
    self.policies[policy_id].state = STATE_EXPIRED
    log PolicyExpired(policy_id=policy_id, holder=p.holder, by=msg.sender)


@external
@view
def get_policy(policy_id: uint256) -> Policy:
    return self._get(policy_id)


@external
@view
def state_of(policy_id: uint256) -> uint8:
    return self.policies[policy_id].state
