"""The hedge desk: plan 001's engine, the safety gate, a paper venue and the treasury, composed
into one small state machine that the graph (live) and the backtest drive alike.

Per market update (``step``) the desk, in this order:

1. settles perpetual funding due since the last step (at the venue's funding times, on the perp
   position at the mark, at the rate the market state carries: ``funding_rate_per_interval``);
2. marks the futures to market (variation margin: their P&L since the last mark moves to cash);
3. marks the treasury: the loan accrues, the LTV is read against the collateral (``Q_B`` × spot),
   the reserve deploys onto the loan by plan 001's formula, and the LTV band decides the trading
   state (ACTIVE, REDUCING, HALTED);
4. runs the safety gate's time-driven rules (dead man's switch on the data's heartbeat, panic
   close, breakers); their decisions (flatten orders) go first;
5. steps the hedge engine; while the trading state allows no new positions, only reduce-only
   orders go on (an EMERGENCY band flattens the futures);
6. passes every order through the gate (``check_all``): approved orders execute on the paper
   venue against the market (the perp at its mark, the quarterly at its model price, puts at
   their Black-Scholes premium at the implied vol), refused ones go back to the engine;
7. hands a closed take-profit cycle's profit to the treasury (interest, reserve refill,
   principal, in that order).

Accounting (all USD): ``cash_usd`` holds the trading capital (the loan's proceeds by default),
receives the futures' P&L as variation margin, pays fees, funding and put premiums, and pays the
lender from profits. ``position_value_usd`` is the collateral coins at spot plus the puts at
their value (Black-Scholes at the last implied vol; intrinsic at expiry); the futures are worth
nothing once marked. ``equity_usd = cash_usd + position_value_usd + reserve_usd - loan_usd``.
Everything here is pure: time comes in with the market state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from models.execution import (
    BINANCE_USDM,
    BPS,
    DERIBIT,
    SECONDS_PER_HOUR,
    ExecutionOptimizer,
    ExecutionPlan,
    PaperVenue,
    VenueConfig,
    slippage_bps,
    walk_book,
)
from models.hedge import (
    SECONDS_PER_YEAR,
    HedgeConfig,
    HedgeEngine,
    MarketState,
    PositionState,
    quarterly_price_usd,
)
from models.loan import (
    TreasuryConfig,
    TreasuryMark,
    mark_treasury,
    open_treasury,
    treasury_profit,
)
from models.orders import Fill, Order, Rejection
from models.pricing import bs_price
from models.records import Alert
from models.safety import SafetyConfig, SafetyContext, SafetyGate, utc_day_start_s

__all__ = ["DeskConfig", "DeskStep", "HedgeDesk", "DESK_SAFETY"]

# One venue holds the whole hedge, so a per-venue concentration limit would refuse every order.
DESK_SAFETY = SafetyConfig(max_venue_concentration=1.0)


@dataclass(frozen=True)
class DeskConfig:
    """The desk: plan 001's starting book and loan, the engine's, treasury's and gate's configs,
    and the venues (futures on ``futures_venue``, puts on ``options_venue``). ``trading_capital_usd``
    is the cash the desk starts with (None: the loan's principal, i.e. the loan's proceeds fund the
    hedge's margin and costs).

    ``routing_venues``: more futures venues. With any, every futures order is routed across
    ``futures_venue`` and them by all-in cost (plan 004's ExecutionOptimizer: price walked on each
    venue's book, plus its taker fee), split where that is cheaper, and each venue's part fills
    there; ``max_slippage_bps`` caps how far from the mid a routed order may walk. The position is
    still one book per instrument kind (margined at the book's leverage, liquidated as a whole,
    funded at ``futures_venue``'s funding times): the venues' share of it is tracked for exposure
    and concentration limits."""

    asset: str = "BTC"
    initial_state: PositionState = field(default_factory=PositionState)
    hedge: HedgeConfig = field(default_factory=HedgeConfig)
    treasury: TreasuryConfig = field(default_factory=TreasuryConfig)
    safety: SafetyConfig = DESK_SAFETY
    futures_venue: VenueConfig = BINANCE_USDM
    options_venue: VenueConfig = DERIBIT
    trading_capital_usd: float | None = None
    routing_venues: tuple[VenueConfig, ...] = ()
    max_slippage_bps: float = math.inf
    maintenance_margin_fraction: float = 0.004
    liquidation_fee_fraction: float = 0.005
    resume_after_stall: bool = False  # backtests: trade again once data flows after the switch

    def __post_init__(self) -> None:
        if self.trading_capital_usd is not None and not (
                math.isfinite(self.trading_capital_usd) and self.trading_capital_usd >= 0.0):
            raise ValueError(f"trading_capital_usd must be finite and >= 0, got {self.trading_capital_usd!r}")
        for name in ("maintenance_margin_fraction", "liquidation_fee_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 0.1):
                raise ValueError(f"{name} must be a fraction in [0, 0.1), got {value!r}")
        if not 1.0 / self.initial_state.leverage > self.maintenance_margin_fraction:
            raise ValueError(f"leverage {self.initial_state.leverage:g} leaves no margin above the "
                             f"maintenance margin ({self.maintenance_margin_fraction:g}): "
                             f"at most {1.0 / self.maintenance_margin_fraction:g}x")
        if "perp" not in self.futures_venue.kinds:
            raise ValueError(f"futures_venue {self.futures_venue.name} does not trade perps")
        names = [v.name for v in (self.futures_venue, *self.routing_venues)]
        if len(set(names)) != len(names):
            raise ValueError(f"futures venues must be distinct, got {names}")
        for venue in self.routing_venues:
            if "perp" not in venue.kinds:
                raise ValueError(f"routing venue {venue.name} does not trade perps")
        if not self.max_slippage_bps > 0.0:
            raise ValueError(f"max_slippage_bps must be > 0, got {self.max_slippage_bps!r}")


class DeskStep(NamedTuple):
    """What one ``step`` did: the engine's mode and hedge ratio, every order with its verdict
    (approved orders and the rejections), the fills, funding paid (positive = paid), the
    treasury's mark and any profit distribution, the gate's alerts, and the accounts after.
    (A named tuple, not a frozen dataclass: one is made on every bar, and a tuple is built at
    once where a frozen dataclass sets its 32 fields one by one.)"""

    ts_s: float
    spot_usd: float
    mode: str
    hedge_ratio: float
    delta_coin: float
    unrealized_pnl_usd: float
    realized_pnl_usd: float
    state: PositionState
    approved: tuple[Order, ...]
    rejections: tuple[Rejection, ...]
    fills: tuple[Fill, ...]
    fill_reasons: tuple[str, ...]
    funding_paid_usd: float
    treasury: TreasuryMark | None
    distribution: object | None
    events: tuple[str, ...]
    alerts: tuple[Alert, ...]
    cash_usd: float
    position_value_usd: float
    reserve_usd: float
    loan_usd: float
    equity_usd: float
    fees_usd: float
    funding_usd: float
    ltv: float
    band: str
    trading_state: str
    principal_usd: float
    accrued_interest_usd: float
    interest_paid_usd: float
    principal_paid_usd: float
    reserve_deployed_usd: float


class HedgeDesk:
    """See the module docstring. ``step(market)`` once per market update, in time order."""

    def __init__(self, config: DeskConfig, start_ts_s: float) -> None:
        self.config = config
        self.asset = config.asset
        self.engine = HedgeEngine(config.hedge, config.initial_state, asset=config.asset)
        # At the book's leverage a fresh futures leg is ``1/leverage - mm`` from liquidation (3.6 %
        # at 25x): a minimum distance above that would refuse every order that adds to the hedge,
        # so it is kept at half the cushion. (The panic close keeps plan 001's 5 %: at 25x its
        # distance condition always holds, and the equity drop of 10 % decides.)
        cushion = 1.0 / config.initial_state.leverage - config.maintenance_margin_fraction
        safety = config.safety
        if safety.min_liquidation_distance >= cushion:
            safety = replace(safety, min_liquidation_distance=cushion / 2)
        self.gate = SafetyGate(safety)
        self.futures = PaperVenue(config.futures_venue)
        self.options = PaperVenue(config.options_venue)
        # Every futures venue, the main one first; the router when there are several.
        self.futures_venues = {config.futures_venue.name: self.futures}
        self.futures_venues.update((v.name, PaperVenue(v)) for v in config.routing_venues)
        self.router = ExecutionOptimizer((config.futures_venue, *config.routing_venues),
                                         max_slippage_bps=config.max_slippage_bps) \
            if config.routing_venues else None
        self._plans: dict[str, ExecutionPlan] = {}  # this step's routing, by order id
        # Each venue's share of the futures: (venue, kind) -> signed coins. A starting position
        # is held on the main venue.
        start = config.initial_state
        self.venue_position_coin: dict[tuple[str, str], float] = {}
        for kind, position in (("perp", start.long_perp_coin - start.short_perp_coin),
                               ("quarterly", start.quarterly_coin)):
            if position != 0.0:
                self.venue_position_coin[(config.futures_venue.name, kind)] = position
        self.treasury = open_treasury(start_ts_s, config.treasury)
        capital = config.treasury.loan.principal_usd if config.trading_capital_usd is None \
            else config.trading_capital_usd
        self.cash_usd = float(capital)
        self.fees_usd = 0.0
        self.funding_usd = 0.0  # paid, to date
        self.gross_profit_usd = 0.0  # the futures' and puts' P&L before fees and funding
        self.repaid_from_profits_usd = 0.0
        self._last_ts = start_ts_s
        self._futures_mark: dict[str, float] = {}  # kind -> the price the futures were last marked at
        self._iv = math.nan
        self._day_start_s = utc_day_start_s(start_ts_s)
        self._day_start_equity = math.nan
        self._peak_equity = math.nan
        self._daily_volume_usd = 0.0
        self._heartbeat_s = start_ts_s
        self._band = "UNKNOWN"
        self._warning_halved = False  # this WARNING episode's halving has filled
        self._held_back = 0
        self._trading_state = "ACTIVE"
        self._new_positions_allowed = True
        self._n_flatten = 0
        self._flatten_request: tuple[str, str] | None = None
        self._settled_put_expiry = math.nan
        # The gate's view of the book, rebuilt only when the engine's state (a frozen value,
        # replaced on every change) is another one.
        self._position_keys = tuple((config.asset, kind)
                                    for kind in ("spot", "perp", "quarterly", "put"))
        self._positions_state: PositionState | None = None
        self._positions: dict[tuple[str, str], float] = {}
        venue = config.futures_venue
        self._funding_interval_s = venue.funding_interval_h * SECONDS_PER_HOUR
        self._funding_offset_s = venue.funding_offset_h * SECONDS_PER_HOUR

    # ------------------------------------------------------------------ accounts

    @property
    def state(self) -> PositionState:
        return self.engine.state

    @property
    def loan_usd(self) -> float:
        return self.treasury.loan.outstanding_usd

    @property
    def reserve_usd(self) -> float:
        return self.treasury.reserve.balance_usd

    def _put_value_usd(self, market: MarketState, s: PositionState) -> float:
        if (s.put_coin <= 0.0 or not math.isfinite(market.spot_usd)
                or s.put_expiry_ts_s == self._settled_put_expiry):
            return 0.0  # none, unpriceable, or settled into cash already
        years = max((s.put_expiry_ts_s - market.ts_s) / SECONDS_PER_YEAR, 0.0)
        vol = self._iv if math.isfinite(self._iv) else 0.0
        return s.put_coin * float(bs_price(market.spot_usd, s.put_strike_usd, years,
                                           self.config.hedge.rate_annual, vol, False))

    def position_value_usd(self, market: MarketState) -> float:
        s = self.engine.state
        return s.spot_coin * market.spot_usd + self._put_value_usd(market, s)

    def equity_usd(self, market: MarketState) -> float:
        return self.cash_usd + self.position_value_usd(market) + self.reserve_usd - self.loan_usd

    # ------------------------------------------------------------------ prices

    def _mark_of(self, kind: str, market: MarketState) -> float:
        if kind == "perp":
            return market.perp_mark_usd
        if kind == "quarterly":
            return quarterly_price_usd(market.spot_usd, market.quarterly_basis_apr, market.ts_s)
        if kind == "spot":
            return market.spot_usd
        return math.nan

    def _futures_position(self, kind: str) -> float:
        s = self.engine.state
        return s.long_perp_coin - s.short_perp_coin if kind == "perp" else s.quarterly_coin

    def _mark_futures(self, market: MarketState) -> None:
        """Variation margin: each futures position's P&L since its last mark moves to cash."""
        s = self.engine.state
        for kind in ("perp", "quarterly"):
            position = s.long_perp_coin - s.short_perp_coin if kind == "perp" else s.quarterly_coin
            if position == 0.0:
                if self._futures_mark:
                    self._futures_mark.pop(kind, None)  # flat: the next fill sets its mark
                continue
            mark = market.perp_mark_usd if kind == "perp" else self._mark_of(kind, market)
            if not (math.isfinite(mark) and mark > 0.0):
                continue  # unknown: marked when it is known again
            last = self._futures_mark.get(kind)
            if last is not None:
                pnl = position * (mark - last)
                self.cash_usd += pnl
                self.gross_profit_usd += pnl
            self._futures_mark[kind] = mark

    def _liquidation_price_usd(self, kind: str, s: PositionState) -> float:
        """Where the venue liquidates a futures leg held on isolated margin of ``notional /
        leverage`` (the book's leverage): a short at ``entry (1 + 1/leverage - mm)``, a long at
        ``entry (1 - 1/leverage + mm)``, ``mm`` the maintenance margin; NaN when flat."""
        cushion = 1.0 / s.leverage - self.config.maintenance_margin_fraction
        if kind == "perp":
            if s.short_perp_coin > s.long_perp_coin and math.isfinite(s.short_perp_entry_usd):
                return s.short_perp_entry_usd * (1.0 + cushion)
            if s.long_perp_coin > s.short_perp_coin and math.isfinite(s.long_perp_entry_usd):
                return s.long_perp_entry_usd * (1.0 - cushion)
        elif s.quarterly_coin != 0.0 and math.isfinite(s.quarterly_entry_usd):
            return s.quarterly_entry_usd * (1.0 + cushion if s.quarterly_coin < 0 else 1.0 - cushion)
        return math.nan

    def _liquidate(self, market: MarketState) -> list[Fill]:
        """A leg whose mark crossed its liquidation price is closed by the venue at that price,
        with the venue's liquidation fee: what the panic close exists to avoid."""
        fills = []
        for kind in ("perp", "quarterly"):
            position = self._futures_position(kind)
            if position == 0.0:
                continue  # (the quarterly's model price is not computed for a leg not held)
            price = self._liquidation_price_usd(kind, self.engine.state)
            mark = self._mark_of(kind, market)
            if not (math.isfinite(price) and math.isfinite(mark)):
                continue
            if (position < 0 and mark >= price) or (position > 0 and mark <= price):
                self._n_flatten += 1
                for venue, held in self._venue_shares(kind, position):
                    quantity = abs(held)
                    fill = Fill(ts_s=market.ts_s, order_id=f"liquidation-{self._n_flatten}",
                                asset=self.asset, kind=kind, side="buy" if held < 0 else "sell",
                                venue=venue, quantity_coin=quantity, price_usd=price,
                                fee_usd=self.config.liquidation_fee_fraction * quantity * price,
                                liquidity="taker")
                    self._apply(fill)
                    fills.append(fill)
        return fills

    def _venue_shares(self, kind: str, position: float) -> list[tuple[str, float]]:
        """Where the ``kind`` position of ``position`` coins is held: (venue, signed coins) that
        sum to it (what the venue records cannot place is put on the main venue)."""
        shares = [(venue, q) for (venue, k), q in self.venue_position_coin.items()
                  if k == kind and q != 0.0 and (q > 0) == (position > 0)]
        rest = position - math.fsum(q for _, q in shares)
        if shares and abs(rest) <= 1e-9 * abs(position):
            # (rounding of the venues' sum: the largest share takes it, so the fills sum exactly)
            i = max(range(len(shares)), key=lambda j: abs(shares[j][1]))
            shares[i] = (shares[i][0], shares[i][1] + rest)
            return shares
        if not shares:
            return [(self.config.futures_venue.name, position)]
        main = self.config.futures_venue.name
        for i, (venue, q) in enumerate(shares):
            if venue == main:
                shares[i] = (venue, q + rest)
                return shares
        return shares + [(main, rest)]

    def _ltv_orders(self, ts_s: float, market: MarketState, action) -> list[Order]:
        """Plan 001's LTV actions on the futures (reduce-only): in WARNING, every leg is halved
        once per episode (retried until the halving fills; the episode ends when the LTV falls
        below WARNING, an unknown LTV does not end it); CRITICAL closes the legs that are losing;
        EMERGENCY's close-all is the caller's."""
        s = self.engine.state
        legs = {"perp": s.perp_net_coin, "quarterly": s.quarterly_coin}
        cut: dict[str, float] = {}
        if action.close_losing_positions:
            entries = {"perp": s.short_perp_entry_usd if legs["perp"] < 0 else s.long_perp_entry_usd,
                       "quarterly": s.quarterly_entry_usd}
            for kind, position in legs.items():
                pnl = position * (self._mark_of(kind, market) - entries[kind])
                if position != 0.0 and pnl < 0.0:
                    cut[kind] = abs(position)
        elif action.position_fraction < 1.0 and action.band == "WARNING" and not self._warning_halved:
            for kind, position in legs.items():
                if position != 0.0:
                    cut[kind] = abs(position) * (1.0 - action.position_fraction)
        orders = []
        for kind, quantity in cut.items():
            self._n_flatten += 1
            orders.append(Order(ts_s=ts_s, asset=self.asset, kind=kind,
                                side="buy" if legs[kind] < 0 else "sell", quantity_coin=quantity,
                                reason=f"ltv_{action.band.lower()}", reduce_only=True,
                                order_id=f"ltv-{self._n_flatten}"))
        return orders

    def _funding_count(self, end_ts_s: float) -> int:
        """How many of the venue's funding instants lie in ``(last step, end_ts_s]``: the length of
        ``models.execution.funding_times`` over that span, without building the array."""
        interval_s, offset_s = self._funding_interval_s, self._funding_offset_s
        first = math.floor((self._last_ts - offset_s) / interval_s) + 1
        last = math.floor((end_ts_s - offset_s) / interval_s)
        return max(last - first + 1, 0)

    def _settle_funding(self, market: MarketState) -> float:
        rate, mark = market.funding_rate_per_interval, market.perp_mark_usd
        s = self.engine.state
        position = s.long_perp_coin - s.short_perp_coin
        paid = 0.0
        if position != 0.0 and math.isfinite(rate) and math.isfinite(mark):
            for _ in range(self._funding_count(market.ts_s)):
                paid += position * mark * rate  # longs pay a positive rate
        if paid:
            self.cash_usd -= paid
            self.funding_usd += paid
            self.engine.on_funding(-paid)
        return paid

    # ------------------------------------------------------------------ operators

    def request_flatten(self, who: str, why: str) -> None:
        """Close every futures position at the next step and pause trading (``hedgeflow
        flatten``); reducing orders pass the pause."""
        self._flatten_request = (who, why)

    # ------------------------------------------------------------------ the step

    def _context(self, market: MarketState, equity: float | None = None) -> SafetyContext:
        """The gate's view at ``market``; ``equity`` when the caller has just computed it."""
        s = self.engine.state
        if equity is None:
            equity = self.equity_usd(market)
        if s is not self._positions_state:
            spot, perp, quarterly, put = self._position_keys
            self._positions = {spot: s.spot_coin, perp: s.perp_net_coin,
                               quarterly: s.quarterly_coin, put: s.put_coin}
            self._positions_state = s
        positions = self._positions  # the context copies it
        liquidation = {}
        net = s.futures_net_coin
        liquidation_usd = self._liquidation_price_usd("perp", s)
        if math.isfinite(liquidation_usd):
            liquidation[self.asset] = liquidation_usd
        mark = market.perp_mark_usd
        if self.router is None:
            exposure = {self.config.futures_venue.name: abs(net) * mark if math.isfinite(mark) else 0.0}
        else:
            exposure = dict.fromkeys(self.futures_venues, 0.0)
            if math.isfinite(mark):
                for (venue, _), q in self.venue_position_coin.items():
                    exposure[venue] += abs(q) * mark
        return SafetyContext(
            ts_s=market.ts_s, markets=(market,), equity_usd=equity,
            day_start_equity_usd=self._day_start_equity, peak_equity_usd=self._peak_equity,
            day_start_s=self._day_start_s, daily_volume_usd=self._daily_volume_usd,
            positions_coin=positions, liquidation_prices_usd=liquidation,
            open_orders=len(self.engine.pending_order_ids),
            venue_exposure_usd=exposure,
            heartbeat_ts_s=self._heartbeat_s,
        )

    def _execute(self, order: Order, market: MarketState) -> list[Fill]:
        if order.kind == "put":
            contract = self.engine.put_contract(order.order_id)
            if contract is None or not math.isfinite(market.implied_vol_annual):
                return []
            years = max((contract.expiry_ts_s - market.ts_s) / SECONDS_PER_YEAR, 0.0)
            premium = float(bs_price(market.spot_usd, contract.strike_usd, years,
                                     self.config.hedge.rate_annual, market.implied_vol_annual, False))
            return self.options.execute(order, premium, market.ts_s)
        mark = self._mark_of(order.kind, market)
        plan = self._plans.pop(order.order_id, None)
        if plan is None:
            return self.futures.execute(order, mark, market.ts_s)
        fills = []
        for child in plan.children:
            for fill in self.futures_venues[child.venue].execute(child, mark, market.ts_s):
                # Fills carry the engine's order id (the venue says where each part went).
                fills.append(replace(fill, order_id=order.order_id))
        return fills

    def _expected_slippage(self, order: Order, market: MarketState) -> float:
        """A market futures order's slippage against the mid, walked on the venue's depth model
        (a fraction; NaN when the price is unknown, which the gate refuses)."""
        if order.kind == "put" or not order.is_market:
            return 0.0 if order.kind == "put" else math.nan
        mid = self._mark_of(order.kind, market)
        if not (math.isfinite(mid) and mid > 0.0):
            return math.nan
        if self.router is not None:
            plan = self.router.plan(order, dict.fromkeys(self.futures_venues, mid))
            if plan.unfilled_coin > 0.0 or not plan.children:
                return math.inf  # the venues together cannot fill it within the limits
            self._plans[order.order_id] = plan
            return float(slippage_bps(order.side, plan.expected_price_usd, mid)) * BPS
        prices, sizes = self.config.futures_venue.depth.book(mid).side_for(order.side)
        filled, vwap = walk_book(prices, sizes, order.quantity_coin, order.side)
        if filled < order.quantity_coin:
            return math.inf  # deeper than the book: the gate refuses it
        return float(slippage_bps(order.side, vwap, mid)) * BPS

    def _apply(self, fill: Fill) -> None:
        self.fees_usd += fill.fee_usd
        self.cash_usd -= fill.fee_usd
        self._daily_volume_usd += fill.notional_usd
        if fill.kind == "put":
            self.cash_usd -= fill.signed_quantity_coin * fill.price_usd
            self.gross_profit_usd -= fill.signed_quantity_coin * fill.price_usd
        elif fill.kind in ("perp", "quarterly"):
            key = (fill.venue, fill.kind)
            self.venue_position_coin[key] = self.venue_position_coin.get(key, 0.0) \
                + fill.signed_quantity_coin
            # Settle the position held to the fill's price first, then trade at it.
            last = self._futures_mark.get(fill.kind, fill.price_usd)
            pnl = self._futures_position(fill.kind) * (fill.price_usd - last)
            self.cash_usd += pnl
            self.gross_profit_usd += pnl
            self._futures_mark[fill.kind] = fill.price_usd
        self.engine.on_fill(fill)

    def step(self, market: MarketState) -> DeskStep:
        if market.asset != self.asset:
            raise ValueError(f"this desk trades {self.asset}, not {market.asset}")
        ts = market.ts_s
        if ts < self._last_ts:
            raise ValueError(f"market time {ts} is before the desk's {self._last_ts}")
        if math.isfinite(market.implied_vol_annual):
            self._iv = market.implied_vol_annual
        funding_paid = self._settle_funding(market)
        self._mark_futures(market)
        liquidations = self._liquidate(market)
        self._expire_put(market)

        collateral = self.engine.state.spot_coin * market.spot_usd
        self.treasury, mark = mark_treasury(self.treasury, collateral, ts)
        action = mark.action
        if action.band in ("SAFE", "MONITOR"):
            self._warning_halved = False
        if action.band != "UNKNOWN":
            self._band = action.band
        self._trading_state = action.trading_state
        events: list[str] = [f"liquidated {f.kind} {f.quantity_coin:g} at {f.price_usd:.2f}"
                             for f in liquidations]

        # The day's start and the high-water mark, for the daily loss limit and the panic close.
        equity = self.equity_usd(market)
        day_start_s = utc_day_start_s(ts)
        if day_start_s != self._day_start_s or not math.isfinite(self._day_start_equity):
            self._day_start_s = day_start_s
            self._day_start_equity = equity
            self._daily_volume_usd = 0.0
        if math.isfinite(equity):
            self._peak_equity = equity if not math.isfinite(self._peak_equity) else max(self._peak_equity, equity)

        context = self._context(market, equity)
        tick = self.gate.tick(context)
        # The data's arrival is the heartbeat: a stalled feed leaves it behind, and the switch fires.
        if market.oracle_ok and math.isfinite(market.spot_usd):
            pause = self.gate.pause_state
            if (self.config.resume_after_stall and pause.paused and pause.who == "dead_mans_switch"
                    and pause.since_s < ts and not tick.decisions):
                self.gate.resume(ts, "backtest", "data flows again after the stall")
                events.append("safety resumed after the stall")
            self._heartbeat_s = ts
        decisions = tick.decisions
        if self._flatten_request is not None:
            decisions += (self.gate.flatten(context, *self._flatten_request),)
            self._flatten_request = None
        orders: list[Order] = [o for d in decisions for o in d.orders]
        if decisions:
            events += [f"safety {d.rule}: {d.reason}" for d in decisions]

        hedge = self.engine.step(market)
        events += hedge.events
        reduce = [] if action.close_all_positions else self._ltv_orders(ts, market, action)
        if reduce:
            orders += reduce
            events.append(f"ltv {mark.ltv:.3f} {action.band}: "
                          + ("close losing legs" if action.close_losing_positions else "halve the futures"))
        if action.close_all_positions:
            orders += [o for o in self._flatten(ts, "ltv_emergency")]
            events.append(f"ltv {mark.ltv:.3f} {action.band}: close all")
        elif not action.new_positions_allowed:
            held = [o for o in hedge.orders if not o.reduce_only]
            if held and len(held) != self._held_back:  # said once, not on every bar
                events.append(f"ltv {mark.ltv:.3f} {action.band}: {len(held)} orders held back")
            self._held_back = len(held)
            orders += [o for o in hedge.orders if o.reduce_only]
        else:
            held = []
            orders += hedge.orders
        if action.close_all_positions:
            held = list(hedge.orders)
        for order in held:  # the engine must not wait for orders that were never sent
            self.engine.on_order_closed(order.order_id)

        approved, rejections, reasons = [], [], ["liquidation"] * len(liquidations)
        fills = list(liquidations)
        slippage = [self._expected_slippage(o, market) for o in orders]
        verdicts = self.gate.check_all(orders, context, expected_slippage_fraction=slippage) \
            if orders else []
        for verdict in verdicts:
            if isinstance(verdict, Rejection):
                rejections.append(verdict)
                self.engine.on_rejection(verdict)
                continue
            approved.append(verdict)
            done = self._execute(verdict, market)
            for fill in done:
                self._apply(fill)
                fills.append(fill)
                reasons.append(verdict.reason)
            if done and verdict.reason == "ltv_warning":
                self._warning_halved = True
            if not done:
                self.engine.on_order_closed(verdict.order_id)

        distribution = None
        if hedge.distributable_profit_usd > 0.0 and math.isfinite(collateral):
            before = self.treasury.loan.outstanding_usd
            self.treasury, distribution = treasury_profit(self.treasury, hedge.distributable_profit_usd,
                                                          collateral, ts)
            # What went to the lender and the reserve left the desk's cash.
            self.cash_usd -= distribution.profit_usd - distribution.retained_usd
            self.repaid_from_profits_usd += max(before - self.treasury.loan.outstanding_usd, 0.0)
            events.append(f"profit {distribution.profit_usd:.2f} distributed")

        self._plans.clear()  # (the routing of orders the gate refused)
        self._last_ts = ts
        s = self.engine.state
        position_value = s.spot_coin * market.spot_usd + self._put_value_usd(market, s)
        loan, reserve = self.treasury.loan, self.treasury.reserve
        reserve_usd, loan_usd = reserve.balance_usd, loan.outstanding_usd
        late_alerts = self.gate.take_alerts()
        alerts = tick.alerts + tuple(late_alerts) if late_alerts else tick.alerts
        if liquidations:
            alerts += tuple(Alert(ts, "liquidation", "critical",
                                  f"{self.asset} {f.kind} liquidated: {f.quantity_coin:g} coin at "
                                  f"{f.price_usd:.2f} USD, fee {f.fee_usd:.2f} USD", self.asset)
                            for f in liquidations)
        return DeskStep(
            ts_s=ts, spot_usd=market.spot_usd, mode=self.engine.mode,
            hedge_ratio=s.hedge_ratio, delta_coin=hedge.delta_coin,
            unrealized_pnl_usd=hedge.unrealized_pnl_usd, realized_pnl_usd=hedge.realized_pnl_usd,
            state=s, approved=tuple(approved),
            rejections=tuple(rejections), fills=tuple(fills), fill_reasons=tuple(reasons),
            funding_paid_usd=funding_paid, treasury=mark, distribution=distribution,
            events=tuple(events), alerts=alerts,
            cash_usd=self.cash_usd, position_value_usd=position_value, reserve_usd=reserve_usd,
            loan_usd=loan_usd,
            equity_usd=self.cash_usd + position_value + reserve_usd - loan_usd,
            fees_usd=self.fees_usd, funding_usd=self.funding_usd, ltv=mark.ltv,
            band=action.band, trading_state=action.trading_state,
            principal_usd=loan.principal_outstanding_usd, accrued_interest_usd=loan.accrued_interest_usd,
            interest_paid_usd=loan.interest_paid_usd, principal_paid_usd=loan.principal_paid_usd,
            reserve_deployed_usd=reserve.total_deployed_usd,
        )

    def _flatten(self, ts_s: float, reason: str) -> list[Order]:
        from models.safety import flatten_orders

        s = self.state
        positions = {(self.asset, "perp"): s.perp_net_coin, (self.asset, "quarterly"): s.quarterly_coin}
        orders = flatten_orders(ts_s, positions, reason=reason, first_index=self._n_flatten)
        self._n_flatten += len(orders)
        return list(orders)

    def _expire_put(self, market: MarketState) -> None:
        """A put past its expiry settles at intrinsic value against spot (cash), and is gone."""
        s = self.engine.state
        if (s.put_coin > 0.0 and market.ts_s >= s.put_expiry_ts_s and math.isfinite(market.spot_usd)
                and s.put_expiry_ts_s != self._settled_put_expiry):
            payoff = s.put_coin * max(s.put_strike_usd - market.spot_usd, 0.0)
            self.cash_usd += payoff
            self.gross_profit_usd += payoff
            self._settled_put_expiry = s.put_expiry_ts_s  # once, whatever the engine does next


def replace_leverage(config: DeskConfig, leverage: float) -> DeskConfig:
    """``config`` with the book's leverage set (a parameter sweep's knob)."""
    return replace(config, initial_state=replace(config.initial_state, leverage=leverage))
