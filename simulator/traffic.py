"""Simulated traffic: requests ranked by a policy (`serving.policies`), what users do, and how producers deliver it.

Simulated time runs as fast as the machine allows. Events come out in delivery order, the order in which
at-least-once producers would hand them to Kafka, so event time is out of order across and within topics.
`traffic()` adds the serving log to them: each request as the ranking service served it (a ServedRequest,
delivered at the moment it was served, naming the version of the feature tables it read, `feature_tables`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterator, NamedTuple

import numpy as np

from config.simulator import LogNormalDelay, SimulatorConfig
from schemas.units import DAY_MS, HOUR_MS, SECOND_MS, seconds
from simulator.served import ServedLog
from serving.log import FeatureTables
from serving.policies import LoggingPolicy, Policy, Surfaces
from simulator.world import World

EVENT_NAMES = ("Impression", "Click", "Dwell", "AddToCart", "Purchase")


class SimEvent(NamedTuple):
    delivery_ms: int  # when the producer delivers it: the Kafka record timestamp
    seq: int  # generation order; breaks ties so that delivery order is deterministic
    name: str  # record name in schemas/
    key: bytes  # user id: one user's events share a partition and keep their order
    datum: dict


@dataclasses.dataclass
class OutcomeTally:
    """What the world generated, by hidden item kind, before delivery: the world's true rates."""

    impressions: int = 0
    clicks: int = 0
    dwell_s_sum: float = 0.0
    carts: int = 0
    purchases: int = 0

    def rates(self) -> dict[str, float]:
        per_click = max(self.clicks, 1)
        return {
            "impressions": self.impressions,
            "ctr": self.clicks / max(self.impressions, 1),
            "carts_per_click": self.carts / per_click,
            "purchases_per_click": self.purchases / per_click,
            "mean_dwell_s": self.dwell_s_sum / per_click,
        }


@dataclasses.dataclass
class SimulationSummary:
    delivered: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(EVENT_NAMES, 0))
    duplicates: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(EVENT_NAMES, 0))
    late: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(EVENT_NAMES, 0))
    beyond_horizon: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(EVENT_NAMES, 0))
    organic_purchases: int = 0
    served_requests: int = 0  # the serving log's records, beside the delivered events
    bait: OutcomeTally = dataclasses.field(default_factory=OutcomeTally)
    non_bait: OutcomeTally = dataclasses.field(default_factory=OutcomeTally)
    cart_delays_s: list = dataclasses.field(default_factory=list)
    purchase_delays_s: list = dataclasses.field(default_factory=list)

    @property
    def total_delivered(self) -> int:
        return sum(self.delivered.values())

    def as_dict(self) -> dict:
        return {
            "delivered": self.delivered, "duplicates": self.duplicates, "late": self.late,
            "beyond_horizon": self.beyond_horizon, "organic_purchases": self.organic_purchases,
            "served_requests": self.served_requests,
            "bait_items": self.bait.rates(), "non_bait_items": self.non_bait.rates(),
        }


_LOG_SECOND_MS = math.log(SECOND_MS)  # a log-normal in seconds is one in milliseconds, its log shifted by this


def _lognormal_ms(rng: np.random.Generator, delay: LogNormalDelay, size: int) -> np.ndarray:
    """Delays in milliseconds, log-normal about the configured median."""
    return np.exp(rng.normal(delay.log_median_ms, delay.sigma, size))


class Simulation:
    """One seeded run of the world: iterate `events()` once; `summary` fills as it goes."""

    def __init__(self, config: SimulatorConfig, world: World | None = None, policy: Policy | None = None,
                 served: ServedLog | None = None):
        self.config = config
        self.world = world or World.create(config)
        self.policy = policy or LoggingPolicy(config.logging_policy, list(config.surfaces))
        self.served = served  # filled with what each request was shown and its hidden truth, when given
        self.summary = SimulationSummary()
        self._rng = np.random.default_rng([config.seed, 2])
        self._seq = 0
        self._surfaces = list(config.surfaces)
        self._surface_p = np.array(list(config.surfaces.values())) / sum(config.surfaces.values())
        self._devices = list(config.devices)
        self._user_ids = [self.world.user_id(u) for u in range(config.catalogue.users)]
        self._item_ids = [self.world.item_id(i) for i in range(config.catalogue.items)]
        self._categories = [f"c{c:02d}" for c in range(config.catalogue.categories)]
        # Features declared as Avro float are rounded to float32 here, so an event reads back exactly as generated.
        self._headline = self.world.item_headline_score.astype(np.float32).tolist()
        self._rating = [None if r != r else r for r in self.world.item_rating.astype(np.float32).tolist()]
        self._affinity = self.world.user_affinity.astype(np.float32)
        self.feature_tables = FeatureTables.of(self.world, self._surfaces, self._devices)
        self._snapshot: str | None = None  # the tables' version while the serving log is generated

    def events(self) -> Iterator[SimEvent]:
        """Every delivered event, in delivery order, up to the end of simulated time."""
        return self._delivered(serving_log=False)

    def traffic(self) -> Iterator[SimEvent]:
        """The events and the serving log (a ServedRequest a request, delivered when it was served), in delivery
        order; the events are those `events()` yields."""
        return self._delivered(serving_log=True)

    def _delivered(self, serving_log: bool) -> Iterator[SimEvent]:
        self._snapshot = self.feature_tables.version if serving_log else None
        cfg = self.config
        request_ms = np.sort(self._rng.uniform(cfg.start_ms, cfg.end_ms, cfg.requests)).astype(np.int64)
        chunk_ms = cfg.chunk_ms
        pending: list[tuple] = []
        first = 0
        for chunk_end in range(cfg.start_ms + chunk_ms, cfg.end_ms + chunk_ms, chunk_ms):
            chunk_end = min(chunk_end, cfg.end_ms)
            last = int(np.searchsorted(request_ms, chunk_end, side="left"))
            if last > first:
                pending.extend(self._serve(np.arange(first, last), request_ms[first:last]))
            first = last
            ready = [e for e in pending if e[0] < chunk_end]
            pending = [e for e in pending if e[0] >= chunk_end]
            ready.sort(key=lambda e: (e[0], e[1]))
            for event in ready:
                self._count(event)
                yield event
        drained = cfg.end_ms + cfg.drain_ms
        for event in sorted(e for e in pending if e[0] < drained):
            self._count(event)
            yield event
        for event in pending:
            if event[0] >= drained:
                self.summary.beyond_horizon[event.name] += 1

    def _count(self, event: SimEvent) -> None:
        if event.name == "ServedRequest":
            self.summary.served_requests += 1
        else:
            self.summary.delivered[event.name] += 1

    # -- one chunk of requests ---------------------------------------------------------------------

    def _serve(self, request_index: np.ndarray, request_ms: np.ndarray) -> list[SimEvent]:
        world, cfg, rng = self.world, self.config, self._rng
        n = len(request_index)
        users = rng.choice(cfg.catalogue.users, n, p=world.user_activity)
        surfaces = Surfaces(lambda: rng.choice(len(self._surfaces), n, p=self._surface_p))
        ranked = self.policy.rank(world, users, surfaces, request_ms, rng)
        surfaces = surfaces()
        slates, propensities, arm, candidates = ranked
        names = self.policy.names
        positions = np.broadcast_to(np.arange(slates.shape[1]), slates.shape)
        flat_users = np.repeat(users, slates.shape[1])
        flat_items, flat_positions = slates.ravel(), positions.ravel()
        flat_requests = np.repeat(request_index, slates.shape[1])
        flat_times = np.repeat(request_ms, slates.shape[1])

        clicked = rng.random(flat_items.size) < world.click_probability(flat_users, flat_items, flat_positions)
        click_ms = flat_times + _lognormal_ms(rng, cfg.delays.click_after_impression, flat_items.size).astype(np.int64)
        dwell_ms = np.exp(rng.normal(world.dwell_log_median(flat_items) + _LOG_SECOND_MS,
                                     world.config.behaviour.dwell_sigma))
        dwell_s = seconds(dwell_ms)
        carted = clicked & (rng.random(flat_items.size) < world.cart_probability(flat_users, flat_items))
        cart_delay_ms = _lognormal_ms(rng, cfg.delays.cart_after_click, flat_items.size)
        cart_ms = click_ms + cart_delay_ms.astype(np.int64)
        bought = carted & (rng.random(flat_items.size) < world.purchase_probability(flat_items))
        purchase_delay_ms = _lognormal_ms(rng, cfg.delays.purchase_after_cart, flat_items.size)
        purchase_ms = cart_ms + purchase_delay_ms.astype(np.int64)
        quantity = 1 + rng.poisson(0.15, flat_items.size)
        self._tally(flat_items, clicked, dwell_s, carted, bought)
        if self.served is not None:
            self.served.add(world, users, slates, arm, candidates, clicked.reshape(slates.shape),
                            bought.reshape(slates.shape), propensities, surfaces, request_ms)
        self.summary.cart_delays_s.extend(seconds(cart_delay_ms[carted]).tolist())
        self.summary.purchase_delays_s.extend(seconds(purchase_delay_ms[bought]).tolist())

        events: list[tuple] = []
        if self._snapshot is not None:
            self._log_requests(events, request_index, request_ms, users, surfaces, arm, candidates, slates,
                               propensities)
        emit = self._emitter(events)
        slate_size = slates.shape[1]
        price = world.item_price
        for k, (req, user, item, pos, t, prop) in enumerate(zip(
            flat_requests.tolist(), flat_users.tolist(), flat_items.tolist(), flat_positions.tolist(),
            flat_times.tolist(), propensities.ravel().tolist(),
        )):
            impression_id = f"imp-{req:09d}-{pos:02d}"
            user_id, item_id = self._user_ids[user], self._item_ids[item]
            emit("Impression", t, user_id, {
                "event_id": impression_id, "request_id": f"req-{req:09d}", "user_id": user_id, "item_id": item_id,
                "position": pos, "surface": self._surfaces[surfaces[k // slate_size]], "event_time_ms": t,
                "policy": names[arm[k // slate_size]], "propensity": prop, "features": self._features(user, item, t),
            })
            if not clicked[k]:
                continue
            tag = impression_id[4:]
            c_ms = int(click_ms[k])
            emit("Click", c_ms, user_id, {"event_id": f"clk-{tag}", "impression_id": impression_id,
                                          "user_id": user_id, "item_id": item_id, "event_time_ms": c_ms})
            d_ms = int(dwell_ms[k])
            emit("Dwell", c_ms + d_ms, user_id, {"event_id": f"dwl-{tag}", "impression_id": impression_id,
                                                 "user_id": user_id, "item_id": item_id,
                                                 "event_time_ms": c_ms + d_ms, "dwell_ms": d_ms})
            if not carted[k]:
                continue
            q = int(quantity[k])
            value = round(float(price[item]) * q, 2)
            emit("AddToCart", int(cart_ms[k]), user_id, {"event_id": f"atc-{tag}", "user_id": user_id, "item_id": item_id,
                                                         "event_time_ms": int(cart_ms[k]), "quantity": q, "value": value})
            if bought[k]:
                emit("Purchase", int(purchase_ms[k]), user_id, {
                    "event_id": f"pur-{tag}", "order_id": f"ord-{tag}", "user_id": user_id, "item_id": item_id,
                    "event_time_ms": int(purchase_ms[k]), "quantity": q, "value": value})
        self._organic_purchases(request_index, request_ms, users, emit)
        return events

    def _log_requests(self, events: list, request_index, request_ms, users, surfaces, arm, candidates, slates,
                      propensities) -> None:
        """One ServedRequest a request, delivered when it was served (the ranking service logs as it answers)."""
        shown = np.argmax(candidates[:, :, None] == slates[:, None, :], axis=1).tolist()
        names, item_ids = self.policy.names, self._item_ids
        for r, (req, t, user) in enumerate(zip(request_index.tolist(), request_ms.tolist(), users.tolist())):
            user_id = self._user_ids[user]
            self._seq += 1
            events.append(SimEvent(t, self._seq, "ServedRequest", user_id.encode(), {
                "request_id": f"req-{req:09d}", "user_id": user_id, "surface": self._surfaces[surfaces[r]],
                "event_time_ms": t, "policy": names[arm[r]],
                "candidates": [item_ids[i] for i in candidates[r].tolist()], "shown": shown[r],
                "propensities": propensities[r].tolist(), "feature_snapshot": self._snapshot}))

    def _features(self, user: int, item: int, t_ms: int) -> dict:
        world = self.world
        category = world.item_category[item]
        return {
            "item_category": self._categories[category],
            "item_price": float(world.item_price[item]),
            "item_age_hours": float(np.float32((t_ms - int(world.item_published_ms[item])) / HOUR_MS)),
            "item_rating": self._rating[item],
            "headline_score": self._headline[item],
            "user_category_affinity": float(self._affinity[user, category]),
            "user_tenure_days": int(world.user_tenure_days[user]),
            "device": self._devices[world.user_device[user]],
        }

    def _organic_purchases(self, request_index, request_ms, users, emit) -> None:
        """Purchases that no recommendation led to: the join must leave them unattributed."""
        rng = self._rng
        organic = rng.random(len(request_index)) < self.config.behaviour.organic_purchase_rate
        for req, t, user in zip(request_index[organic].tolist(), request_ms[organic].tolist(), users[organic].tolist()):
            item = int(rng.integers(self.config.catalogue.items))
            when = t + int(rng.uniform(0, DAY_MS))
            user_id = self._user_ids[user]
            value = float(self.world.item_price[item])
            emit("Purchase", when, user_id, {"event_id": f"pur-organic-{req:09d}", "order_id": f"ord-organic-{req:09d}",
                                             "user_id": user_id, "item_id": self._item_ids[item], "event_time_ms": when,
                                             "quantity": 1, "value": value})
            self.summary.organic_purchases += 1

    def _emitter(self, events: list):
        """Returns emit(name, event_ms, user_id, datum): schedules delivery, late for some, twice for others."""
        delivery, rng = self.config.delivery, self._rng
        late_ms, dup_ms = delivery.disorder_max_ms, delivery.duplicate_max_ms
        summary = self.summary
        # Draw the delivery dice in blocks: one numpy call per thousand events instead of three per event.
        block: list = []

        def draw() -> list:
            size = 4096
            return list(zip((rng.random(size) < delivery.disorder_rate).tolist(), rng.uniform(0, late_ms, size).tolist(),
                            (rng.random(size) < delivery.duplicate_rate).tolist(), rng.uniform(0, dup_ms, size).tolist()))

        def emit(name: str, event_ms: int, user_id: str, datum: dict) -> None:
            if not block:
                block.extend(draw())
            is_late, lateness, is_dup, dup_lag = block.pop()
            at = event_ms + int(lateness) if is_late else event_ms
            key = user_id.encode()
            self._seq += 1
            events.append(SimEvent(at, self._seq, name, key, datum))
            if is_late:
                summary.late[name] += 1
            if is_dup:
                self._seq += 1
                events.append(SimEvent(at + int(dup_lag), self._seq, name, key, datum))
                summary.duplicates[name] += 1

        return emit

    def _tally(self, items, clicked, dwell_s, carted, bought) -> None:
        is_bait = self.world.item_is_bait[items]
        for tally, mask in ((self.summary.bait, is_bait), (self.summary.non_bait, ~is_bait)):
            tally.impressions += int(mask.sum())
            tally.clicks += int((clicked & mask).sum())
            tally.dwell_s_sum += float(dwell_s[clicked & mask].sum())
            tally.carts += int((carted & mask).sum())
            tally.purchases += int((bought & mask).sum())
