"""Sequence tracking: is this update the one that should come next?

Exchanges number their updates so a client can tell it missed some: Coinbase a ``sequence`` per
product, Binance depth diffs ``U``..``u`` (first and last update id), Deribit books a
``change_id`` with the ``prev_change_id`` it follows. ``SequenceTracker`` keeps the last number per
key (an instrument, a channel) and classifies each new update. Pure: no clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SequenceCheck:
    """``status``: "first" (nothing seen for this key yet), "ok" (follows on), "gap" (numbers
    were skipped: ``missing`` of them, from ``expected``), or "stale" (at or before the last number
    seen: a repeat or an out-of-order update, which the caller should not apply)."""

    status: str
    expected: int
    missing: int = 0


class SequenceTracker:
    def __init__(self) -> None:
        self._last: dict[object, int] = {}

    def last(self, key: object) -> int | None:
        return self._last.get(key)

    def check(self, key: object, first: int, last: int | None = None) -> SequenceCheck:
        """Check an update covering sequence numbers ``first``..``last`` (``last`` defaults to
        ``first``) and, unless it is stale, remember ``last``."""
        last = first if last is None else last
        previous = self._last.get(key)
        if previous is None:
            self._last[key] = last
            return SequenceCheck("first", first)
        expected = previous + 1
        if last <= previous:
            return SequenceCheck("stale", expected)
        self._last[key] = last
        if first > expected:
            return SequenceCheck("gap", expected, first - expected)
        return SequenceCheck("ok", expected)

    def check_chain(self, key: object, previous_id: int, current_id: int) -> SequenceCheck:
        """For ids that are increasing but not consecutive (Deribit ``change_id``): the update is
        in order when ``previous_id`` is the last id seen. ``missing`` is -1 (unknown) on a gap."""
        last = self._last.get(key)
        if last is None:
            self._last[key] = current_id
            return SequenceCheck("first", previous_id)
        if current_id <= last:
            return SequenceCheck("stale", last)
        self._last[key] = current_id
        if previous_id != last:
            return SequenceCheck("gap", last, -1)
        return SequenceCheck("ok", last)

    def reset(self, key: object) -> None:
        """Forget ``key`` (after a new snapshot, numbering starts again)."""
        self._last.pop(key, None)
