"""Tests of dataflows.adapters.symbols.split_symbol."""

from __future__ import annotations

import pytest

from dataflows.adapters.symbols import split_symbol


@pytest.mark.parametrize(
    "symbol, expected",
    [
        ("BTCUSDT", ("BTC", "USDT")),
        ("ETHUSDT", ("ETH", "USDT")),
        ("BTC-USD", ("BTC", "USD")),
        ("XBT/USD", ("BTC", "USD")),  # Kraken's XBT is BTC
        ("BTC/USD", ("BTC", "USD")),
        ("NKNUSDT", ("NKN", "USDT")),
        ("LRCBTC", ("LRC", "BTC")),
        ("RUNEEUR", ("RUNE", "EUR")),
        ("BLZETH", ("BLZ", "ETH")),
        ("BTCUSDC", ("BTC", "USDC")),
        ("BTCUSD", ("BTC", "USD")),
        ("ETH_USDT", ("ETH", "USDT")),
        ("ETH-EUR", ("ETH", "EUR")),
    ],
)
def test_known_pairs(symbol, expected):
    assert split_symbol(symbol) == expected


@pytest.mark.parametrize(
    "symbol, expected",
    [
        ("BTCFDUSD", ("BTC", "FDUSD")),  # not ("BTCFD", "USD")
        ("ETHFDUSD", ("ETH", "FDUSD")),
        ("FDUSDUSDT", ("FDUSD", "USDT")),  # FDUSD as the base
        ("BTCTUSD", ("BTC", "TUSD")),
        ("BTCBUSD", ("BTC", "BUSD")),
    ],
)
def test_longest_quote_suffix_wins(symbol, expected):
    assert split_symbol(symbol) == expected


@pytest.mark.parametrize(
    "symbol, expected",
    [
        # A base ending in T or B followed by USD must not be read as TUSD/BUSD quoted:
        # XBTUSD is Kraken's/BitMEX's BTC/USD, BNBUSD and DOTUSD are Binance.US pairs.
        ("XBTUSD", ("BTC", "USD")),
        ("BNBUSD", ("BNB", "USD")),
        ("DOTUSD", ("DOT", "USD")),
    ],
)
def test_usd_pairs_whose_base_ends_like_a_stablecoin_prefix(symbol, expected):
    assert split_symbol(symbol) == expected


def test_lower_case_symbols_are_upper_cased():
    assert split_symbol("nknusdt") == ("NKN", "USDT")
    assert split_symbol("xbt/usd") == ("BTC", "USD")


@pytest.mark.parametrize("symbol", ["FOOBAR", "ABCXYZ", "USDT", "USD", "BTC"])
def test_unknown_or_bare_symbol_has_no_quote_currency(symbol):
    assert split_symbol(symbol) == (symbol, "")


@pytest.mark.parametrize(
    "symbol, expected",
    [
        # Kraken quotes in XBT too (KSM/XBT, OCEAN/XBT in the recorded Kraken traffic): it is BTC,
        # as LRCBTC's quote is BTC, so BTC-quoted rows agree whatever the venue.
        ("KSM/XBT", ("KSM", "BTC")),
        ("OCEAN/XBT", ("OCEAN", "BTC")),
    ],
)
def test_kraken_xbt_quote_currency_is_btc(symbol, expected):
    assert split_symbol(symbol) == expected
