"""Fixtures shared by the page tests."""

from __future__ import annotations

import panel as pn
import pytest


@pytest.fixture
def periodic(monkeypatch):
    """Record the pages' periodic callbacks instead of scheduling them: a list of
    ``{"callback", "period"}``, in the order the pages asked for them."""
    calls: list[dict] = []

    def add_periodic_callback(callback, period=500, count=None, timeout=None, start=True):
        calls.append({"callback": callback, "period": period})

    monkeypatch.setattr(pn.state, "add_periodic_callback", add_periodic_callback)
    return calls
