"""A/B analysis of a split test randomised by user: lifts with intervals that respect the unit of randomisation.

Users, not impressions, are what the split assigns, so one user's impressions are not independent draws: a
heavy user moves a whole arm. Each metric here is a ratio of per-user sums (purchases per impression, clicks
per impression), and its variance is the delta method's over users (Deng et al., "Applying the Delta Method in
Metric Analytics", KDD 2018). CUPED (Deng et al., WSDM 2013) subtracts the part of each user's linearised metric
that their pre-period engagement predicts, which narrows the interval without moving the expected lift. A
sample-ratio mismatch (Fabijan et al., KDD 2019) — arms whose user counts are unlikely under the designed split —
means the assignment or the logging is broken, and then no lift is to be believed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from trainer.data import find_partitions, load_columns

SRM_P = 0.0005  # below this the split is taken as broken (a false alarm once in 2000 healthy tests)


@dataclass(frozen=True)
class Arm:
    """Per-user sums of one arm: numerator (e.g. purchases), denominator (impressions), and pre-period
    covariates (users, k), e.g. each user's clicks and impressions before the test."""

    name: str
    numerator: np.ndarray
    denominator: np.ndarray
    covariate: np.ndarray | None = None

    @property
    def users(self) -> int:
        return len(self.denominator)

    @property
    def ratio(self) -> float:
        return float(self.numerator.sum() / self.denominator.sum())

    def linearised(self) -> np.ndarray:
        """Each user's first-order contribution to the ratio: (y - R n) / mean(n), whose mean is 0 and whose
        variance over users, divided by the users, is the delta method's variance of R."""
        return (self.numerator - self.ratio * self.denominator) / self.denominator.mean()


@dataclass(frozen=True)
class Lift:
    metric: str
    control: float
    treatment: float
    difference: float  # treatment - control, per unit of the denominator
    interval: tuple[float, float]  # 95% of the difference
    relative: float  # difference / control
    relative_interval: tuple[float, float]
    p_value: float
    standard_error: float
    power: float  # to detect a difference as large as the one seen, at alpha 0.05 two-sided
    minimum_detectable: float  # the difference detectable with 80% power
    cuped: bool
    variance_reduction: float  # 1 - var(cuped) / var(plain); 0 without CUPED

    def as_dict(self) -> dict:
        return asdict(self)


def _power(effect: float, se: float, alpha: float = 0.05) -> float:
    z = stats.norm.ppf(1 - alpha / 2)
    shift = abs(effect) / se if se > 0 else np.inf
    return float(stats.norm.cdf(shift - z) + stats.norm.cdf(-shift - z))


def ratio_lift(metric: str, control: Arm, treatment: Arm, cuped: bool = False, alpha: float = 0.05) -> Lift:
    """The difference of the arms' ratios with its delta-method interval; with `cuped`, adjusted by each arm's
    pre-period covariate with one pooled coefficient."""
    if control.users < 2 or treatment.users < 2:
        raise ValueError(f"{metric}: each arm needs at least two users ({control.users}, {treatment.users})")
    lin = [control.linearised(), treatment.linearised()]
    plain_var = sum(np.var(v, ddof=1) / len(v) for v in lin)
    difference = treatment.ratio - control.ratio
    variance, reduction = plain_var, 0.0
    if cuped:
        if control.covariate is None or treatment.covariate is None:
            raise ValueError(f"{metric}: CUPED needs each arm's pre-period covariate")
        x = [np.asarray(a.covariate, np.float64).reshape(a.users, -1) for a in (control, treatment)]
        centred_x = np.concatenate([xi - xi.mean(axis=0) for xi in x])
        theta = np.linalg.lstsq(centred_x, np.concatenate(lin), rcond=None)[0]  # pooled within-arm regression
        pooled_mean = np.concatenate(x).mean(axis=0)
        difference -= float((x[1].mean(axis=0) - x[0].mean(axis=0)) @ theta)
        adjusted = [li - (xi - pooled_mean) @ theta for li, xi in zip(lin, x)]
        variance = sum(np.var(v, ddof=1) / len(v) for v in adjusted)
        reduction = 1 - variance / plain_var if plain_var > 0 else 0.0
    se = float(np.sqrt(variance))
    z = stats.norm.ppf(1 - alpha / 2)
    p = float(2 * stats.norm.sf(abs(difference) / se)) if se > 0 else float(difference == 0)
    base = control.ratio
    return Lift(metric, base, treatment.ratio, float(difference), (difference - z * se, difference + z * se),
                difference / base if base else float("nan"),
                ((difference - z * se) / base, (difference + z * se) / base) if base else (float("nan"),) * 2,
                p, se, _power(difference, se, alpha), float((z + stats.norm.ppf(0.8)) * se), cuped, float(reduction))


@dataclass(frozen=True)
class SampleRatio:
    users: dict[str, int]
    expected_shares: dict[str, float]
    chi_square: float
    p_value: float

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_P


def sample_ratio(users: dict[str, int], expected_shares: dict[str, float] | None = None) -> SampleRatio:
    """Pearson's chi-square of the arms' user counts against the designed shares (equal by default)."""
    names = list(users)
    shares = expected_shares or {n: 1 / len(names) for n in names}
    observed = np.array([users[n] for n in names], np.float64)
    expected = observed.sum() * np.array([shares[n] for n in names])
    chi2, p = stats.chisquare(observed, expected)
    return SampleRatio(dict(users), dict(shares), float(chi2), float(p))


@dataclass(frozen=True)
class ABResult:
    control: str
    treatment: str
    sample_ratio: SampleRatio
    lifts: list[Lift]

    @property
    def valid(self) -> bool:
        return not self.sample_ratio.mismatch

    def as_dict(self) -> dict:
        srm = self.sample_ratio
        return {"control": self.control, "treatment": self.treatment, "valid": self.valid,
                "sample_ratio": {**asdict(srm), "mismatch": srm.mismatch, "threshold": SRM_P},
                "lifts": [lift.as_dict() for lift in self.lifts]}


def per_user(user_ids: np.ndarray, arms: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per arm, per-user sums of each column and the users' ids, from one row per impression."""
    out = {}
    for arm in np.unique(arms):
        rows = arms == arm
        users, index = np.unique(user_ids[rows], return_inverse=True)
        out[str(arm)] = {"users": users, **{name: np.bincount(index, np.asarray(values)[rows].astype(np.float64),
                                                               len(users)) for name, values in columns.items()}}
    return out


# (metric, per-user numerator, per-user denominator): the ratio metrics per impression, and per user, where
# the heavy users' persistent engagement gives CUPED the most to take out
METRICS = (("purchases_per_impression", "purchases", "impressions"), ("ctr", "clicks", "impressions"),
           ("purchases_per_user", "purchases", "user"), ("clicks_per_user", "clicks", "user"))


def analyse(impressions: dict[str, np.ndarray], control: str, treatment: str,
            pre_period: dict[str, np.ndarray] | None = None,
            expected_shares: dict[str, float] | None = None) -> ABResult:
    """The split test in `impressions` (one row per impression: user_id, arm, clicked, purchased): the
    sample-ratio check over users, then each of `METRICS`, plainly and, with
    `pre_period` (user_id, clicked: one row per impression before the test), with CUPED on each user's
    pre-period clicks and impressions (0 for a user new in the test)."""
    arms = per_user(np.asarray(impressions["user_id"]), np.asarray(impressions["arm"]),
                    {"impressions": np.ones(len(impressions["arm"])), "clicks": impressions["clicked"],
                     "purchases": impressions["purchased"]})
    for sums in arms.values():
        sums["user"] = np.ones(len(sums["users"]))
    missing = {control, treatment} - set(arms)
    if missing:
        raise ValueError(f"no impressions of arm(s) {sorted(missing)}; the logs hold {sorted(arms)}")
    covariates = {}
    if pre_period is not None:
        pre_users, index = np.unique(np.asarray(pre_period["user_id"]), return_inverse=True)
        engagement = np.stack([np.bincount(index, np.asarray(pre_period["clicked"], np.float64), len(pre_users)),
                               np.bincount(index, minlength=len(pre_users)).astype(np.float64)], axis=1)
        for name in (control, treatment):
            at = np.minimum(np.searchsorted(pre_users, arms[name]["users"]), len(pre_users) - 1)
            found = pre_users[at] == arms[name]["users"]
            covariates[name] = np.where(found[:, None], engagement[at], 0.0)
    srm = sample_ratio({name: len(arms[name]["users"]) for name in (control, treatment)}, expected_shares)
    lifts = []
    for metric, numerator, denominator in METRICS:
        pair = [Arm(name, arms[name][numerator], arms[name][denominator], covariates.get(name))
                for name in (control, treatment)]
        lifts.append(ratio_lift(metric, *pair))
        if covariates:
            lifts.append(ratio_lift(metric, *pair, cuped=True))
    return ABResult(control, treatment, srm, lifts)


def load_impressions(examples: Path, start_ms: int, end_ms: int) -> dict:
    """user_id, arm (the logged policy), clicked and purchased of every labeled impression in the window of the
    partitions under `examples`: `analyse`'s input."""
    columns = load_columns(find_partitions(examples, start_ms, end_ms))
    return {"user_id": columns["user_id"], "arm": np.char.decode(columns["policy"].astype(bytes)),
            "clicked": columns["clicked"] > 0, "purchased": columns["purchased"] > 0}
