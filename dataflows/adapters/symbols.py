"""Instrument symbols → (asset, quote currency).

hedgeflow aggregates by asset ("BTC", "ETH"), so every adapter must say which asset an instrument
prices and in which currency. Exchanges spell the same pair differently (BTCUSDT, BTC-USD, XBT/USD);
the rules live here once. Kraken's XBT is BTC.
"""

from __future__ import annotations

from functools import lru_cache

# Longest first, so "FDUSD" wins over "USD" and "USDT" over "USD".
_QUOTE_SUFFIXES = tuple(
    sorted(
        ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USD", "EUR", "GBP", "TRY", "BRL",
         "BTC", "ETH", "BNB"),
        key=len,
        reverse=True,
    )
)
_ASSET_ALIASES = {"XBT": "BTC", "XXBT": "BTC", "XETH": "ETH"}


@lru_cache(maxsize=4096)
def split_symbol(symbol: str) -> tuple[str, str]:
    """Split an exchange symbol into (asset, quote currency), both upper case.

    Accepts concatenated (``BTCUSDT``) and separated (``BTC-USD``, ``XBT/USD``) forms. A symbol
    whose quote currency is unknown returns ``(symbol, "")``: its rows are stored but the oracle,
    which prices in USD, does not use them.
    """
    s = symbol.upper()
    for sep in ("-", "/", "_"):
        if sep in s:
            base, _, quote = s.partition(sep)
            return _ASSET_ALIASES.get(base, base), quote
    for quote in _QUOTE_SUFFIXES:
        if s.endswith(quote) and len(s) > len(quote):
            base = s[: -len(quote)]
            return _ASSET_ALIASES.get(base, base), quote
    return s, ""
