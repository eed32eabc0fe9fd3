"""Tests of models.dedup.RecentKeys: bounded memory of trades already received."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dedup import RecentKeys


def test_capacity_must_be_at_least_one():
    with pytest.raises(ValueError):
        RecentKeys(0)
    assert RecentKeys(1).capacity == 1
    assert RecentKeys().capacity == 1_000_000


def test_seen_does_not_remember_add_does():
    rk = RecentKeys(10)
    keys = [("binance", "BTCUSDT", "1"), ("binance", "BTCUSDT", "2")]
    out = rk.seen(keys)
    assert out.dtype == bool and out.tolist() == [False, False]
    assert len(rk) == 0
    assert rk.seen(keys).tolist() == [False, False]  # asking twice changes nothing
    rk.add(keys)
    assert len(rk) == 2
    assert rk.seen(keys + [("binance", "BTCUSDT", "3")]).tolist() == [True, True, False]


def test_a_repeat_within_the_same_call_is_seen_from_its_second_occurrence():
    rk = RecentKeys(10)
    k1, k2 = ("binance", "BTCUSDT", "7"), ("binance", "ETHUSDT", "7")
    assert rk.seen([k1, k2, k1, k1, k2]).tolist() == [False, False, True, True, True]
    assert len(rk) == 0  # the call itself remembers nothing


def test_keys_differing_in_any_part_are_different_trades():
    rk = RecentKeys(10)
    rk.add([("binance", "BTCUSDT", "1")])
    assert rk.seen([
        ("kraken", "BTCUSDT", "1"), ("binance", "BTCUSDC", "1"), ("binance", "BTCUSDT", "01"),
        ("binance", "BTCUSDT", "1"),
    ]).tolist() == [False, False, False, True]


def test_the_oldest_keys_are_forgotten_first_at_capacity():
    rk = RecentKeys(3)
    rk.add(["a", "b", "c"])
    assert len(rk) == 3
    rk.add(["d"])
    assert len(rk) == 3
    assert rk.seen(["a", "b", "c", "d"]).tolist() == [False, True, True, True]
    # adding a remembered key again makes it the newest
    rk.add(["b"])
    rk.add(["e"])
    assert rk.seen(["b", "c", "d", "e"]).tolist() == [True, False, True, True]
    # one add larger than the capacity keeps the last ones
    rk.add([str(i) for i in range(10)])
    assert len(rk) == 3
    assert rk.seen(["6", "7", "8", "9", "e"]).tolist() == [False, True, True, True, False]


def test_empty_input():
    rk = RecentKeys(2)
    out = rk.seen([])
    assert isinstance(out, np.ndarray) and out.dtype == bool and out.shape == (0,)
    rk.add([])
    assert len(rk) == 0


def test_accepts_generators():
    rk = RecentKeys(5)
    rk.add(k for k in ["x", "y"])
    assert rk.seen(k for k in ["y", "z", "z"]).tolist() == [True, False, True]


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 8),
    calls=st.lists(st.lists(st.integers(0, 12), max_size=10), max_size=12),
)
def test_property_matches_a_bounded_fifo_model(capacity, calls):
    """Each call asks ``seen`` then adds its keys; the answer equals a plain list model's, and the
    memory never exceeds the capacity."""
    rk = RecentKeys(capacity)
    model: list[int] = []  # oldest first
    for keys in calls:
        expected, local = [], set()
        for k in keys:
            expected.append(k in model or k in local)
            local.add(k)
        assert rk.seen(keys).tolist() == expected
        rk.add(keys)
        for k in keys:
            if k in model:
                model.remove(k)
            model.append(k)
        del model[: max(0, len(model) - capacity)]
        assert len(rk) == len(model) <= capacity
