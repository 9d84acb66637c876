"""A canary where offline cannot decide: a candidate the off-policy check found inconclusive serves a share of
users, split by a seeded hash of the user (`serving.policies.SplitPolicy`), for a day beside production, and
the split test's purchases per impression decide it (`ab.analysis.analyse`, with the sample-ratio check).

One canary is in flight at a time, kept in `<loop.work_dir>/canary.json`: opened by the audit that found its
candidate inconclusive, served from the next day, decided once that day's examples are complete. The closed loop
serves it itself (`serve`); on a schedule, whatever serves production's traffic asks `serving_policy` (as
`valueloop simulate` does), and the retraining DAG's run for the served day decides it. It promotes
when the split is sound and the 95% interval of the candidate's relative change in purchases per impression is
above -`audit.canary_purchase_drop`. Otherwise it is held: a broken split, or an interval that cannot show it,
holds it as inconclusive (on the sinks that do not page); an interval wholly below the margin holds it as a
block, which pages. If production moves while the canary is in flight, the canary is dropped: it no longer
tests the candidate against what serves.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ab.analysis import analyse, load_impressions
from config import Settings
from promotion.registry import Registry
from serving.policies import SplitPolicy
from valueloop import loop
from valueloop.policies import LOGGING, policy_from

CANARY_FILE = "canary.json"
DECIDED_FILE = "canaries.jsonl"  # every canary decided, one `CanaryDecision` and what was done a line


@dataclasses.dataclass(frozen=True)
class Canary:
    """A candidate split-tested against production: the day it was audited, the versions, the arms' policy names
    as the events log them, the candidate's share of users, and the day it served (None until it has)."""

    audited_day: str
    candidate: int
    production: int | None
    control: str
    treatment: str
    share: float
    seed: int
    served_day: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class CanaryDecision:
    canary: Canary
    promote: bool
    status: str  # pass, inconclusive or block
    reason: str
    analysis: dict  # `ab.analysis.ABResult.as_dict`

    def as_dict(self) -> dict:
        return {"canary": self.canary.as_dict(), "promote": self.promote, "status": self.status,
                "reason": self.reason, "analysis": self.analysis}


def canary_file(settings: Settings) -> Path:
    return Path(settings.loop.work_dir) / CANARY_FILE


def in_flight(settings: Settings) -> Canary | None:
    path = canary_file(settings)
    return Canary(**json.loads(path.read_text())) if path.exists() else None


def decided(settings: Settings) -> list[dict]:
    """Every canary decided so far, oldest first: its `CanaryDecision` and what was done."""
    path = Path(settings.loop.work_dir) / DECIDED_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def _close(settings: Settings, decision: CanaryDecision, done: dict) -> dict:
    """Records the decision and what was done, then closes the canary; a canary recorded already (a run that
    died before closing it) is recorded once."""
    path = Path(settings.loop.work_dir) / DECIDED_FILE
    if not any(d["canary"] == decision.canary.as_dict() for d in decided(settings)):
        with path.open("a") as out:
            out.write(json.dumps({**decision.as_dict(), **done}) + "\n")
    _save(settings, None)
    return done


def _save(settings: Settings, canary: Canary | None) -> None:
    path = canary_file(settings)
    if canary is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(canary.as_dict(), indent=2) + "\n")
    temporary.replace(path)


def open_canary(settings: Settings, day: str, audited: loop.Audited, seed: int) -> Canary | None:
    """Starts a canary for a candidate its audit found inconclusive (served from the next day); None, and
    nothing started, when canaries are off (`loop.canary_share` 0), the audit was not inconclusive, or another
    canary is in flight. The canary this audit already opened is returned again, so a re-run opens nothing new."""
    if settings.loop.canary_share <= 0 or audited.status != "inconclusive":
        return None
    flying = in_flight(settings)
    if flying is not None:
        return flying if (flying.audited_day, flying.candidate) == (day, audited.version) else None
    past = [Canary(**d["canary"]) for d in decided(settings)]
    opened = next((c for c in past if (c.audited_day, c.candidate) == (day, audited.version)), None)
    if opened is not None:  # this audit's canary was served and decided already
        return opened
    registry = Registry(settings.registry)
    control = settings.simulator.logging_policy.name if audited.production is None else \
        f"{registry.name}/v{audited.production}"
    canary = Canary(day, audited.version, audited.production, control, f"{registry.name}/v{audited.version}",
                    settings.loop.canary_share, seed)
    _save(settings, canary)
    return canary


def serve(settings: Settings, canary: Canary, day: str, output: str = "value") -> SplitPolicy:
    """The split that serves the canary on `day`: production's users and the candidate's, by a seeded hash."""
    registry = Registry(settings.registry)
    control = policy_from(settings, LOGGING if canary.production is None else "production", output=output)
    treatment = policy_from(settings, str(registry.version(canary.candidate).model_dir), canary.treatment,
                            output=output)
    _save(settings, dataclasses.replace(canary, served_day=day))
    return SplitPolicy([control, treatment], [1 - canary.share, canary.share], seed=canary.seed)


def serving_policy(settings: Settings, spec: str, day: str, output: str = "value") -> SplitPolicy | None:
    """What serves `day`'s traffic in place of `spec` (a `valueloop.policies` name) while a canary is in flight:
    the split of the canary's control and its candidate, when `spec` is that control (`production`, or the
    logging policy before any model was promoted) and the canary has not served another day yet; None
    otherwise, and then `spec` serves alone. A canary whose production moved is dropped (`superseded`)."""
    canary = in_flight(settings)
    if canary is None or superseded(settings, canary):
        return None
    if spec != (LOGGING if canary.production is None else "production") or canary.served_day not in (None, day):
        return None
    return serve(settings, canary, day, output)


def superseded(settings: Settings, canary: Canary) -> bool:
    """Whether production moved since the canary opened (it then no longer tests against what serves); drops
    such a canary. Production moved to the canary's own candidate is its decision half carried out (a run that
    died before closing it), not a move: that canary stays, to be closed."""
    if Registry(settings.registry).production() in (canary.production, canary.candidate):
        return False
    _save(settings, None)
    return True


def decide(settings: Settings, canary: Canary) -> CanaryDecision:
    """The canary's split test on its served day's examples, and what it decides (`act` carries it out)."""
    start, end = loop.day_range(canary.served_day)
    return decision_on(settings, canary, load_impressions(Path(settings.join.output_dir), start, end))


def decision_on(settings: Settings, canary: Canary, impressions: dict) -> CanaryDecision:
    """What the split test on `impressions` (`ab.analysis.load_impressions`' columns of the served day) decides
    for `canary`."""
    result = analyse(impressions, canary.control, canary.treatment, None,
                     {canary.control: 1 - canary.share, canary.treatment: canary.share})
    lift = next(lift for lift in result.lifts if lift.metric == "purchases_per_impression" and not lift.cuped)
    drop = settings.audit.canary_purchase_drop
    low, high = lift.relative_interval
    said = (f"canary: {canary.treatment} on {canary.share:.0%} of users on {canary.served_day} sold "
            f"{lift.relative:+.1%} [{low:+.1%}, {high:+.1%}] purchases per impression against {canary.control}")
    if not result.valid:
        status, reason = "inconclusive", (f"{said}, but the split is broken (sample-ratio p "
                                          f"{result.sample_ratio.p_value:.2g}): no lift is to be believed")
    elif low >= -drop:
        status, reason = "pass", f"{said}: at least {-drop:+.0%}"
    elif high < -drop:
        status, reason = "block", f"{said}: below {-drop:+.0%}"
    else:
        status, reason = "inconclusive", f"{said}: the interval straddles {-drop:+.0%}"
    return CanaryDecision(canary, status == "pass", status, reason, result.as_dict())


def settle(settings: Settings, day: str, sinks: list | None = None) -> dict | None:
    """Decides and carries out the canary that served `day` (`decide`, `act`), once `day` is labeled; what was
    decided and done, or None when no canary in flight served that day (a superseded one is dropped)."""
    canary = in_flight(settings)
    if canary is None or superseded(settings, canary) or canary.served_day != day:
        return None
    decision = decide(settings, canary)
    return {**decision.as_dict(), **act(settings, decision, sinks)}


def act(settings: Settings, decision: CanaryDecision, sinks: list | None = None) -> dict:
    """Promotes the canaried candidate, or holds it and tells on-call as any held candidate (a block pages,
    the rest go to the sinks that do not page), then closes the canary; returns what was done. A run that died
    before closing it decides the same and acts again: the promotion is found done, the alert found open."""
    canary = decision.canary
    report = (loop.day_dir(settings.loop, canary.audited_day) / "audit" / "report.html").resolve()
    audited = loop.Audited(decision.status, decision.promote, [decision.reason], str(report), canary.production,
                           canary.candidate, None)
    registry = Registry(settings.registry)
    registry.record_verdict(canary.candidate, decision.status, [decision.reason])
    if decision.promote:
        if registry.production() != canary.candidate:
            registry.promote(canary.candidate, canary.production, f"{canary.served_day}: {decision.reason}")
        return _close(settings, decision, {"promoted": canary.candidate})
    held = loop.hold_candidate(settings, canary.served_day, audited, sinks)
    return _close(settings, decision, {"held": canary.candidate, "alerted": held.alerted})
