"""What each simulated request was shown and what the world made of it, judged by the hidden truth.

A policy's true worth is known here and nowhere else: per request the items shown and the candidates they were
chosen from, the clicks and purchases the world drew, and the expected utility of the slate against the best
slate of the same candidates. The utility of showing item i to user u at position k is the chance of a click
there times the item's hidden quality: what a click is worth to the user, so bait that is clicked and
abandoned earns little.
"""
from __future__ import annotations

import numpy as np

from serving.log import FeatureTables, ServingLog
from simulator.world import World


def utility(world: World, users: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Expected utility of showing `items` to `users` at `positions` (broadcast): p(click) x hidden quality."""
    return world.click_probability(users, items, positions) * world.item_quality[items]


class ServedLog:
    """Per-request arrays, appended chunk by chunk as the simulation serves: `metrics` sums them up."""

    def __init__(self, names: list[str] | None = None):
        self.names = names
        self._parts: dict[str, list[np.ndarray]] = {}

    def add(self, world: World, users, slates, arm, candidates, clicked, bought, propensity=None, surfaces=None,
            request_ms=None) -> None:
        positions = np.arange(slates.shape[1])[None, :]
        served = utility(world, users[:, None], slates, positions)
        # the oracle: the candidates in order of their true worth, the best at the most examined position
        worth = world.attractiveness(users[:, None], candidates) * world.item_quality[candidates]
        best = -np.sort(-worth, axis=1)[:, :slates.shape[1]]
        oracle = world.examination_probability(positions) * best
        expected = world.expected_outcomes(users[:, None], slates, positions)
        for name, value in (("users", users), ("slates", slates), ("arm", arm), ("clicked", clicked),
                            ("bought", bought), ("utility", served.sum(axis=1)), ("oracle", oracle.sum(axis=1)),
                            ("expected_purchases", expected["purchase"].sum(axis=1)),
                            ("expected_clicks", expected["click"].sum(axis=1)), ("candidates", candidates),
                            ("order", np.argmax(candidates[:, :, None] == slates[:, None, :], axis=1)),
                            ("propensity", propensity), ("surfaces", surfaces), ("request_ms", request_ms)):
            if value is not None:
                self._parts.setdefault(name, []).append(np.asarray(value))

    def serving_log(self, policy: str, world: World, surfaces: list[str], devices: list[str],
                    arm: int | None = None):
        """What the serving system logged, with the candidate sets and the feature tables it read
        (`serving.log.ServingLog`); of one arm's requests only when `arm` is given (a split's control: the
        requests one policy served)."""
        a = self.arrays(arm)
        return ServingLog(policy, FeatureTables.of(world, surfaces, devices), a["users"], a["surfaces"],
                          a["request_ms"], a["candidates"], a["order"], a["propensity"], a["clicked"], a["bought"])

    def arrays(self, arm: int | None = None) -> dict[str, np.ndarray]:
        if not self._parts:
            raise ValueError("nothing served yet")
        out = {name: np.concatenate(parts) for name, parts in self._parts.items()}
        if arm is not None:
            keep = out["arm"] == arm
            out = {name: value[keep] for name, value in out.items()}
        return out

    def metrics(self, world: World, arm: int | None = None, pairs: int = 20_000, seed: int = 0) -> dict:
        """The round's truth: CTR, purchases per 1000 impressions (drawn and expected), bait share of
        impressions, mean true utility per impression, regret per request against the oracle slate, and
        homogenisation: the mean Jaccard overlap of two users' clicked item sets (Chaney et al., 2018) over
        `pairs` seeded pairs of users who clicked."""
        a = self.arrays(arm)
        impressions = a["slates"].size
        return {
            "requests": int(len(a["users"])),
            "impressions": int(impressions),
            "ctr": float(a["clicked"].mean()),
            "purchases_per_1000": float(a["bought"].sum() / impressions * 1000),
            "expected_purchases_per_1000": float(a["expected_purchases"].sum() / impressions * 1000),
            "bait_share": float(world.item_is_bait[a["slates"]].mean()),
            "mean_true_utility": float(a["utility"].sum() / impressions),
            "regret": float((a["oracle"] - a["utility"]).mean()),
            "homogenisation": homogenisation(a["users"], a["slates"], a["clicked"], pairs, seed),
        }


def homogenisation(users: np.ndarray, slates: np.ndarray, clicked: np.ndarray, pairs: int, seed: int) -> float:
    """Mean Jaccard index |A n B| / |A u B| of the clicked item sets of random pairs of distinct users."""
    rows = np.repeat(users, slates.shape[1])[clicked.ravel()]
    items = slates.ravel()[clicked.ravel()]
    if len(rows) == 0:
        return 0.0
    consumed: dict[int, set] = {}
    for u, i in zip(rows.tolist(), items.tolist()):
        consumed.setdefault(u, set()).add(i)
    who = np.fromiter(consumed, np.int64)
    if len(who) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, len(who), (2, pairs))
    distinct = first != second
    total = 0.0
    for x, y in zip(who[first[distinct]].tolist(), who[second[distinct]].tolist()):
        a, b = consumed[x], consumed[y]
        total += len(a & b) / len(a | b)
    return total / max(int(distinct.sum()), 1)
