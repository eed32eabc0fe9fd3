# pragma version ~=0.4.0
"""
@title hedgeflow price oracle
@notice Prices pushed by authorized reporters, in micro-USD (x 10**6).
        Every update is validated on chain:
        - the reporter is authorized and the oracle is not paused;
        - the asset has bounds configured (fail closed) and the price lies in [min, max];
        - the observation time `ts` is newer than the last one (out-of-order is refused),
          not older than `max_age` seconds and not more than `max_future` seconds ahead
          of the block;
        - `confidence_micro` <= 10**6 and `n_sources` >= `min_sources`;
        - circuit breaker: a price deviating from the last accepted one by more than
          `max_deviation_bps` (compared exactly; the logged bps are rounded up) does NOT
          revert. It trips the asset's breaker instead: the price is not stored,
          `BreakerTripped` is logged (so the event stays on chain for the operators),
          `submit` returns False, and every later submit for that asset reverts with
          "oracle: breaker tripped" until an owner calls `reset_breaker`. After a reset
          the next accepted price is not checked for deviation (a genuine move, reviewed
          by a human, becomes the new baseline); the check applies again after it.
        Readers: `healthy(asset)` is False while paused, tripped or without a price.
        `latestRoundData` follows Chainlink's AggregatorV3 shape, with the asset as argument.
"""

MAX_OWNERS: constant(uint256) = 16
BPS: constant(uint256) = 10000
MICRO: constant(uint256) = 1000000

struct Round:
    answer: uint256          # price, micro-USD
    confidence: uint256      # confidence score, micro-units (10**6 = 1.0)
    n_sources: uint256
    observed_at: uint256     # the reporter's observation time (unix seconds)
    written_at: uint256      # block.timestamp of the write
    reporter: address

struct Bounds:
    min_price: uint256
    max_price: uint256

event PriceUpdated:
    asset: indexed(bytes32)
    round_id: indexed(uint80)
    price: uint256
    ts: uint256
    confidence: uint256
    n_sources: uint256
    reporter: address

event ReporterAdded:
    reporter: indexed(address)
    by: address

event ReporterRemoved:
    reporter: indexed(address)
    by: address

event OwnerAdded:
    owner: indexed(address)
    by: address

event OwnerRemoved:
    owner: indexed(address)
    by: address

event Paused:
    by: indexed(address)

event Unpaused:
    by: indexed(address)

event BoundsSet:
    asset: indexed(bytes32)
    min_price: uint256
    max_price: uint256
    by: address

event LimitsSet:
    max_age: uint256
    max_future: uint256
    max_deviation_bps: uint256
    min_sources: uint256
    by: address

event BreakerTripped:
    asset: indexed(bytes32)
    last_price: uint256
    price: uint256
    deviation_bps: uint256
    reporter: address

event BreakerReset:
    asset: indexed(bytes32)
    by: address

is_owner: public(HashMap[address, bool])
owner_count: public(uint256)
is_reporter: public(HashMap[address, bool])
paused: public(bool)

max_age: public(uint256)
max_future: public(uint256)
max_deviation_bps: public(uint256)
min_sources: public(uint256)

bounds: public(HashMap[bytes32, Bounds])
tripped: public(HashMap[bytes32, bool])
skip_deviation_once: HashMap[bytes32, bool]
latest_round_id: public(HashMap[bytes32, uint80])
rounds: HashMap[bytes32, HashMap[uint80, Round]]


@deploy
def __init__(max_age: uint256, max_future: uint256, max_deviation_bps: uint256, min_sources: uint256):
    self.is_owner[msg.sender] = True
    self.owner_count = 1
    self._set_limits(max_age, max_future, max_deviation_bps, min_sources)
    log OwnerAdded(owner=msg.sender, by=msg.sender)


@internal
def _only_owner():
    assert self.is_owner[msg.sender], "oracle: not owner"


@internal
def _set_limits(max_age: uint256, max_future: uint256, max_deviation_bps: uint256, min_sources: uint256):
    assert max_age > 0, "oracle: max_age is 0"
    assert max_deviation_bps > 0, "oracle: max_deviation_bps is 0"
    self.max_age = max_age
    self.max_future = max_future
    self.max_deviation_bps = max_deviation_bps
    self.min_sources = min_sources
    log LimitsSet(max_age=max_age, max_future=max_future, max_deviation_bps=max_deviation_bps,
                  min_sources=min_sources, by=msg.sender)


# ---------------------------------------------------------------- administration

@external
def add_owner(owner: address):
    self._only_owner()
    assert owner != empty(address), "oracle: zero address"
    assert not self.is_owner[owner], "oracle: already owner"
    assert self.owner_count < MAX_OWNERS, "oracle: too many owners"
    self.is_owner[owner] = True
    self.owner_count += 1
    log OwnerAdded(owner=owner, by=msg.sender)


@external
def remove_owner(owner: address):
    self._only_owner()
    assert self.is_owner[owner], "oracle: not an owner"
    assert self.owner_count > 1, "oracle: last owner"
    self.is_owner[owner] = False
    self.owner_count -= 1
    log OwnerRemoved(owner=owner, by=msg.sender)


@external
def add_reporter(reporter: address):
    self._only_owner()
    assert reporter != empty(address), "oracle: zero address"
    assert not self.is_reporter[reporter], "oracle: already reporter"
    self.is_reporter[reporter] = True
    log ReporterAdded(reporter=reporter, by=msg.sender)


@external
def remove_reporter(reporter: address):
    self._only_owner()
    assert self.is_reporter[reporter], "oracle: not a reporter"
    self.is_reporter[reporter] = False
    log ReporterRemoved(reporter=reporter, by=msg.sender)


@external
def set_bounds(asset: bytes32, min_price: uint256, max_price: uint256):
    self._only_owner()
    assert min_price > 0, "oracle: min is 0"
    assert min_price < max_price, "oracle: min >= max"
    self.bounds[asset] = Bounds(min_price=min_price, max_price=max_price)
    log BoundsSet(asset=asset, min_price=min_price, max_price=max_price, by=msg.sender)


@external
def set_limits(max_age: uint256, max_future: uint256, max_deviation_bps: uint256, min_sources: uint256):
    self._only_owner()
    self._set_limits(max_age, max_future, max_deviation_bps, min_sources)


@external
def pause():
    self._only_owner()
    assert not self.paused, "oracle: already paused"
    self.paused = True
    log Paused(by=msg.sender)


@external
def unpause():
    self._only_owner()
    assert self.paused, "oracle: not paused"
    self.paused = False
    log Unpaused(by=msg.sender)


@external
def reset_breaker(asset: bytes32):
    self._only_owner()
    assert self.tripped[asset], "oracle: breaker not tripped"
    self.tripped[asset] = False
    self.skip_deviation_once[asset] = True
    log BreakerReset(asset=asset, by=msg.sender)


# ---------------------------------------------------------------- reporting

@external
def submit(asset: bytes32, price_micro: uint256, ts: uint256, confidence_micro: uint256,
           n_sources: uint256) -> bool:
    """
    @notice Store a new round; returns False (and trips the breaker) on a deviation
            beyond max_deviation_bps, reverts on every other rule.
    """
    assert not self.paused, "oracle: paused"
    assert self.is_reporter[msg.sender], "oracle: not reporter"
    assert not self.tripped[asset], "oracle: breaker tripped"
    b: Bounds = self.bounds[asset]
    assert b.max_price > 0, "oracle: unknown asset"
    assert price_micro >= b.min_price and price_micro <= b.max_price, "oracle: out of bounds"
    assert ts + self.max_age >= block.timestamp, "oracle: stale"
    assert ts <= block.timestamp + self.max_future, "oracle: future timestamp"
    assert confidence_micro <= MICRO, "oracle: bad confidence"
    assert n_sources >= self.min_sources, "oracle: too few sources"

    rid: uint80 = self.latest_round_id[asset]
    if rid > 0:
        last: Round = self.rounds[asset][rid]
        assert ts > last.observed_at, "oracle: out of order"
        if self.skip_deviation_once[asset]:
            self.skip_deviation_once[asset] = False
        else:
            diff: uint256 = 0
            if price_micro > last.answer:
                diff = price_micro - last.answer
            else:
                diff = last.answer - price_micro
            # exact test (no rounding): diff / last > max_deviation_bps / 10**4
            if diff * BPS > self.max_deviation_bps * last.answer:
                dev_bps: uint256 = (diff * BPS + last.answer - 1) // last.answer  # rounded up
                self.tripped[asset] = True
                log BreakerTripped(asset=asset, last_price=last.answer, price=price_micro,
                                   deviation_bps=dev_bps, reporter=msg.sender)
                return False

    rid += 1
    self.rounds[asset][rid] = Round(answer=price_micro, confidence=confidence_micro,
                                    n_sources=n_sources, observed_at=ts,
                                    written_at=block.timestamp, reporter=msg.sender)
    self.latest_round_id[asset] = rid
    log PriceUpdated(asset=asset, round_id=rid, price=price_micro, ts=ts,
                     confidence=confidence_micro, n_sources=n_sources, reporter=msg.sender)
    return True


# ---------------------------------------------------------------- reading

@external
@pure
def decimals() -> uint8:
    return 6


@external
@view
def healthy(asset: bytes32) -> bool:
    """@notice True when a price exists, the oracle is not paused and the breaker is closed."""
    return (not self.paused) and (not self.tripped[asset]) and self.latest_round_id[asset] > 0


@external
@view
def latestRoundData(asset: bytes32) -> (uint80, int256, uint256, uint256, uint80):
    """
    @notice Chainlink AggregatorV3 shape: (roundId, answer, startedAt, updatedAt,
            answeredInRound). answer in micro-USD; startedAt = updatedAt = the
            observation time reported with the price. Reverts when there is no price.
    """
    rid: uint80 = self.latest_round_id[asset]
    assert rid > 0, "oracle: no data"
    r: Round = self.rounds[asset][rid]
    return (rid, convert(r.answer, int256), r.observed_at, r.observed_at, rid)


@external
@view
def getRoundData(asset: bytes32, round_id: uint80) -> (uint80, int256, uint256, uint256, uint80):
    r: Round = self.rounds[asset][round_id]
    assert r.observed_at > 0, "oracle: no data"
    return (round_id, convert(r.answer, int256), r.observed_at, r.observed_at, round_id)


@external
@view
def get_round(asset: bytes32, round_id: uint80) -> Round:
    """@notice The full round: price, confidence, sources, observation and write times, reporter."""
    r: Round = self.rounds[asset][round_id]
    assert r.observed_at > 0, "oracle: no data"
    return r
