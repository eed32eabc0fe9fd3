"""The Panel app: its pages, served by ``hedgeflow run`` on the pipeline's own asyncio loop, or
one by one by ``panel serve dashboards/<page>.py``.

A page is a function of the shared pipeline (``page(pipeline) -> Viewable``) called once per
browser session: every session builds its own widgets over one pipeline and polls the pipeline's
read-only views (``pipeline.views``, see dataflows/views) from its own periodic callback. Add a
page as a module here with such a function, and a line in ``PAGES``; each gets its own URL.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Callable, NamedTuple

import panel as pn

from dashboards.admin import admin_page
from dashboards.hedge import hedge_page
from dashboards.archive import archive_page
from dashboards.oracle import oracle_page
from dashboards.volatility import volatility_page
from dashboards.premium import premium_page


class Page(NamedTuple):
    title: str
    build: Callable  # (pipeline) -> a new Viewable, one per session


# URL path -> page, in the order of the index.
PAGES: dict[str, Page] = {
    "oracle": Page("Oracle", oracle_page),
    "volatility": Page("Volatility", volatility_page),
    "premium": Page("Premium calculator", premium_page),
    "hedge": Page("Hedge book", hedge_page),
    "archive": Page("Archive health", archive_page),
    "admin": Page("Safety and admin", admin_page),
}


def serve_dashboards(pipeline, host: str, port: int):
    """Start Panel's server on the running loop; the caller stops it with ``.stop()``."""
    routes = {path: (lambda page=page: page.build(pipeline)) for path, page in PAGES.items()}
    # pn.serve installs a SIGINT handler that stops the loop outright; the caller's handler
    # (a clean shutdown that flushes the database and prints the counts) must stay in charge.
    previous_sigint = signal.getsignal(signal.SIGINT)
    # Panel prints "Launching server at ..." to stdout; stdout is kept for the run's JSON result.
    with contextlib.redirect_stdout(sys.stderr):
        server = pn.serve(
            routes,
            address=host,
            port=port,
            show=False,
            start=False,
            title={path: f"hedgeflow · {page.title.lower()}" for path, page in PAGES.items()},
            websocket_origin=[f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"],
        )
    signal.signal(signal.SIGINT, previous_sigint)
    server.start()
    return server
