"""Who ranks the requests: the click-trained logging policy, a model from the registry, or a split test.

Every policy ranks the same way production does: retrieve candidates, score them, sample a slate with
exploration, and log what it showed with each slot's propensity (the probability of choosing that item for that
slot given the items above it) and the policy's name, so that the logs support off-policy evaluation.

- `LoggingPolicy`: the world's built-in click-trained scorer of observed features (the config's
  `logging_policy`), sampled by Plackett-Luce.
- `ModelPolicy`: a SavedModel exported by `valueloop train` scores each candidate from the same served features
  the events carry (its value score, or p(click) for the CTR baseline); the slate is sampled by Plackett-Luce
  over the scores standardised within the request at a temperature, or epsilon-greedily, and on the support
  floor's share of requests uniformly at random (`serving.propensities.Sampling`).
- `SplitPolicy`: users assigned to arms by a seeded hash, each arm ranked by its own policy: an A/B test.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from config.simulator import LoggingPolicyConfig
from serving.propensities import (Exploration, Sampling, epsilon_greedy_probability, floored_conditional,
                                  plackett_luce_probability, plackett_luce_top_marginals, standardised_logits,
                                  target_probability)
from trainer.exported import Predictor, predictor
from schemas.units import HOUR_MS


class Catalogue(Protocol):
    """What serving reads of items and users: their observed tables (a simulated world, or a serving log's
    `FeatureTables`), never a world's hidden truth."""

    item_category: np.ndarray
    item_popularity: np.ndarray
    item_headline_score: np.ndarray
    item_price: np.ndarray
    item_published_ms: np.ndarray
    item_rating: np.ndarray
    user_affinity: np.ndarray
    user_device: np.ndarray
    user_tenure_days: np.ndarray


class Surfaces:
    """Each request's surface (an index into the config's surfaces), drawn when a policy first asks for it.

    A model reads the surface among its features, so it asks first; the logging policy ranks before it looks (and
    re-ranks the requests on surfaces with a headline weight of their own), the order in which the world has
    always drawn its traffic, so a seeded world served by its logging policy delivers the same events."""

    def __init__(self, draw=None, drawn: np.ndarray | None = None):
        self._draw, self._drawn = draw, drawn

    @property
    def drawn(self) -> bool:
        return self._drawn is not None

    def __call__(self) -> np.ndarray:
        if self._drawn is None:
            self._drawn = self._draw()
        return self._drawn

    def subset(self, rows: np.ndarray) -> Surfaces:
        """The surfaces of `rows` (drawn now: a part cannot be drawn apart from the whole)."""
        return Surfaces(drawn=self()[rows])


class Policy(Protocol):
    names: list[str]  # what the Impression's `policy` field says, per arm

    def rank(self, world: Catalogue, users: np.ndarray, surfaces: Surfaces, request_ms: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(slates, propensities, arm, candidates): the shown items and each slot's propensity (requests, slate
        size), each request's arm (an index into `names`) and the candidates it was chosen from."""


def retrieve(world: Catalogue, users: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k candidates per request, drawn without replacement by item popularity (Gumbel top-k)."""
    n_items = len(world.item_category)
    k = min(k, n_items)
    retrieval = world.item_popularity + rng.gumbel(size=(len(users), n_items))
    return np.argpartition(-retrieval, k - 1, axis=1)[:, :k]


def plackett_luce(logits: np.ndarray, slate_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Samples `slate_size` of each row's columns without replacement, with probability proportional to
    exp(logit) among those left; returns the chosen columns and each choice's conditional probability."""
    order = np.argsort(-(logits + rng.gumbel(size=logits.shape)), axis=1)[:, :slate_size]
    return order, plackett_luce_probability(logits, order)


def epsilon_greedy(scores: np.ndarray, slate_size: int, epsilon: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fills each slot with the best remaining column, or with probability `epsilon` a uniformly random remaining
    one; returns the chosen columns and each choice's conditional probability (the audit's own
    `epsilon_greedy_probability`, so that what is logged is what the off-policy check recomputes)."""
    n, m = scores.shape
    taken = np.zeros((n, m), bool)
    order = np.empty((n, slate_size), np.int64)
    rows = np.arange(n)
    for slot in range(slate_size):
        best = np.argmax(np.where(taken, -np.inf, scores), axis=1)
        # a uniform pick among the columns not taken: the j-th free column for a uniform j
        j = rng.integers(0, m - slot, n)
        free_rank = np.cumsum(~taken, axis=1) - 1
        uniform = np.argmax((free_rank == j[:, None]) & ~taken, axis=1)
        explore = rng.random(n) < epsilon
        order[:, slot] = np.where(explore, uniform, best)
        taken[rows, order[:, slot]] = True
    return order, epsilon_greedy_probability(scores, order, epsilon)


class LoggingPolicy:
    """The world's click-trained scorer: sensational headlines, category affinity and rating, Plackett-Luce at
    the config's temperature (with another headline weight on the surfaces the config names)."""

    def __init__(self, config: LoggingPolicyConfig, surfaces: list[str]):
        self.config = config
        self.names = [config.name]
        self._surface_weight = {surfaces.index(s): w for s, w in config.headline_weight_by_surface.items()}

    def logits(self, world: Catalogue, users: np.ndarray, candidates: np.ndarray,
               surfaces: np.ndarray | None) -> np.ndarray:
        """The Plackett-Luce logits of each request's candidates: the scorer over the temperature (with each
        surface's own headline weight; the default one where `surfaces` is None)."""
        policy = self.config
        rating = np.nan_to_num(world.item_rating[candidates], nan=3.0)
        affinity = world.user_affinity[users[:, None], world.item_category[candidates]]
        headline_weight = np.full((len(users), 1), policy.headline_weight)
        for surface, weight in self._surface_weight.items() if surfaces is not None else ():
            headline_weight[surfaces == surface] = weight
        return (headline_weight * world.item_headline_score[candidates] + policy.affinity_weight * affinity
                + policy.rating_weight * (rating - 3.0)) / policy.temperature

    def slot_marginals(self, tables: Catalogue, users: np.ndarray, candidates: np.ndarray, surfaces: np.ndarray,
                       slots: int) -> np.ndarray:
        """P(candidate at slot) (requests, candidates, slots) of the first `slots` slots, as this policy serves
        the requests' `candidates`: what off-policy evaluation weighs its log by."""
        return plackett_luce_top_marginals(self.logits(tables, users, candidates, surfaces), slots)

    def rank(self, world, users, surfaces, request_ms, rng):
        if surfaces.drawn:
            return self._rank(world, users, surfaces(), request_ms, rng)
        slates, propensity, arm, candidates = self._rank(world, users, None, request_ms, rng)
        drawn = surfaces()
        for surface in self._surface_weight:
            on = drawn == surface
            if on.any():
                slates[on], propensity[on], _, candidates[on] = self._rank(world, users[on], drawn[on],
                                                                           request_ms[on], rng)
        return slates, propensity, arm, candidates

    def _rank(self, world, users, surfaces, request_ms, rng):
        policy = self.config
        candidates = retrieve(world, users, policy.candidates, rng)
        logits = self.logits(world, users, candidates, surfaces)
        order, propensity = plackett_luce(logits, min(policy.slate_size, candidates.shape[1]), rng)
        return np.take_along_axis(candidates, order, axis=1), propensity, np.zeros(len(users), np.int64), candidates


def candidate_features(world, users: np.ndarray, candidates: np.ndarray, surfaces: list[str],
                       surface: np.ndarray, devices: list[str], request_ms: np.ndarray) -> dict[str, np.ndarray]:
    """The served features of every (request, candidate), flattened row-major: what the Impression would carry if
    the candidate were shown, so a model scores candidates from exactly what it was trained on. `world` is
    anything with the observed item and user tables (a `World`, or a serving log's `FeatureTables`)."""
    n, m = candidates.shape
    items = candidates.ravel()
    flat_users = np.repeat(users, m)
    category = world.item_category[items]
    age_ms = np.repeat(request_ms, m) - world.item_published_ms[items]
    return {
        "user_id": np.char.add("u", np.char.zfill(flat_users.astype(str), 7)).astype(object),
        "item_id": np.char.add("i", np.char.zfill(items.astype(str), 6)).astype(object),
        "item_category": np.char.add("c", np.char.zfill(category.astype(str), 2)).astype(object),
        "surface": np.asarray(surfaces, object)[np.repeat(surface, m)],
        "device": np.asarray(devices, object)[world.user_device[flat_users]],
        "item_price": world.item_price[items].astype(np.float32),
        "item_age_hours": (age_ms / HOUR_MS).astype(np.float32),
        "item_rating": world.item_rating[items].astype(np.float32),
        "headline_score": world.item_headline_score[items].astype(np.float32),
        "user_category_affinity": world.user_affinity[flat_users, category].astype(np.float32),
        "user_tenure_days": world.user_tenure_days[flat_users].astype(np.int64),
    }


class ModelPolicy:
    """Ranks by a model's `output` (its value score, or p(click)) sampled as `sampling` says; logs `name`. The
    model is a SavedModel directory, or anything that predicts as one (`trainer.exported.Predictor`)."""

    def __init__(self, model_dir: Path | Predictor, name: str, output: str = "value",
                 surfaces: list[str] | None = None, devices: list[str] | None = None, candidates: int = 50,
                 slate_size: int = 10, sampling: Sampling = Sampling()):
        self.model = predictor(model_dir)
        outputs = self.model.metadata["signature"]["outputs"]
        if output not in outputs:
            raise ValueError(f"{getattr(self.model, 'path', name)}: the model has no output {output!r} to rank by "
                             f"(it has {outputs})")
        self.names, self.output = [name], output
        self.surfaces, self.devices = surfaces, devices
        self.candidates, self.slate_size, self.sampling = candidates, slate_size, sampling

    def scores(self, world, users, candidates, surface, request_ms) -> np.ndarray:
        columns = candidate_features(world, users, candidates, self.surfaces, surface, self.devices, request_ms)
        return self.model.predict(columns)[self.output].reshape(candidates.shape).astype(np.float64)

    def rank(self, world, users, surfaces, request_ms, rng):
        surfaces = surfaces()
        candidates = retrieve(world, users, self.candidates, rng)
        scores = self.scores(world, users, candidates, surfaces, request_ms)
        order, propensity = sample(scores, min(self.slate_size, candidates.shape[1]), self.sampling, rng)
        return np.take_along_axis(candidates, order, axis=1), propensity, np.zeros(len(users), np.int64), candidates


def sample(scores: np.ndarray, slate_size: int, sampling: Sampling,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each row's slate of `slate_size` columns, sampled from `scores` as `sampling` says, and each slot's
    conditional probability of its choice (`serving.propensities.conditional_probability`): a uniformly random
    slate on the floor's share of rows, the policy's elsewhere."""
    if sampling.exploration is Exploration.EPSILON_GREEDY:
        order, policy = epsilon_greedy(scores, slate_size, sampling.epsilon, rng)
    else:
        order, policy = plackett_luce(standardised_logits(scores, sampling.temperature), slate_size, rng)
    if sampling.floor == 0:
        return order, policy
    uniform = rng.random(len(scores)) < sampling.floor
    if uniform.any():
        order[uniform] = np.argsort(rng.random((int(uniform.sum()), scores.shape[1])), axis=1)[:, :slate_size]
        policy[uniform] = target_probability(scores[uniform], order[uniform], sampling.exploration,
                                             sampling.temperature, sampling.epsilon)
    return order, floored_conditional(policy, scores.shape[1], sampling.floor)


def arm_of(users: np.ndarray, shares: list[float], seed: int) -> np.ndarray:
    """Each user's arm: a seeded hash of the user index (splitmix64) against the cumulative shares, so a user
    stays in one arm across requests and days."""
    with np.errstate(over="ignore"):
        h = users.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    u = (h >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.searchsorted(np.cumsum(shares)[:-1], u, side="right")


class SplitPolicy:
    """An A/B test by user: each user is in one arm for every request, each arm ranked by its policy."""

    def __init__(self, arms: list[Policy], shares: list[float] | None = None, seed: int = 0):
        shares = shares or [1.0 / len(arms)] * len(arms)
        if len(shares) != len(arms) or any(s <= 0 for s in shares) or abs(sum(shares) - 1) > 1e-9:
            raise ValueError("a split needs one positive share per arm, summing to 1")
        self.arms, self.shares, self.seed = arms, shares, seed
        self.names = [p.names[0] for p in arms]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"the arms' policies need distinct names to tell their logs apart: {self.names}")

    def rank(self, world, users, surfaces, request_ms, rng):
        arm = arm_of(users, self.shares, self.seed)
        ranked = {a: policy.rank(world, users[arm == a], surfaces.subset(arm == a), request_ms[arm == a], rng)
                  for a, policy in enumerate(self.arms) if np.any(arm == a)}
        slate_size = min(r[0].shape[1] for r in ranked.values())
        width = min(r[3].shape[1] for r in ranked.values())
        slates = np.empty((len(users), slate_size), np.int64)
        propensity = np.empty((len(users), slate_size))
        candidates = np.empty((len(users), width), np.int64)
        for a, (s, p, _, c) in ranked.items():
            on = arm == a
            slates[on], propensity[on], candidates[on] = s[:, :slate_size], p[:, :slate_size], c[:, :width]
        return slates, propensity, arm, candidates

