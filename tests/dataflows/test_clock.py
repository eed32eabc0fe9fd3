"""The injected clocks."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataflows.clock import SimulatedClock, WallClock


def test_wall_clock_is_the_machine_clock():
    before = time.time()
    now = WallClock().now()
    assert before <= now <= time.time()


@given(st.lists(st.floats(0, 4e9), min_size=1, max_size=50))
def test_simulated_clock_follows_the_data_and_never_goes_back(stamps):
    clock = SimulatedClock()
    seen = []
    for ts in stamps:
        clock.advance_to(ts)
        seen.append(clock.now())
    assert seen == sorted(seen)
    assert clock.now() == max(stamps)


def test_simulated_clock_advance_by():
    clock = SimulatedClock(100.0)
    clock.advance_by(2.5)
    assert clock.now() == 102.5
    with pytest.raises(ValueError):
        clock.advance_by(-1)
