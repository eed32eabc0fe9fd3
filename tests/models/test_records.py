"""Tests of models.records: columnar batches and their invariants."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from models import records
from models.records import (
    DATA_BATCHES,
    BookUpdateBatch,
    FundingBatch,
    Gap,
    IndexPriceBatch,
    NormalizedBatch,
    OptionTickerBatch,
    QuarantineRecord,
    Quote,
    QuoteBatch,
    RawBatch,
    TradeBatch,
)
from tests.conftest import make_quotes, make_trades

BATCH_RECORDS = [
    (records.TradeBatch, records.Trade),
    (records.QuoteBatch, records.Quote),
    (records.OptionTickerBatch, records.OptionTicker),
    (records.FundingBatch, records.Funding),
    (records.BookUpdateBatch, records.BookUpdate),
    (records.IndexPriceBatch, records.IndexPrice),
]


def test_columns_follow_the_record_fields_plus_raw_and_msg_index():
    assert list(QuoteBatch.COLUMNS) == [
        "exchange", "instrument", "asset", "quote_ccy", "event_ts", "receive_ts",
        "bid", "bid_size_coin", "ask", "ask_size_coin", "raw", "msg_index", "out_of_order",
    ]
    assert QuoteBatch.COLUMNS["bid"] == "float64"
    assert QuoteBatch.COLUMNS["instrument"] == "object"
    assert QuoteBatch.COLUMNS["msg_index"] == "int64"
    assert TradeBatch.COLUMNS["trade_id"] == "object"
    assert TradeBatch.COLUMNS["event_ts"] == "float64"
    assert TradeBatch.COLUMNS["raw"] == "object"
    assert TradeBatch.COLUMNS["msg_index"] == "int64"
    assert BookUpdateBatch.COLUMNS["sequence"] == "int64"
    assert BookUpdateBatch.COLUMNS["is_snapshot"] == "bool"


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
    # without msg_index, each row is its own message
    assert b.msg_index.dtype == np.int64
    assert b.msg_index.tolist() == [0, 1]


def test_from_columns_keeps_a_given_msg_index():
    cols = {name: [1.0, 2.0, 3.0] for name in QuoteBatch.COLUMNS if name != "msg_index"}
    b = QuoteBatch.from_columns(**cols, msg_index=[4, 4, 7])
    assert b.msg_index.tolist() == [4, 4, 7]
    assert b.msg_index.dtype == np.int64


def test_from_columns_with_no_columns_is_an_error_not_an_empty_batch():
    with pytest.raises(ValueError, match="missing columns"):
        QuoteBatch.from_columns()


def test_from_columns_missing_column_is_an_error_naming_it():
    cols = {name: [1.0] for name in QuoteBatch.COLUMNS}
    del cols["ask"]
    with pytest.raises(ValueError, match="ask"):
        QuoteBatch.from_columns(**cols)
    del cols["msg_index"]  # msg_index is filled in, a data column never is
    with pytest.raises(ValueError, match=r"missing columns \['ask'\]"):
        QuoteBatch.from_columns(**cols)


def test_length_mismatch_is_an_error():
    cols = {name: np.asarray([1.0, 2.0], dtype=dt) for name, dt in QuoteBatch.COLUMNS.items()}
    cols["bid"] = np.asarray([1.0])
    with pytest.raises(ValueError, match="differ in length"):
        QuoteBatch(**cols)
    with pytest.raises(ValueError, match="differ in length"):
        TradeBatch.from_columns(**{name: [1] * (3 if name == "price" else 2) for name in TradeBatch.COLUMNS})


def test_empty_has_zero_rows_and_declared_dtypes():
    for cls in DATA_BATCHES.values():
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
    # msg_index is carried as it is: concat does not renumber messages
    assert c.msg_index.tolist() == [0, 1, 0]


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
    assert picked.msg_index.tolist() == [2, 0]  # rows keep the message they came from
    assert len(t.take(np.zeros(3, dtype=bool))) == 0
    # the original is unchanged
    assert t.price.tolist() == [1.0, 2.0, 3.0]


def test_quote_batch_mid_matches_single_record_mid():
    b = make_quotes({"bid": 100.0, "ask": 102.0}, {"bid": 0.3521, "ask": 0.3526})
    np.testing.assert_allclose(b.mid, [101.0, 0.35235])
    q = Quote("binance", "BTCUSDT", "BTC", "USDT", 0.0, 0.0, 100.0, 1.0, 102.0, 1.0)
    assert q.mid == 101.0


def test_column_dict_excludes_the_bookkeeping_columns_by_default():
    b = make_quotes({})
    assert "raw" not in b.column_dict()
    assert "msg_index" not in b.column_dict()
    # out_of_order is bookkeeping the database keeps: the validator sets it, the tables store it
    assert list(b.column_dict()) == [c for c in QuoteBatch.COLUMNS if c not in ("raw", "msg_index")]
    assert b.column_dict()["out_of_order"].dtype == bool
    assert set(b.column_dict(exclude=())) == set(QuoteBatch.COLUMNS)
    assert "raw" in b.column_dict(exclude=("msg_index",))
    assert "msg_index" not in b.column_dict(exclude=("msg_index",))
    for cls, record_cls in BATCH_RECORDS:
        # the stored columns are exactly the record's fields and the out-of-order flag
        assert list(cls.empty().column_dict()) == [
            *(f.name for f in dataclasses.fields(record_cls)), "out_of_order"
        ]


def test_raw_batch_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        RawBatch("binance", np.array([1.0, 2.0]), ["only one"])
    assert len(RawBatch("binance", np.array([1.0]), ["x"])) == 1


@pytest.mark.parametrize("batch_cls, record_cls", BATCH_RECORDS)
def test_every_batch_has_its_record_fields_raw_and_msg_index(batch_cls, record_cls):
    record_fields = [f.name for f in dataclasses.fields(record_cls)]
    assert list(batch_cls.COLUMNS) == [*record_fields, "raw", "msg_index", "out_of_order"]
    assert batch_cls.COLUMNS["raw"] == "object" and batch_cls.COLUMNS["msg_index"] == "int64"
    assert batch_cls.COLUMNS["out_of_order"] == "bool"
    empty = batch_cls.empty()
    assert len(empty) == 0
    for name, dtype in batch_cls.COLUMNS.items():
        assert getattr(empty, name).dtype == np.dtype(dtype)


def test_data_batches_name_the_tables_in_order():
    assert DATA_BATCHES == {
        "trades": TradeBatch, "quotes": QuoteBatch, "option_tickers": OptionTickerBatch,
        "book_updates": BookUpdateBatch, "funding": FundingBatch, "index_prices": IndexPriceBatch,
    }


def test_option_ticker_batch_keeps_booleans_and_floats():
    b = records.OptionTickerBatch.from_columns(
        **{name: [1.0] if dt == "float64" else ([True] if dt == "bool" else ["x"])
           for name, dt in records.OptionTickerBatch.COLUMNS.items() if name != "msg_index"}
    )
    assert b.is_call.dtype == bool and b.is_call[0]
    assert b.strike_usd.dtype == np.float64
    for greek in ("bid_size", "ask_size", "delta", "gamma", "vega", "theta", "rho"):
        assert records.OptionTickerBatch.COLUMNS[greek] == "float64"
    assert b.msg_index.tolist() == [0]


def _book(n: int, msg_index: list[int]) -> BookUpdateBatch:
    return BookUpdateBatch.from_columns(
        exchange=["binance"] * n, instrument=["BTCUSDT"] * n, asset=["BTC"] * n,
        event_ts=[1.0] * n, receive_ts=[1.0] * n, side=["bid"] * n, price=[100.0 + i for i in range(n)],
        size_coin=[1.0] * n, is_snapshot=[False] * n, sequence=[7] * n, raw=["m"] * n,
        msg_index=msg_index,
    )


def _normalized(**kw) -> NormalizedBatch:
    base = dict(exchange="binance", n_messages=5, trades=TradeBatch.empty(), quotes=QuoteBatch.empty(),
                quarantine=(), n_control=0, n_ignored=0)
    return NormalizedBatch(**{**base, **kw})


def test_normalized_batch_defaults_to_empty_new_tables_and_no_gaps():
    nb = _normalized()
    for name, cls in DATA_BATCHES.items():
        assert isinstance(getattr(nb, name), cls) and len(getattr(nb, name)) == 0
    assert nb.gaps == ()
    assert nb.data() == {}
    assert nb.data_messages == 5


def test_normalized_batch_data_lists_the_non_empty_tables_in_table_order():
    quotes = make_quotes({}, {})
    book = _book(3, [2, 2, 3])
    gap = Gap("binance", "BTCUSDT", "sequence", 1.0, 1.0, 4, "ids 3..6 missing")
    rec = QuarantineRecord("binance", 1.0, "binance invalid JSON: x", "{")
    nb = _normalized(quotes=quotes, book_updates=book, gaps=(gap,), quarantine=(rec,), n_control=1)
    data = nb.data()
    assert list(data) == ["quotes", "book_updates"]
    assert data["quotes"] is quotes and data["book_updates"] is book
    assert nb.gaps == (gap,)
    # messages, not rows: 5 messages, one control, one quarantined
    assert nb.data_messages == 3
