"""Tests of models.sequence.SequenceTracker: is this update the one that should come next?"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from models.sequence import SequenceCheck, SequenceTracker

# ------------------------------------------------------------------------------ check()


def test_first_update_of_a_key_is_first_and_remembered():
    t = SequenceTracker()
    assert t.last("BTCUSDT") is None
    assert t.check("BTCUSDT", 100) == SequenceCheck("first", 100, 0)
    assert t.last("BTCUSDT") == 100


def test_consecutive_updates_are_ok():
    t = SequenceTracker()
    t.check("k", 5)
    for n in (6, 7, 8):
        assert t.check("k", n) == SequenceCheck("ok", n, 0)
    assert t.last("k") == 8


def test_a_skip_is_a_gap_with_the_missing_count_from_expected():
    t = SequenceTracker()
    t.check("k", 10)
    assert t.check("k", 14) == SequenceCheck("gap", 11, 3)  # 11, 12, 13 missing
    assert t.last("k") == 14
    assert t.check("k", 15).status == "ok"  # numbering continues from the gap's update


def test_a_repeat_or_an_older_update_is_stale_and_not_remembered():
    t = SequenceTracker()
    t.check("k", 10)
    t.check("k", 11)
    assert t.check("k", 11) == SequenceCheck("stale", 12, 0)
    assert t.check("k", 3) == SequenceCheck("stale", 12, 0)
    assert t.last("k") == 11  # a stale update does not move the tracker back
    assert t.check("k", 12).status == "ok"


def test_ranges_first_last_like_binance_depth_U_u():
    t = SequenceTracker()
    assert t.check("NKNUSDT", 499869750, 499869752).status == "first"
    assert t.last("NKNUSDT") == 499869752  # the range's last id is remembered
    assert t.check("NKNUSDT", 499869753, 499869754) == SequenceCheck("ok", 499869753, 0)
    assert t.check("NKNUSDT", 499869760, 499869761) == SequenceCheck("gap", 499869755, 5)
    # a range ending at or before the last id seen is stale, even if it starts earlier
    assert t.check("NKNUSDT", 499869755, 499869761).status == "stale"
    assert t.check("NKNUSDT", 499869700, 499869705).status == "stale"
    # a range that overlaps the last id but goes beyond it carries new updates: ok
    assert t.check("NKNUSDT", 499869761, 499869765) == SequenceCheck("ok", 499869762, 0)
    assert t.last("NKNUSDT") == 499869765


def test_keys_are_independent():
    t = SequenceTracker()
    t.check("a", 1)
    t.check("b", 100)
    assert t.check("a", 2).status == "ok"
    assert t.check("b", 103) == SequenceCheck("gap", 101, 2)
    assert t.check(("deribit", "BTC-PERPETUAL"), 7).status == "first"  # any hashable key


def test_reset_forgets_a_key_only():
    t = SequenceTracker()
    t.check("a", 10)
    t.check("b", 10)
    t.reset("a")
    assert t.last("a") is None
    assert t.check("a", 3).status == "first"  # numbering starts again after a snapshot
    assert t.check("b", 11).status == "ok"
    t.reset("never seen")  # no error


# ------------------------------------------------------------------------ check_chain()


def test_chain_first_ok_gap_stale():
    t = SequenceTracker()
    assert t.check_chain("BTC-PERPETUAL", 0, 1000) == SequenceCheck("first", 0, 0)
    assert t.last("BTC-PERPETUAL") == 1000
    # ids increase but are not consecutive: in order when prev is the last id seen
    assert t.check_chain("BTC-PERPETUAL", 1000, 1007) == SequenceCheck("ok", 1000, 0)
    # prev does not match: a gap of unknown size, and the new id is remembered
    assert t.check_chain("BTC-PERPETUAL", 1010, 1012) == SequenceCheck("gap", 1007, -1)
    assert t.last("BTC-PERPETUAL") == 1012
    # an id at or before the last is stale, whatever prev says
    assert t.check_chain("BTC-PERPETUAL", 1012, 1012) == SequenceCheck("stale", 1012, 0)
    assert t.check_chain("BTC-PERPETUAL", 1000, 1007).status == "stale"
    assert t.last("BTC-PERPETUAL") == 1012
    assert t.check_chain("BTC-PERPETUAL", 1012, 1020).status == "ok"


# ------------------------------------------------------------------------------ properties


@st.composite
def deliveries(draw):
    """Distinct sequence numbers with skips, delivered in a random order."""
    numbers = draw(st.lists(st.integers(0, 200), min_size=1, max_size=60, unique=True))
    return draw(st.permutations(sorted(numbers)))


@settings(max_examples=300, deadline=None)
@given(order=deliveries())
def test_property_every_gap_is_reported_with_the_right_missing_count(order):
    t = SequenceTracker()
    applied: list[int] = []
    reported_missing: set[int] = set()
    total_missing = 0
    for i, n in enumerate(order):
        before = t.last("k")
        c = t.check("k", n)
        if i == 0:
            assert c.status == "first"
        elif n <= before:
            # at or behind the last applied number: never applied again
            assert c == SequenceCheck("stale", before + 1, 0)
            assert t.last("k") == before
            continue
        elif n == before + 1:
            assert c == SequenceCheck("ok", n, 0)
        else:
            # the gap names exactly the numbers between the last applied one and this one
            assert c == SequenceCheck("gap", before + 1, n - before - 1)
            gap = set(range(c.expected, c.expected + c.missing))
            assert not gap & reported_missing  # each number is reported missing once at most
            reported_missing |= gap
            total_missing += c.missing
        applied.append(n)
        assert t.last("k") == n
    # what was applied is increasing, and the gaps are exactly the holes between applied numbers
    assert applied == sorted(set(applied))
    assert reported_missing == set(range(applied[0], applied[-1] + 1)) - set(applied)
    assert total_missing == applied[-1] - applied[0] + 1 - len(applied)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 10**12),
    chunks=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 4)), min_size=1, max_size=40),
)
def test_property_ranges_in_order_report_exactly_the_skipped_ids(start, chunks):
    """Binance-style ``U..u`` updates delivered in order, with ``skip`` ids lost before each."""
    t = SequenceTracker()
    next_id, delivered, missing = start, set(), set()
    for k, (skip, size) in enumerate(chunks):
        first = next_id + (skip if k else 0)
        last = first + size - 1
        c = t.check("sym", first, last)
        if k == 0:
            assert c.status == "first"
        elif skip:
            assert (c.status, c.expected, c.missing) == ("gap", next_id, skip)
            missing |= set(range(c.expected, c.expected + c.missing))
        else:
            assert c == SequenceCheck("ok", first, 0)
        delivered |= set(range(first, last + 1))
        next_id = last + 1
    assert missing == set(range(start, next_id)) - delivered
    assert t.last("sym") == next_id - 1
