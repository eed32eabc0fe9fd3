"""What every page does in its session: poll on a period that stops with the session, wait for
the pipeline to start, and be servable on its own by ``panel serve dashboards/<page>.py``."""

from __future__ import annotations

import threading
import weakref
from typing import Callable

import panel as pn

# Every callback session_callback has made in this process (weakly: a stopped, dropped callback
# leaves the set). The lifecycle test and the soak benchmark read it through
# live_session_callbacks(); the lock because they read it from another thread than the server's.
_callbacks: weakref.WeakSet = weakref.WeakSet()
_callbacks_lock = threading.Lock()


def session_callback(callback: Callable[[], None], period_ms: int):
    """Run ``callback`` every ``period_ms`` in this session, and stop it when the session closes
    (a callback left behind would keep the session's models, and its CPU, alive)."""
    # Period as an int of milliseconds: Panel reads "100ms" as 100 minutes (DESIGN, pitfalls).
    periodic = pn.state.add_periodic_callback(callback, period=int(period_ms))
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        pn.state.on_session_destroyed(lambda _context: periodic.stop())
    if periodic is not None:  # None where a test records the callback instead of scheduling it
        with _callbacks_lock:
            _callbacks.add(periodic)
    return periodic


def live_session_callbacks() -> int:
    """How many callbacks made by ``session_callback`` are still running, over every session of
    this process: 0 once every session has closed (a callback left running is a leaked session)."""
    with _callbacks_lock:
        return sum(1 for periodic in list(_callbacks) if periodic.running)


def when_started(pipeline, build: Callable) -> pn.viewable.Viewable:
    """``build(pipeline)`` once the pipeline has started (its graph and views exist); until then a
    note. ``panel serve`` starts the shared pipeline as the first session opens."""
    if pipeline.started.is_set():
        return build(pipeline)
    holder = pn.Column(pn.pane.Markdown("Starting the pipeline…"), sizing_mode="stretch_width")

    def check() -> None:
        if pipeline.started.is_set():
            periodic.stop()
            holder.objects = [build(pipeline)]

    periodic = session_callback(check, 200)
    return holder


def serve_page(build: Callable, title: str) -> None:
    """The ``panel serve dashboards/<page>.py`` entry: the process's shared pipeline, one page."""
    from dataflows.runtime import shared_pipeline

    when_started(shared_pipeline(), build).servable(title=f"hedgeflow · {title.lower()}")
