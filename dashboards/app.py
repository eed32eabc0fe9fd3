"""The Panel server ``hedgeflow run`` starts, on the pipeline's own asyncio loop.

Pages are functions of the shared pipeline's views, so every browser session builds its own
widgets over one pipeline. Add a page here and in ``PAGES``; each gets its own URL.
"""

from __future__ import annotations

import contextlib
import signal
import sys

import panel as pn

from dashboards.oracle import oracle_page


def pages(pipeline) -> dict:
    refresh_ms = pipeline.config.dashboard.refresh_ms
    return {"oracle": lambda: oracle_page(pipeline.oracle_view, refresh_ms)}


def serve_dashboards(pipeline, host: str, port: int):
    """Start Panel's server on the running loop; the caller stops it with ``.stop()``."""
    routes = pages(pipeline)
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
            title={"oracle": "hedgeflow · oracle"},
            websocket_origin=[f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"],
        )
    signal.signal(signal.SIGINT, previous_sigint)
    server.start()
    return server
