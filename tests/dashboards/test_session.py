"""Session callbacks: counted while they run, stopped when their session is destroyed.

A Bokeh server gives each session's Document a session context (a weak reference, set by
``ServerSession``) and, when the session is discarded, calls the Document's session-destroyed
callbacks with it; the second test does exactly that, without a server.
"""

from __future__ import annotations

import gc
import weakref

import panel as pn
from bokeh.document import Document
from bokeh.server.contexts import BokehSessionContext
from panel.io.state import set_curdoc

from dashboards.session import live_session_callbacks, session_callback


def test_a_callback_counts_as_live_until_it_is_stopped():
    before = live_session_callbacks()
    periodic = session_callback(lambda: None, 100)
    try:
        assert periodic.running
        assert periodic.period == 100
        assert live_session_callbacks() == before + 1
    finally:
        periodic.stop()
    assert live_session_callbacks() == before


def test_destroying_the_session_stops_its_callbacks():
    doc = Document()
    context = BokehSessionContext("session-1", None, doc)
    doc._session_context = weakref.ref(context)  # what bokeh's ServerSession does
    before = live_session_callbacks()
    with set_curdoc(doc):
        first = session_callback(lambda: None, 250)
        second = session_callback(lambda: None, 1000)
    assert live_session_callbacks() == before + 2

    assert len(doc.session_destroyed_callbacks) == 2
    for destroyed in list(doc.session_destroyed_callbacks):
        destroyed(context)

    assert not first.running and not second.running
    assert live_session_callbacks() == before


def test_a_dropped_callback_leaves_the_count():
    before = live_session_callbacks()
    periodic = session_callback(lambda: None, 100)
    ref = weakref.ref(periodic)
    assert live_session_callbacks() == before + 1
    periodic.stop()
    del periodic
    gc.collect()
    assert ref() is None, "the count must not keep a stopped callback alive"
    assert live_session_callbacks() == before


def test_a_recorded_callback_is_not_counted(monkeypatch):
    # Page tests replace the scheduler by a recorder that returns None.
    monkeypatch.setattr(pn.state, "add_periodic_callback", lambda callback, period: None)
    before = live_session_callbacks()
    assert session_callback(lambda: None, 100) is None
    assert live_session_callbacks() == before
