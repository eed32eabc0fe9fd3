"""The DuckDB schema. Timestamps are TIMESTAMPTZ in UTC; prices DOUBLE in the quote currency.

Tick tables carry ``out_of_order``: true for a tick whose event time is earlier than the previous
tick of its instrument (stored flagged, or quarantined instead, by ``storage.out_of_order``).

``create_schema`` is idempotent: it runs at every start and only adds what is missing.
"""

from __future__ import annotations

import duckdb

TABLES: dict[str, str] = {
    "trades": """
        CREATE TABLE IF NOT EXISTS trades (
            exchange    VARCHAR NOT NULL,
            instrument  VARCHAR NOT NULL,
            asset       VARCHAR NOT NULL,
            quote_ccy   VARCHAR NOT NULL,
            event_ts    TIMESTAMPTZ NOT NULL,
            receive_ts  TIMESTAMPTZ NOT NULL,
            trade_id    VARCHAR NOT NULL,
            price       DOUBLE NOT NULL,
            size_coin   DOUBLE NOT NULL,
            side        VARCHAR NOT NULL,
            out_of_order BOOLEAN NOT NULL DEFAULT false,
            -- a trade is stored once: a repeat is refused by the database itself
            PRIMARY KEY (exchange, instrument, trade_id)
        )""",
    "quotes": """
        CREATE TABLE IF NOT EXISTS quotes (
            exchange      VARCHAR NOT NULL,
            instrument    VARCHAR NOT NULL,
            asset         VARCHAR NOT NULL,
            quote_ccy     VARCHAR NOT NULL,
            event_ts      TIMESTAMPTZ NOT NULL,
            receive_ts    TIMESTAMPTZ NOT NULL,
            bid           DOUBLE NOT NULL,
            bid_size_coin DOUBLE,
            ask           DOUBLE NOT NULL,
            ask_size_coin DOUBLE,
            out_of_order BOOLEAN NOT NULL DEFAULT false
        )""",
    "option_tickers": """
        CREATE TABLE IF NOT EXISTS option_tickers (
            exchange       VARCHAR NOT NULL,
            instrument     VARCHAR NOT NULL,
            asset          VARCHAR NOT NULL,
            event_ts       TIMESTAMPTZ NOT NULL,
            receive_ts     TIMESTAMPTZ NOT NULL,
            expiry_utc     TIMESTAMPTZ NOT NULL,
            strike_usd     DOUBLE NOT NULL,
            is_call        BOOLEAN NOT NULL,
            bid_coin       DOUBLE,
            bid_size       DOUBLE,
            ask_coin       DOUBLE,
            ask_size       DOUBLE,
            mark_coin      DOUBLE NOT NULL,
            mark_iv        DOUBLE,
            bid_iv         DOUBLE,
            ask_iv         DOUBLE,
            underlying_usd DOUBLE NOT NULL,
            index_usd      DOUBLE,
            open_interest  DOUBLE,
            delta          DOUBLE,
            gamma          DOUBLE,
            vega           DOUBLE,
            theta          DOUBLE,
            rho            DOUBLE,
            out_of_order BOOLEAN NOT NULL DEFAULT false
        )""",
    "book_updates": """
        CREATE TABLE IF NOT EXISTS book_updates (
            exchange     VARCHAR NOT NULL,
            instrument   VARCHAR NOT NULL,
            asset        VARCHAR NOT NULL,
            event_ts     TIMESTAMPTZ NOT NULL,
            receive_ts   TIMESTAMPTZ NOT NULL,
            side         VARCHAR NOT NULL,
            price        DOUBLE NOT NULL,
            size_coin    DOUBLE NOT NULL,
            is_snapshot  BOOLEAN NOT NULL,
            sequence     BIGINT NOT NULL,
            out_of_order BOOLEAN NOT NULL DEFAULT false
        )""",
    "funding": """
        CREATE TABLE IF NOT EXISTS funding (
            exchange        VARCHAR NOT NULL,
            instrument      VARCHAR NOT NULL,
            asset           VARCHAR NOT NULL,
            event_ts        TIMESTAMPTZ NOT NULL,
            receive_ts      TIMESTAMPTZ NOT NULL,
            mark_usd        DOUBLE NOT NULL,
            index_usd       DOUBLE,
            funding_rate    DOUBLE NOT NULL,
            next_funding_ts TIMESTAMPTZ,
            out_of_order BOOLEAN NOT NULL DEFAULT false
        )""",
    "index_prices": """
        CREATE TABLE IF NOT EXISTS index_prices (
            exchange    VARCHAR NOT NULL,
            index_name  VARCHAR NOT NULL,
            asset       VARCHAR NOT NULL,
            event_ts    TIMESTAMPTZ NOT NULL,
            receive_ts  TIMESTAMPTZ NOT NULL,
            price_usd   DOUBLE NOT NULL,
            out_of_order BOOLEAN NOT NULL DEFAULT false
        )""",
    "quarantine": """
        CREATE TABLE IF NOT EXISTS quarantine (
            exchange    VARCHAR NOT NULL,
            receive_ts  TIMESTAMPTZ NOT NULL,
            reason      VARCHAR NOT NULL,
            raw         VARCHAR NOT NULL
        )""",
    "oracle_prices": """
        CREATE TABLE IF NOT EXISTS oracle_prices (
            asset       VARCHAR NOT NULL,
            ts          TIMESTAMPTZ NOT NULL,
            price       DOUBLE,
            confidence  DOUBLE,
            n_sources   INTEGER NOT NULL,
            status      VARCHAR NOT NULL,
            reason      VARCHAR NOT NULL,
            sources     VARCHAR[] NOT NULL,
            rejected    VARCHAR[] NOT NULL DEFAULT []  -- "source: reason" for each left out
        )""",
    "alerts": """
        CREATE TABLE IF NOT EXISTS alerts (
            ts        TIMESTAMPTZ NOT NULL,
            kind      VARCHAR NOT NULL,
            severity  VARCHAR NOT NULL,
            message   VARCHAR NOT NULL,
            subject   VARCHAR NOT NULL
        )""",
    "volatility": """
        CREATE TABLE IF NOT EXISTS volatility (
            asset            VARCHAR NOT NULL,
            ts               TIMESTAMPTZ NOT NULL,
            window_s         DOUBLE NOT NULL,
            n_returns        INTEGER NOT NULL,
            vol_annual       DOUBLE,     -- annualized fraction over 365 days; NULL before any return
            ewma_vol_annual  DOUBLE,
            ready            BOOLEAN NOT NULL
        )""",
    "surface_fits": """
        CREATE TABLE IF NOT EXISTS surface_fits (
            asset                   VARCHAR NOT NULL,
            ts                      TIMESTAMPTZ NOT NULL,
            method                  VARCHAR NOT NULL,
            n_options               INTEGER NOT NULL,
            n_expiries              INTEGER NOT NULL,
            n_dropped               INTEGER NOT NULL,
            rmse_vol                DOUBLE,
            within_spread_fraction  DOUBLE,
            arbitrage_ok            BOOLEAN NOT NULL,
            min_g                   DOUBLE,
            fit_ms                  DOUBLE NOT NULL,
            spot_usd                DOUBLE,
            expiry_years            DOUBLE[] NOT NULL,
            atm_vol_annual          DOUBLE[] NOT NULL,
            rr25_vol_annual         DOUBLE[] NOT NULL,
            bf25_vol_annual         DOUBLE[] NOT NULL,
            params_json             VARCHAR NOT NULL
        )""",
    "premium_quotes": """
        CREATE TABLE IF NOT EXISTS premium_quotes (
            asset           VARCHAR NOT NULL,
            ts              TIMESTAMPTZ NOT NULL,
            tier            VARCHAR NOT NULL,
            strike_usd      DOUBLE NOT NULL,
            expiry_utc      TIMESTAMPTZ NOT NULL,
            amount_coin     DOUBLE NOT NULL,
            spot_usd        DOUBLE NOT NULL,
            forward_usd           DOUBLE NOT NULL,   -- the expiry's forward the put is priced on
            vol_strike_annual     DOUBLE,
            vol_atm_annual        DOUBLE,
            vol_reference_annual  DOUBLE,
            premium_usd     DOUBLE,
            intrinsic_usd   DOUBLE,
            time_value_usd  DOUBLE,
            volatility_usd  DOUBLE,
            skew_usd        DOUBLE,
            jump_usd        DOUBLE,
            margin_usd      DOUBLE,
            rounding_usd    DOUBLE
        )""",
    "policy_risk": """
        CREATE TABLE IF NOT EXISTS policy_risk (
            asset                       VARCHAR NOT NULL,
            ts                          TIMESTAMPTZ NOT NULL,
            tier                        VARCHAR NOT NULL,
            strike_usd                  DOUBLE NOT NULL,
            expiry_utc                  TIMESTAMPTZ NOT NULL,
            amount_coin                 DOUBLE NOT NULL,
            spot_usd                    DOUBLE NOT NULL,
            premium_usd                 DOUBLE,
            model                       VARCHAR NOT NULL,
            n_paths                     INTEGER NOT NULL,
            expected_payoff_usd         DOUBLE,
            expected_payoff_stderr_usd  DOUBLE,
            probability_exercise        DOUBLE,
            probability_touch           DOUBLE,
            seller_var_usd              DOUBLE,   -- a loss, positive USD
            seller_es_usd               DOUBLE,
            confidence                  DOUBLE NOT NULL
        )""",
    "position_states": """
        CREATE TABLE IF NOT EXISTS position_states (
            run_id              VARCHAR NOT NULL,   -- "live", or the backtest run
            asset               VARCHAR NOT NULL,
            ts                  TIMESTAMPTZ NOT NULL,
            mode                VARCHAR NOT NULL,
            spot_coin           DOUBLE NOT NULL,
            long_perp_coin      DOUBLE NOT NULL,
            short_perp_coin     DOUBLE NOT NULL,
            quarterly_coin      DOUBLE NOT NULL,
            put_coin            DOUBLE NOT NULL,
            delta_coin          DOUBLE NOT NULL,
            hedge_ratio         DOUBLE NOT NULL,
            price_usd           DOUBLE,
            unrealized_pnl_usd  DOUBLE,
            realized_pnl_usd    DOUBLE
        )""",
    "hedge_decisions": """
        CREATE TABLE IF NOT EXISTS hedge_decisions (
            run_id   VARCHAR NOT NULL,
            asset    VARCHAR NOT NULL,
            ts       TIMESTAMPTZ NOT NULL,
            source   VARCHAR NOT NULL,   -- hedge, treasury, safety
            event    VARCHAR NOT NULL,
            detail   VARCHAR NOT NULL
        )""",
    "order_decisions": """
        CREATE TABLE IF NOT EXISTS order_decisions (
            run_id         VARCHAR NOT NULL,
            ts             TIMESTAMPTZ NOT NULL,
            order_id       VARCHAR NOT NULL,
            asset          VARCHAR NOT NULL,
            kind           VARCHAR NOT NULL,
            side           VARCHAR NOT NULL,
            quantity_coin  DOUBLE NOT NULL,
            reason         VARCHAR NOT NULL,
            verdict        VARCHAR NOT NULL,   -- approved, rejected
            rule           VARCHAR NOT NULL,   -- the safety rule that refused it ("" if approved)
            detail         VARCHAR NOT NULL
        )""",
    "loan_updates": """
        CREATE TABLE IF NOT EXISTS loan_updates (
            run_id                VARCHAR NOT NULL,
            ts                    TIMESTAMPTZ NOT NULL,
            principal_usd         DOUBLE NOT NULL,
            accrued_interest_usd  DOUBLE NOT NULL,
            interest_paid_usd     DOUBLE NOT NULL,
            principal_paid_usd    DOUBLE NOT NULL,
            reserve_usd           DOUBLE NOT NULL,
            reserve_deployed_usd  DOUBLE NOT NULL,
            collateral_usd        DOUBLE,
            ltv                   DOUBLE,
            band                  VARCHAR NOT NULL,
            trading_state         VARCHAR NOT NULL
        )""",
    # The desk's fills and equity: a backtest's under its run id, the live desk's in desk_*.
    **{
        f"{prefix}_trades": f"""
        CREATE TABLE IF NOT EXISTS {prefix}_trades (
            run_id         VARCHAR NOT NULL,
            ts             TIMESTAMPTZ NOT NULL,
            order_id       VARCHAR NOT NULL,
            asset          VARCHAR NOT NULL,
            kind           VARCHAR NOT NULL,
            side           VARCHAR NOT NULL,
            venue          VARCHAR NOT NULL,
            quantity_coin  DOUBLE NOT NULL,
            price_usd      DOUBLE NOT NULL,
            fee_usd        DOUBLE NOT NULL,
            liquidity      VARCHAR NOT NULL,
            reason         VARCHAR NOT NULL
        )"""
        for prefix in ("backtest", "desk")
    },
    **{
        f"{prefix}_equity": f"""
        CREATE TABLE IF NOT EXISTS {prefix}_equity (
            run_id              VARCHAR NOT NULL,
            ts                  TIMESTAMPTZ NOT NULL,
            cash_usd            DOUBLE NOT NULL,
            position_value_usd  DOUBLE,            -- NULL while the price is unknown
            reserve_usd         DOUBLE NOT NULL,
            loan_usd            DOUBLE NOT NULL,
            equity_usd          DOUBLE,            -- cash + position value + reserve - loan
            fees_usd            DOUBLE NOT NULL,   -- to date
            funding_usd         DOUBLE NOT NULL,   -- to date, positive = paid
            ltv                 DOUBLE
        )"""
        for prefix in ("backtest", "desk")
    },
    "ingest_stats": """
        CREATE TABLE IF NOT EXISTS ingest_stats (
            exchange   VARCHAR NOT NULL,
            day        DATE NOT NULL,
            messages   BIGINT NOT NULL,
            raw_bytes  BIGINT NOT NULL,  -- UTF-8 size of the messages as received
            PRIMARY KEY (exchange, day)
        )""",
    "gaps": """
        CREATE TABLE IF NOT EXISTS gaps (
            exchange     VARCHAR NOT NULL,
            instrument   VARCHAR NOT NULL,
            kind         VARCHAR NOT NULL,
            start_ts     TIMESTAMPTZ NOT NULL,
            end_ts       TIMESTAMPTZ,
            missing      BIGINT,
            detail       VARCHAR NOT NULL
        )""",
    # Every operator action of the admin page, and every refused attempt (storage/audit.py).
    "audit": """
        CREATE TABLE IF NOT EXISTS audit (
            ts        TIMESTAMPTZ NOT NULL,
            "user"    VARCHAR NOT NULL,   -- the logged-in user ("" when nobody was)
            action    VARCHAR NOT NULL,   -- login, pause_trading, reset_breaker, approve, ...
            target    VARCHAR NOT NULL,   -- what it acted on (a breaker, a parameter, ...)
            detail    VARCHAR NOT NULL,
            outcome   VARCHAR NOT NULL    -- ok, refused, failed, noop, applied, deferred
        )""",
}


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    from storage.chain import create_chain_schema

    for ddl in TABLES.values():
        con.execute(ddl)
    create_chain_schema(con)
