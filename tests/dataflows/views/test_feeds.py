"""OracleView with the graph's oracle, the streamz way: each published price carries its sources'
standing at that evaluation."""

from __future__ import annotations

from streamz import Stream

from dataflows.views.feeds import OracleView
from models.oracle import RobustOracle
from tests.conftest import make_quotes


def _quote(source: str, ts: float, bid: float, ask: float) -> dict:
    exchange, instrument = source.split(":")
    return {"exchange": exchange, "instrument": instrument, "event_ts": ts, "bid": bid, "ask": ask}


def test_each_price_keeps_its_sources_at_that_evaluation():
    oracle = RobustOracle()
    view = OracleView(oracle=oracle)
    source = Stream()
    source.sink(view.on_prices)
    oracle.update(make_quotes(
        _quote("binance:BTCUSDT", 100.0, 99_990.0, 100_010.0),
        _quote("coinbase:BTC-USD", 100.0, 99_995.0, 100_015.0),
        _quote("kraken:BTC/USD", 100.0, 99_985.0, 100_005.0),
    ))
    source.emit(oracle.publish(100.5))
    sources = view.sources("BTC")
    assert sources == tuple(oracle.cross_venue("BTC")) and len(sources) == 3
    assert {v.status for v in sources} == {"used"}
    # A later evaluation with one venue far off: the view holds the new standing, not the old.
    oracle.update(make_quotes(_quote("kraken:BTC/USD", 102.0, 120_000.0, 120_010.0)))
    source.emit(oracle.publish(102.5))
    kraken = next(v for v in view.sources("BTC") if v.source == "kraken:BTC/USD")
    assert kraken.status != "used" and kraken.deviation_bps > 1_000
    assert view.sources("ETH") == ()
    assert view.on_chain() == {} and view.publisher_counts() == {}  # no chain publisher
