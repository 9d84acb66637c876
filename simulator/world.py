"""The hidden truth of the simulated world: items' bait and quality, users' tastes, and how they behave.

Nothing here reaches the events except through what a real system would log (headline scores, ratings,
affinities, all noisy). The ground truth is saved apart, for evaluation only.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from config.simulator import SimulatorConfig
from schemas.units import DAY_MS

_ARRAYS = (
    "item_category", "item_bait", "item_is_bait", "item_quality", "item_price", "item_published_ms",
    "item_popularity", "item_headline_score", "item_rating", "user_taste", "user_activity",
    "user_affinity", "user_tenure_days", "user_device",
)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclasses.dataclass
class World:
    config: SimulatorConfig
    item_category: np.ndarray  # (items,) int
    item_bait: np.ndarray  # (items,) hidden: how tempting the headline is, 0..1
    item_is_bait: np.ndarray  # (items,) hidden: written as clickbait
    item_quality: np.ndarray  # (items,) hidden: what the item is worth to users, 0..1
    item_price: np.ndarray
    item_published_ms: np.ndarray
    item_popularity: np.ndarray  # log-weight of being retrieved as a candidate
    item_headline_score: np.ndarray  # observed: a noisy classifier of bait
    item_rating: np.ndarray  # observed: noisy quality on a 1..5 scale, NaN when too few ratings
    user_taste: np.ndarray  # (users, categories) hidden: true category preferences, rows sum to 1
    user_activity: np.ndarray  # (users,) probability of being the next request's user
    user_affinity: np.ndarray  # (users, categories) observed: engagement history shares, noisy taste
    user_tenure_days: np.ndarray
    user_device: np.ndarray  # (users,) index into config.devices

    @classmethod
    def create(cls, config: SimulatorConfig) -> World:
        cat = config.catalogue
        rng = np.random.default_rng([config.seed, 1])
        is_bait = rng.random(cat.items) < cat.bait_share
        bait = np.where(is_bait, rng.beta(6, 2, cat.items), rng.beta(1.2, 6, cat.items))
        quality = np.where(is_bait, rng.beta(2, 6, cat.items), rng.beta(4, 3, cat.items))
        rating = np.clip(1 + 4 * quality + rng.normal(0, 0.5, cat.items), 1, 5)
        rating[rng.random(cat.items) < cat.rating_missing_share] = np.nan
        taste = rng.dirichlet(np.full(cat.categories, cat.taste_concentration), cat.users)
        activity = rng.pareto(1.5, cat.users) + 1
        device_p = np.array(list(config.devices.values()))
        return cls(
            config=config,
            item_category=rng.integers(0, cat.categories, cat.items),
            item_bait=bait,
            item_is_bait=is_bait,
            item_quality=quality,
            item_price=np.round(np.exp(rng.normal(3.0, 0.8, cat.items)), 2),
            item_published_ms=config.start_ms - (rng.exponential(30, cat.items) * DAY_MS).astype(np.int64),
            item_popularity=rng.normal(0, 1, cat.items),
            item_headline_score=np.clip(bait + rng.normal(0, cat.headline_noise, cat.items), 0, 1),
            item_rating=rating,
            user_taste=taste,
            user_activity=activity / activity.sum(),
            user_affinity=np.clip(taste + rng.normal(0, 0.05, taste.shape), 0, 1),
            user_tenure_days=rng.integers(0, 2000, cat.users),
            user_device=rng.choice(len(device_p), cat.users, p=device_p / device_p.sum()),
        )

    # -- behaviour: pure functions of hidden state, vectorised over (user, item, position) arrays ----------

    def taste_term(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """How much the item's category suits the user, centred so that an indifferent user scores about 0."""
        share = self.user_taste[users, self.item_category[items]]
        return np.sqrt(share) - np.sqrt(1.0 / self.config.catalogue.categories)

    def examination_probability(self, positions: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + positions)) ** self.config.behaviour.position_bias_power

    def attractiveness(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """p(click | examined)."""
        b = self.config.behaviour
        logit = (b.click_intercept + b.click_bait_weight * self.item_bait[items]
                 + b.click_taste_weight * self.taste_term(users, items) + b.click_quality_weight * self.item_quality[items])
        return sigmoid(logit)

    def click_probability(self, users, items, positions) -> np.ndarray:
        return self.examination_probability(positions) * self.attractiveness(users, items)

    def cart_probability(self, users, items) -> np.ndarray:
        """p(add to cart | click)."""
        b = self.config.behaviour
        logit = (b.cart_intercept + b.cart_quality_weight * self.item_quality[items]
                 + b.cart_taste_weight * self.taste_term(users, items) + b.cart_bait_weight * self.item_bait[items])
        return sigmoid(logit)

    def purchase_probability(self, items) -> np.ndarray:
        """p(purchase | add to cart)."""
        b = self.config.behaviour
        return sigmoid(b.purchase_intercept + b.purchase_quality_weight * self.item_quality[items])

    def dwell_log_median(self, items) -> np.ndarray:
        b = self.config.behaviour
        return (np.log(b.dwell_median_s) + b.dwell_quality_weight * (self.item_quality[items] - 0.5)
                - b.dwell_bait_weight * self.item_bait[items])

    def expected_outcomes(self, users, items, positions) -> dict[str, np.ndarray]:
        """True expected clicks, carts and purchases of showing `items` to `users` at `positions`."""
        click = self.click_probability(users, items, positions)
        cart = click * self.cart_probability(users, items)
        return {"click": click, "add_to_cart": cart, "purchase": cart * self.purchase_probability(items)}

    # -- ground truth file ---------------------------------------------------------------------------

    def save(self, path: Path) -> Path:
        """Writes the hidden truth to `path` (.npz) with the config beside it; never part of the events."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **{name: getattr(self, name) for name in _ARRAYS},
                            config=np.array(self.config.model_dump_json()))
        return path

    @classmethod
    def load(cls, path: Path) -> World:
        with np.load(path) as data:
            config = SimulatorConfig.model_validate(json.loads(str(data["config"])))
            return cls(config=config, **{name: data[name] for name in _ARRAYS})

    def item_id(self, item: int) -> str:
        return f"i{item:06d}"

    def user_id(self, user: int) -> str:
        return f"u{user:07d}"
