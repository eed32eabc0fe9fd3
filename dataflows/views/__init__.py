"""Read-only views of the graph's streams, for the dashboards and the API.

A view is fed by sinks on the graph's streams and read by any number of sessions: sessions poll
it (2-10 Hz) instead of each attaching their own sink, so closing a browser tab leaks nothing and
Bokeh models are only touched from the session's own callbacks.

Each view module has an ``attach(pipeline)`` that subscribes a new view to ``pipeline.graph``
(built, with its desk and chain terminal attached) and returns it; ``attach_views`` makes all of
them once per pipeline, into ``pipeline.views`` by name.
"""

from __future__ import annotations

from dataflows.views import alerts, analytics, feeds, hedge
from dataflows.views.alerts import AlertsView
from dataflows.views.analytics import AnalyticsView
from dataflows.views.feeds import ConnectionView, OracleView
from dataflows.views.hedge import HedgeView
from dataflows.views import options
from dataflows.views import ingest

__all__ = ["AlertsView", "AnalyticsView", "ConnectionView", "HedgeView", "OracleView", "VIEWS",
           "attach_views"]

# name -> the function that attaches that view to a started pipeline's graph.
VIEWS = {
    "oracle": feeds.attach,
    "connections": feeds.attach_connections,
    "alerts": alerts.attach,
    "analytics": analytics.attach,
    "hedge": hedge.attach,
    "options": options.attach,
    "ingest": ingest.attach,
}


def attach_views(pipeline) -> dict:
    """Every view of ``VIEWS``, attached to ``pipeline.graph``, by name."""
    return {name: attach(pipeline) for name, attach in VIEWS.items()}
