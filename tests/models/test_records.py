"""Tests of models.records: columnar batches and their invariants."""

from __future__ import annotations

import numpy as np
import pytest

from models import records
from models.records import Quote, QuoteBatch, RawBatch, TradeBatch
from tests.conftest import make_quotes, make_trades


def test_columns_follow_the_record_fields_plus_raw():
    assert list(QuoteBatch.COLUMNS) == [
        "exchange", "instrument", "asset", "quote_ccy", "event_ts", "receive_ts",
        "bid", "bid_size_coin", "ask", "ask_size_coin", "raw",
    ]
    assert QuoteBatch.COLUMNS["bid"] == "float64"
    assert QuoteBatch.COLUMNS["instrument"] == "object"
    assert TradeBatch.COLUMNS["trade_id"] == "object"
    assert TradeBatch.COLUMNS["event_ts"] == "float64"
    assert TradeBatch.COLUMNS["raw"] == "object"


def test_from_columns_casts_lists_to_declared_dtypes():
    b = QuoteBatch.from_columns(
        exchange=["binance", "binance"], instrument=["BTCUSDT", "ETHUSDT"], asset=["BTC", "ETH"],
        quote_ccy=["USDT", "USDT"], event_ts=[1, 2], receive_ts=[1.5, 2.5],
        bid=[100, 10], bid_size_coin=["1.5", 2], ask=[101, 11], ask_size_coin=[3, 4],
        raw=["a", "b"],
    )
    assert len(b) == 2
    assert b.event_ts.dtype == np.float64 and b.bid.dtype == np.float64
    assert b.bid_size_coin.tolist() == [1.5, 2.0]  # "1.5" cast to float
    assert b.instrument.dtype == object
    assert b.instrument.tolist() == ["BTCUSDT", "ETHUSDT"]
    assert b.raw.tolist() == ["a", "b"]


def test_from_columns_missing_column_is_an_error_naming_it():
    cols = {name: [1.0] for name in QuoteBatch.COLUMNS}
    del cols["ask"]
    with pytest.raises(ValueError, match="ask"):
        QuoteBatch.from_columns(**cols)


def test_length_mismatch_is_an_error():
    cols = {name: np.asarray([1.0, 2.0], dtype=dt) for name, dt in QuoteBatch.COLUMNS.items()}
    cols["bid"] = np.asarray([1.0])
    with pytest.raises(ValueError, match="differ in length"):
        QuoteBatch(**cols)
    with pytest.raises(ValueError, match="differ in length"):
        TradeBatch.from_columns(**{name: [1] * (3 if name == "price" else 2) for name in TradeBatch.COLUMNS})


def test_empty_has_zero_rows_and_declared_dtypes():
    for cls in (QuoteBatch, TradeBatch):
        e = cls.empty()
        assert len(e) == 0
        for name, dt in cls.COLUMNS.items():
            col = getattr(e, name)
            assert col.shape == (0,)
            assert col.dtype == np.dtype(dt), name


def test_concat_keeps_row_order_and_skips_empties():
    a = make_quotes({"bid": 1.0, "ask": 2.0}, {"bid": 3.0, "ask": 4.0})
    b = make_quotes({"bid": 5.0, "ask": 6.0, "instrument": "ETHUSDT"})
    c = QuoteBatch.concat([a, QuoteBatch.empty(), b])
    assert len(c) == 3
    assert c.bid.tolist() == [1.0, 3.0, 5.0]
    assert c.instrument.tolist() == ["BTCUSDT", "BTCUSDT", "ETHUSDT"]
    assert c.bid.dtype == np.float64


def test_concat_of_nothing_or_only_empties_is_empty():
    assert len(QuoteBatch.concat([])) == 0
    e = TradeBatch.concat([TradeBatch.empty(), TradeBatch.empty()])
    assert isinstance(e, TradeBatch) and len(e) == 0


def test_take_by_mask_and_by_index():
    t = make_trades({"price": 1.0}, {"price": 2.0}, {"price": 3.0})
    masked = t.take(np.array([True, False, True]))
    assert isinstance(masked, TradeBatch)
    assert masked.price.tolist() == [1.0, 3.0]
    assert masked.trade_id.tolist() == ["1", "3"]
    picked = t.take(np.array([2, 0]))
    assert picked.price.tolist() == [3.0, 1.0]
    assert picked.raw.tolist() == ["trade row 2", "trade row 0"]
    assert len(t.take(np.zeros(3, dtype=bool))) == 0
    # the original is unchanged
    assert t.price.tolist() == [1.0, 2.0, 3.0]


def test_quote_batch_mid_matches_single_record_mid():
    b = make_quotes({"bid": 100.0, "ask": 102.0}, {"bid": 0.3521, "ask": 0.3526})
    np.testing.assert_allclose(b.mid, [101.0, 0.35235])
    q = Quote("binance", "BTCUSDT", "BTC", "USDT", 0.0, 0.0, 100.0, 1.0, 102.0, 1.0)
    assert q.mid == 101.0


def test_column_dict_excludes_raw_by_default():
    b = make_quotes({})
    assert "raw" not in b.column_dict()
    assert set(b.column_dict()) == set(QuoteBatch.COLUMNS) - {"raw"}
    assert "raw" in b.column_dict(exclude=())


def test_raw_batch_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        RawBatch("binance", np.array([1.0, 2.0]), ["only one"])
    assert len(RawBatch("binance", np.array([1.0]), ["x"])) == 1


@pytest.mark.parametrize(
    "batch_cls, record_cls",
    [
        (records.TradeBatch, records.Trade),
        (records.QuoteBatch, records.Quote),
        (records.OptionTickerBatch, records.OptionTicker),
        (records.FundingBatch, records.Funding),
    ],
)
def test_every_batch_has_its_record_fields_and_raw(batch_cls, record_cls):
    import dataclasses

    record_fields = [f.name for f in dataclasses.fields(record_cls)]
    assert list(batch_cls.COLUMNS) == [*record_fields, "raw"]
    empty = batch_cls.empty()
    assert len(empty) == 0
    for name, dtype in batch_cls.COLUMNS.items():
        assert getattr(empty, name).dtype == np.dtype(dtype)


def test_option_ticker_batch_keeps_booleans_and_floats():
    b = records.OptionTickerBatch.from_columns(
        **{name: [1.0] if dt == "float64" else ([True] if dt == "bool" else ["x"])
           for name, dt in records.OptionTickerBatch.COLUMNS.items()}
    )
    assert b.is_call.dtype == bool and b.is_call[0]
    assert b.strike_usd.dtype == np.float64
