"""Tests of models.gaps: connection outages and silent instruments become ``Gap`` rows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.gaps import ConnectionGaps, InstrumentSilence
from models.records import ConnectionEvent, Gap

T0 = 1_700_000_000.0
URL = "wss://stream.binance.com:9443/stream"


def ev(kind: str, ts: float, detail: str = "", exchange: str = "binance", connection: str = URL):
    return ConnectionEvent(exchange, connection, kind, ts, detail)


# ------------------------------------------------------------------------- ConnectionGaps


def test_first_connect_is_not_a_gap():
    cg = ConnectionGaps()
    assert cg.on_event(ev("connected", T0, URL)) == []
    assert cg.close(T0 + 5) == []


def test_one_gap_per_outage_reported_when_reconnected():
    cg = ConnectionGaps()
    cg.on_event(ev("connected", T0))
    assert cg.on_event(ev("disconnected", T0 + 10, "closed by peer")) == []  # still open: not yet
    assert cg.on_event(ev("connected", T0 + 12.5, URL)) == [
        Gap("binance", "*", "disconnect", T0 + 10, T0 + 12.5, -1, f"{URL}: closed by peer")
    ]
    # the outage is closed: a later connect reports nothing, and close has nothing open
    assert cg.on_event(ev("connected", T0 + 20)) == []
    assert cg.close(T0 + 30) == []


def test_silence_then_disconnect_then_reconnect_is_one_silence_gap_from_the_first_event():
    cg = ConnectionGaps()
    assert cg.on_event(ev("silent", T0 + 15, "no message for 15 s")) == []
    assert cg.on_event(ev("disconnected", T0 + 15.1, "silent")) == []
    assert cg.on_event(ev("disconnected", T0 + 17, "ConnectionRefusedError")) == []  # a failed retry
    (gap,) = cg.on_event(ev("connected", T0 + 20))
    assert (gap.kind, gap.start_ts, gap.end_ts, gap.missing) == ("silence", T0 + 15, T0 + 20, -1)
    assert gap.detail == f"{URL}: no message for 15 s"
    assert gap.instrument == "*"  # the whole connection, every instrument on it


def test_connections_and_exchanges_are_kept_apart():
    cg = ConnectionGaps()
    cg.on_event(ev("disconnected", T0, "a", connection="conn-a"))
    cg.on_event(ev("disconnected", T0 + 1, "b", connection="conn-b"))
    cg.on_event(ev("disconnected", T0 + 2, "k", exchange="kraken", connection="conn-a"))
    (b,) = cg.on_event(ev("connected", T0 + 3, connection="conn-b"))
    assert (b.exchange, b.start_ts, b.end_ts, b.detail) == ("binance", T0 + 1, T0 + 3, "conn-b: b")
    (k,) = cg.on_event(ev("connected", T0 + 4, exchange="kraken", connection="conn-a"))
    assert (k.exchange, k.start_ts, k.end_ts) == ("kraken", T0 + 2, T0 + 4)
    # binance conn-a is still down
    (a,) = cg.close(T0 + 9)
    assert (a.exchange, a.kind, a.start_ts, a.missing) == ("binance", "disconnect", T0, -1)
    assert math.isnan(a.end_ts)


def test_close_reports_open_outages_with_an_unknown_end_once():
    cg = ConnectionGaps()
    cg.on_event(ev("disconnected", T0, "closed by peer"))
    (gap,) = cg.close(T0 + 60)
    assert (gap.exchange, gap.instrument, gap.kind, gap.start_ts, gap.missing) == (
        "binance", "*", "disconnect", T0, -1)
    assert math.isnan(gap.end_ts)
    assert gap.detail.startswith(f"{URL}: closed by peer")
    assert f"still open at {T0 + 60:.3f}" in gap.detail
    assert cg.close(T0 + 61) == []  # reported once
    assert cg.on_event(ev("connected", T0 + 62)) == []


def test_unknown_event_kinds_open_nothing():
    cg = ConnectionGaps()
    assert cg.on_event(ev("subscribed", T0)) == []
    assert cg.close(T0 + 1) == []


# ----------------------------------------------------------------------- InstrumentSilence


def data(*rows: tuple[str, str, str, float]):
    """(exchange, instrument, asset, event_ts) rows as the columns on_data takes."""
    cols = list(zip(*rows)) if rows else [(), (), (), ()]
    return (np.asarray(cols[0], dtype=object), np.asarray(cols[1], dtype=object),
            np.asarray(cols[2], dtype=object), np.asarray(cols[3], dtype=np.float64))


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        InstrumentSilence(0)
    with pytest.raises(ValueError):
        InstrumentSilence(-1.0)


def test_defaults_watch_btc_and_eth_for_ten_seconds():
    s = InstrumentSilence()
    assert s.limit_s == 10.0
    assert s.assets == ("BTC", "ETH")


def test_a_quiet_liquid_instrument_is_a_silence_gap_when_its_data_resumes():
    s = InstrumentSilence(limit_s=10.0)
    assert s.on_data(*data(("binance", "BTCUSDT", "BTC", T0), ("binance", "BTCUSDT", "BTC", T0 + 1))) == []
    s.check(T0 + 11.0)  # exactly 10 s after the last event: not yet (more than the limit)
    assert s.silent == []
    s.check(T0 + 11.5)
    assert s.silent == [("binance", "BTCUSDT")]
    s.check(T0 + 30)  # still silent: the start does not move
    assert s.on_data(*data(("binance", "BTCUSDT", "BTC", T0 + 40))) == [
        Gap("binance", "BTCUSDT", "silence", T0 + 1, T0 + 40, -1, "no data for more than 10 s")
    ]
    assert s.silent == []
    # and quiet again later: a second, separate gap
    s.check(T0 + 55)
    (g,) = s.on_data(*data(("binance", "BTCUSDT", "BTC", T0 + 56)))
    assert (g.start_ts, g.end_ts) == (T0 + 40, T0 + 56)


def test_other_assets_are_not_watched():
    s = InstrumentSilence(limit_s=5.0)
    assert s.on_data(*data(("binance", "NKNUSDT", "NKN", T0), ("binance", "LRCBTC", "LRC", T0))) == []
    s.check(T0 + 100)
    assert s.silent == []
    assert s.close(T0 + 100) == []
    # configured assets are watched instead
    s2 = InstrumentSilence(limit_s=5.0, assets=("NKN",))
    s2.on_data(*data(("binance", "NKNUSDT", "NKN", T0), ("binance", "BTCUSDT", "BTC", T0)))
    s2.check(T0 + 100)
    assert s2.silent == [("binance", "NKNUSDT")]


def test_silence_is_per_exchange_and_instrument():
    s = InstrumentSilence(limit_s=10.0)
    s.on_data(*data(
        ("binance", "BTCUSDT", "BTC", T0),
        ("kraken", "XBT/USD", "BTC", T0 + 8),
        ("binance", "ETHUSDT", "ETH", T0 + 2),
    ))
    s.check(T0 + 12.5)
    assert s.silent == [("binance", "BTCUSDT"), ("binance", "ETHUSDT")]
    gaps = s.on_data(*data(("binance", "ETHUSDT", "ETH", T0 + 13), ("kraken", "XBT/USD", "BTC", T0 + 13)))
    assert gaps == [Gap("binance", "ETHUSDT", "silence", T0 + 2, T0 + 13, -1, "no data for more than 10 s")]
    assert s.silent == [("binance", "BTCUSDT")]


def test_the_latest_event_of_a_batch_counts_whatever_the_row_order():
    s = InstrumentSilence(limit_s=10.0)
    s.on_data(*data(("binance", "BTCUSDT", "BTC", T0 + 5), ("binance", "BTCUSDT", "BTC", T0 + 1)))
    s.check(T0 + 14)  # 9 s after the latest event (T0 + 5): not silent
    assert s.silent == []
    s.check(T0 + 15.5)
    assert s.silent == [("binance", "BTCUSDT")]
    # late data (an event older than the last one) does not end the silence
    assert s.on_data(*data(("binance", "BTCUSDT", "BTC", T0 + 3))) == []
    assert s.silent == [("binance", "BTCUSDT")]


def test_close_reports_still_silent_instruments_with_an_unknown_end():
    s = InstrumentSilence(limit_s=10.0)
    s.on_data(*data(("binance", "BTCUSDT", "BTC", T0), ("binance", "ETHUSDT", "ETH", T0 + 25)))
    gaps = s.close(T0 + 30)  # close checks first: BTC is quiet for 30 s, ETH for 5 s
    assert len(gaps) == 1
    g = gaps[0]
    assert (g.exchange, g.instrument, g.kind, g.start_ts, g.missing) == ("binance", "BTCUSDT", "silence", T0, -1)
    assert math.isnan(g.end_ts)
    assert "no data for more than 10 s" in g.detail and f"still silent at {T0 + 30:.3f}" in g.detail
    assert s.silent == []


def test_empty_data_is_harmless():
    s = InstrumentSilence()
    assert s.on_data(*data()) == []
    s.check(T0)
    assert s.silent == [] and s.close(T0) == []
