"""Recently seen keys, bounded: has this trade been received before?

Exchanges repeat trades (a replayed snapshot after a reconnect, a retransmission); a trade is
unique on (exchange, instrument, trade id), and the graph refuses a repeat before it reaches the
database. Memory is bounded: the oldest keys are forgotten first once ``capacity`` is reached, so a
repeat older than that is left to the database's primary key. Pure; no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np


class RecentKeys:
    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._keys: OrderedDict[object, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def seen(self, keys: Iterable) -> np.ndarray:
        """True for each key already remembered, or repeated earlier in ``keys`` itself."""
        out = []
        local: set = set()
        for k in keys:
            out.append(k in self._keys or k in local)
            local.add(k)
        return np.asarray(out, dtype=bool)

    def add(self, keys: Iterable) -> None:
        for k in keys:
            self._keys[k] = None
            self._keys.move_to_end(k)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)
