"""Instrument symbols → (asset, quote currency).

hedgeflow aggregates by asset ("BTC", "ETH"), so every adapter must say which asset an instrument
prices and in which currency. Exchanges spell the same pair differently (BTCUSDT, BTC-USD, XBT/USD);
the rules live here once. Kraken's XBT is BTC, as base and as quote currency.

Concatenated symbols are ambiguous: ``DOTUSD`` could be DO/TUSD and ``BTCTUSD`` BTCT/USD. A split
whose base is a known asset wins; otherwise quote currencies are tried in order of how common
they are, so plain USD beats TUSD and BUSD.
"""

from __future__ import annotations

from functools import lru_cache

# Most common first: the order breaks ties when no split gives a known base asset.
_QUOTES_BY_PREFERENCE = (
    "USDT", "USDC", "USD", "FDUSD", "BUSD", "TUSD", "EUR", "GBP", "TRY", "BRL",
    "BTC", "XBT", "ETH", "BNB",
)
_ALIASES = {"XBT": "BTC", "XXBT": "BTC", "XETH": "ETH", "ZUSD": "USD", "ZEUR": "EUR"}
KNOWN_ASSETS = frozenset(
    {
        "BTC", "XBT", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "DOT", "LTC", "LINK", "AVAX",
        "MATIC", "TRX", "BCH", "ATOM", "UNI", "XLM", "NEAR", "APT", "ARB", "OP",
    }
)


def _canonical(code: str) -> str:
    return _ALIASES.get(code, code)


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
            return _canonical(base), _canonical(quote)
    splits = [
        (s[: -len(q)], q) for q in _QUOTES_BY_PREFERENCE if s.endswith(q) and len(s) > len(q)
    ]
    if not splits:
        return s, ""
    base, quote = next(((b, q) for b, q in splits if b in KNOWN_ASSETS), splits[0])
    return _canonical(base), _canonical(quote)
