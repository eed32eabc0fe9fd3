"""The hedge desk as a node of the graph: it assembles each asset's market state from the
graph's streams and steps ``models.desk.HedgeDesk`` on every oracle price.

```
oracle prices ──────────────┐
volatility (24 h, ready) ───┤
funding (perp mark, rate) ──┼─► HedgeNode ─► desk steps ─► position_states, hedge_decisions,
surfaces (ATM implied vol) ─┘                              order_decisions, backtest_trades,
                                                            loan_updates, backtest_equity, alerts
```

The oracle price is the spot; the perpetual's mark and funding rate come from the funding stream
(live: the venues' mark-price channels) or from a funding history (backtests). Without any
perpetual feed (a backtest of the perpetual's own prices) the mark is the spot; once a feed has
been seen, a mark older than ``MARK_MAX_AGE_S`` (a funding rate older than ``FUNDING_MAX_AGE_S``,
an implied vol older than ``IV_MAX_AGE_S``) is unknown. An oracle price that is not "ok" reaches
the desk as an unknown (NaN) spot, once the desk has started: it starts at the first "ok" price
(before it, at a run's start, the oracle has not heard enough sources yet, which is not an
anomaly to trip the oracle breaker on). Unknown inputs make the engine and the gate refuse to trade:
they never guess.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from pathlib import Path

import numpy as np

from models.desk import DeskStep, HedgeDesk
from models.hedge import MarketState
from models.records import (
    EquityRecord,
    FillRecord,
    HedgeDecisionRecord,
    OrderRecord,
    PositionRecord,
    TreasuryRecord,
)

THIRTY_DAYS_YEARS = 30.0 / 365.0
# How old a live input may be before the desk treats it as unknown (seconds): the venues send
# the perpetual's mark and funding every few seconds, the surface is refitted every few seconds.
MARK_MAX_AGE_S = 60.0
FUNDING_MAX_AGE_S = 600.0
IV_MAX_AGE_S = 900.0


class HedgeNode:
    """Market state for one asset's desk, from the graph's streams; ``on_prices`` steps it."""

    def __init__(self, desk: HedgeDesk, *, run_id: str = "live", backtest: bool = False,
                 funding_history=None,
                 funding_exchange: str = "", pause_file: str = "", flatten_file: str = "") -> None:
        self.desk = desk
        self.funding_exchange = funding_exchange
        self.pause_file = Path(pause_file) if pause_file else None
        self.flatten_file = Path(flatten_file) if flatten_file else None
        self._paused_by_file = False
        self.asset = desk.asset
        self.run_id = run_id
        self.backtest = backtest
        self.vol_24h_annual = math.nan
        self.implied_vol_annual = math.nan
        self.perp_mark_usd = math.nan
        self.funding_rate = math.nan
        self.funding_interval_h = 8.0
        # When each live input was last seen (epoch s): an input older than its limit is unknown,
        # and the desk does not trade on it.
        self._mark_ts = self._funding_ts = self._iv_ts = -math.inf
        # A backtest's settled funding: (times, rates) in time order.
        self._funding = funding_history
        # ... and as lists taken now, searched with bisect (numpy's searchsorted costs a
        # microsecond or two a price): for float times in order without NaN, where both find
        # the same index.
        self._funding_lists: tuple[list, list] | None = None
        if funding_history is not None:
            times, rates = (np.asarray(a) for a in funding_history)
            if (times.dtype == np.float64 and times.ndim == 1 and rates.ndim == 1
                    and not np.isnan(times).any() and bool(np.all(times[1:] >= times[:-1]))):
                self._funding_lists = (times.tolist(), rates.tolist())
        self._vol_queue: deque[tuple[float, float]] = deque()
        self.started = False  # set by the first "ok" oracle price of the asset

    def on_volatility(self, estimates) -> None:
        """Estimates are kept by their bar's end until a price at or after it is stepped: a batch
        of prices (a backtest's chunk) then sees, price by price, only the volatility of bars
        that had closed by its time, never a later one."""
        for e in estimates:
            if e.asset == self.asset:
                vol = e.vol_annual if e.ready and e.vol_annual > 0.0 else math.nan
                self._vol_queue.append((e.ts, vol))

    def _vol_at(self, ts_s: float) -> float:
        queue = self._vol_queue
        while queue and queue[0][0] <= ts_s:
            self.vol_24h_annual = queue.popleft()[1]
        return self.vol_24h_annual

    def on_surfaces(self, outcomes) -> None:
        for o in outcomes:
            if o.asset == self.asset and o.fit is not None:
                self.implied_vol_annual = float(o.fit.atm_vol(THIRTY_DAYS_YEARS))
                self._iv_ts = o.ts

    def on_funding(self, batch) -> None:
        """A live funding batch (models.records.FundingBatch): the asset's perpetual mark and rate."""
        mine = batch.asset == self.asset
        if self.funding_exchange:
            mine &= batch.exchange == self.funding_exchange
        mine = np.flatnonzero(mine)
        if mine.size:
            last = mine[np.argmax(batch.event_ts[mine])]
            ts = float(batch.event_ts[last])
            if np.isfinite(batch.mark_usd[last]):
                self.perp_mark_usd, self._mark_ts = float(batch.mark_usd[last]), ts
            if np.isfinite(batch.funding_rate[last]):
                self.funding_rate, self._funding_ts = float(batch.funding_rate[last]), ts

    def on_tick(self, now_s: float) -> None:
        """The operator's channel (live): while ``pause_file`` exists trading is paused (reducing
        orders still pass); a ``flatten_file`` closes the futures once and is then removed. Its
        text, if any, is the reason recorded."""
        gate = self.desk.gate
        if self.pause_file is not None:
            present = self.pause_file.exists()
            if present and not self._paused_by_file:
                gate.pause(now_s, "operator", f"{self.pause_file} exists")
                self._paused_by_file = True
            elif not present and self._paused_by_file:
                gate.resume(now_s, "operator", f"{self.pause_file} removed")
                self._paused_by_file = False
        if self.flatten_file is not None and self.flatten_file.exists():
            why = self.flatten_file.read_text(encoding="utf-8", errors="replace").strip()
            self.flatten_file.unlink(missing_ok=True)
            self.desk.request_flatten("operator", why or "hedgeflow flatten")

    def _funding_rate_at(self, ts_s: float) -> float:
        if self._funding is None:
            if self._funding_ts > -math.inf and ts_s - self._funding_ts > FUNDING_MAX_AGE_S:
                return math.nan  # the feed that gave it went quiet
            return self.funding_rate
        if self._funding_lists is not None:
            times, rates = self._funding_lists
            i = bisect_right(times, ts_s) - 1
            return float(rates[i]) if i >= 0 else math.nan
        times, rates = self._funding
        i = int(np.searchsorted(times, ts_s, side="right")) - 1
        return float(rates[i]) if i >= 0 else math.nan

    def on_prices(self, prices) -> list[DeskStep]:
        steps = []
        desk, asset = self.desk, self.asset
        for p in prices:
            ts = p.ts
            if p.asset != asset or ts < desk._last_ts:
                continue
            ok = p.status == "ok" and math.isfinite(p.price_usd)
            if not ok and not self.started:
                continue
            self.started = True
            spot = p.price_usd if ok else math.nan
            if self._mark_ts == -math.inf:
                mark = spot  # no perpetual feed (a backtest of the perpetual's own prices)
            elif ts - self._mark_ts <= MARK_MAX_AGE_S:
                mark = self.perp_mark_usd
            else:
                mark = math.nan  # the mark went stale: unknown, so nothing trades on it
            iv = self.implied_vol_annual if ts - self._iv_ts <= IV_MAX_AGE_S else math.nan
            steps.append(desk.step(MarketState(
                ts_s=ts, asset=asset, spot_usd=spot, perp_mark_usd=mark,
                funding_rate_per_interval=self._funding_rate_at(ts),
                funding_interval_h=self.funding_interval_h, vol_24h_annual=self._vol_at(ts),
                implied_vol_annual=iv, oracle_ok=ok,
            )))
        return steps


def desk_records(steps: list[DeskStep], run_id: str, asset: str, *,
                 backtest: bool = False) -> dict[str, list]:
    """The rows of each hedging table for a list of desk steps; fills and equity go to
    ``backtest_trades``/``backtest_equity`` for a backtest, ``desk_trades``/``desk_equity`` live."""
    prefix = "backtest" if backtest else "desk"
    positions, decisions, orders, trades, loans, equity = [], [], [], [], [], []
    for st in steps:
        s, ts = st.state, st.ts_s
        positions.append(PositionRecord(
            run_id, asset, ts, st.mode, s.spot_coin, s.long_perp_coin, s.short_perp_coin,
            s.quarterly_coin, s.put_coin, st.delta_coin, st.hedge_ratio, st.spot_usd,
            st.unrealized_pnl_usd, st.realized_pnl_usd))
        # Most steps decide, order and fill nothing (empty tuples): those loops are skipped.
        if st.events:
            for event in st.events:
                name, _, detail = event.partition(" ")
                decisions.append(HedgeDecisionRecord(run_id, asset, ts, "hedge", name, detail))
        if st.approved:
            for o in st.approved:
                orders.append(OrderRecord(
                    run_id, ts, o.order_id, o.asset, o.kind, o.side, o.quantity_coin, o.reason,
                    "approved", "", ""))
        if st.rejections:
            for r in st.rejections:
                o = r.order
                orders.append(OrderRecord(
                    run_id, ts, o.order_id, o.asset, o.kind, o.side, o.quantity_coin, o.reason,
                    "rejected", r.rule, r.detail))
        if st.fills:
            for f, reason in zip(st.fills, st.fill_reasons):
                trades.append(FillRecord(
                    run_id, f.ts_s, f.order_id, f.asset, f.kind, f.side, f.venue, f.quantity_coin,
                    f.price_usd, f.fee_usd, f.liquidity, reason))
        if st.treasury is not None:
            loans.append(TreasuryRecord(
                run_id, ts, st.principal_usd, st.accrued_interest_usd, st.interest_paid_usd,
                st.principal_paid_usd, st.reserve_usd, st.reserve_deployed_usd,
                st.treasury.collateral_value_usd, st.ltv, st.band, st.trading_state))
        equity.append(EquityRecord(
            run_id, ts, st.cash_usd, st.position_value_usd, st.reserve_usd, st.loan_usd,
            st.equity_usd, st.fees_usd, st.funding_usd, st.ltv))
    tables = {"position_states": positions, "hedge_decisions": decisions, "order_decisions": orders,
              f"{prefix}_trades": trades, "loan_updates": loans, f"{prefix}_equity": equity}
    return {name: rows for name, rows in tables.items() if rows}
