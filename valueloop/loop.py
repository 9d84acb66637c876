"""The loop's steps, as the Airflow DAGs run them and as `make demo` runs them: label an hour that is old enough,
check a day's manifests, train a candidate, register it, audit it against production, then promote it or keep
production and alert.

Each step is idempotent for its day: it writes under `loop.work_dir/<day>/`, and a second run of the same day
finds what the first wrote (the same model files, the same registered version, the same open alert) instead
of making another. The day D's candidate is trained on the `loop.train_days` days before D and audited on D
itself, which it has not seen: D against D-1 for the data, the candidate against production on D for the model.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from config import Settings, alert_book
from config.loop import LoopSettings
from config.trainer import preset
from audit.drift import Verdict
from ope.check import OffPolicyCheck
from ope.check import offpolicy_check as check
from pipelines.run import land_serving_log, run_bounded_join
from pipelines.partitions import partition_of
from pipelines.serving_log import landed_manifests, read_landed
from pipelines.tf_example import parse_example_fields, read_records
from promotion.alerts import Alert, AlertBook, Severity, pages, sinks_from_environment
from promotion.registry import Registry
from schemas.units import DAY_MS, HOUR_MS, epoch_ms, hour_text, utc
from gate.served import Served, ServedCheck, served_check
from serving.log import FeatureStore, ServingLog, assemble, candidate_predictions
from serving.policies import LoggingPolicy
from serving.propensities import Sampling, slot_marginals
from trainer.data import find_partitions
from trainer.exported import METADATA_FILE, Predictor
from valueloop.audit import run_audit

_LOG = logging.getLogger("valueloop.loop")


class ManifestsMissing(RuntimeError):
    """Hours of a window that have no complete partition yet; the message lists them."""


@dataclasses.dataclass(frozen=True)
class ManifestsChecked:
    """What `check_manifests` found: every hour of the training days and the audited day, and their examples."""

    hours: int
    examples: int


@dataclasses.dataclass(frozen=True)
class HourManifest:
    """What an hour's partition holds, as the labeling DAG publishes it: the hour, the partition, its examples,
    its URI and its label counts; and the requests of the hour's serving log landed beside it, with the dead
    letters of that landing. Crosses Airflow's XCom as `as_dict`."""

    hour: str
    partition: str
    examples: int
    uri: str
    labels: dict
    served_requests: int = 0
    serving_log_dead_letters: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class HourToPublish:
    """An hour whose complete partition is not yet published at its current revision: its asset partition key
    (`scheduling.assets.HOUR_KEY`), the partition, the revision, its examples and its URI."""

    key: str
    partition: str
    revision: int
    examples: int
    uri: str


@dataclasses.dataclass(frozen=True)
class Audited:
    """What the audit of a day's candidate hands the decision: the verdict, whether it may be promoted, why, the
    report, and the production version it was judged against. Crosses Airflow's XCom as `as_dict`."""

    status: str  # pass, warn, block or inconclusive
    promotable: bool
    reasons: list[str]
    report: str  # the report's path
    production: int | None  # the version production held when the candidate was judged
    version: int
    offpolicy: dict | None  # the off-policy check (`ope.check.OffPolicyCheck.as_dict`), where it ran
    served: dict | None = None  # the served check (`gate.served.ServedCheck.as_dict`), where it ran

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Audited:
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Held:
    """A candidate kept out of production: production as it stays, the version held, the sinks that took the
    alert (none yet for one deferred to the day's digest)."""

    production: int | None
    held: int
    alerted: list[str]
    digest: bool = False  # told in the day's digest (`send_digest`), not at once


def day_range(day: str) -> tuple[int, int]:
    """A UTC day (YYYY-MM-DD) as [start, end) in milliseconds."""
    start = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    return epoch_ms(start), epoch_ms(start) + DAY_MS


def labeling_lag_ms(settings: Settings) -> int:
    """How long after an hour ends its labels are final: the longest attribution window and the allowed
    lateness."""
    return settings.join.labels.horizon_ms + settings.join.allowed_lateness_ms


def hour_to_label(settings: Settings, interval_end_ms: int) -> int:
    """The start of the newest hour whose labels are final at `interval_end_ms` (a DAG run's data interval end)."""
    return (interval_end_ms - labeling_lag_ms(settings)) // HOUR_MS * HOUR_MS - HOUR_MS


def label_hour(settings: Settings, hour_ms: int, runner: str = "direct") -> HourManifest:
    """The bounded join of one hour: the Kafka offsets that hold it, labeled into its partition; then the hour's
    serving log landed beside it (`pipelines.run.land_serving_log`). Returns the partition's manifest summary
    (`hour_manifest`), which reads the landed requests and their dead letters from the landing's manifest."""
    run_bounded_join(settings.kafka, settings.join, runner=runner, from_ms=hour_ms, to_ms=hour_ms + HOUR_MS)
    land_serving_log(settings.kafka, settings.join, hour_ms, hour_ms + HOUR_MS, runner)
    return hour_manifest(settings, hour_ms)


def hour_manifest(settings: Settings, hour_ms: int) -> HourManifest:
    """What an hour's partition holds (its manifest's partition, examples and labels) and its URI, with the
    requests of its serving log landed and that landing's dead letters (none where nothing was landed)."""
    try:
        [partition] = find_partitions(settings.join.output_dir, hour_ms, hour_ms + HOUR_MS)
    except FileNotFoundError:
        raise ManifestsMissing(f"{settings.join.output_dir}: no complete partition for {hour_text(hour_ms)}") from None
    manifest = partition.manifest
    directory = settings.join.serving_log_dir
    [landed] = (landed_manifests(directory, hour_ms, hour_ms + HOUR_MS) if directory else []) or [{}]
    return HourManifest(hour_text(hour_ms), manifest["partition"], manifest["examples"],
                        partition.path.parent.resolve().as_uri(), manifest.get("labels", {}),
                        landed.get("requests", 0), landed.get("dead_letters", 0))


def check_manifests(settings: Settings, loop: LoopSettings, day: str) -> ManifestsChecked:
    """Every hour of the training days and of the audited day has a complete partition; raises
    ManifestsMissing naming the hours that do not."""
    start, end = day_range(day)
    first = start - loop.train_days * DAY_MS
    try:
        found = {p.manifest["partition"]: p.examples for p in find_partitions(settings.join.output_dir, first, end)}
    except FileNotFoundError:
        found = {}
    wanted = {utc(ms).strftime("dt=%Y-%m-%d/hour=%H")
              for ms in range(first, end, HOUR_MS)}
    missing = sorted(wanted - found.keys())
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise ManifestsMissing(f"{len(missing)} of {len(wanted)} hours have no complete partition under "
                               f"{settings.join.output_dir}: {shown}")
    return ManifestsChecked(len(wanted), sum(found[h] for h in wanted))


def day_dir(loop: LoopSettings, day: str) -> Path:
    return Path(loop.work_dir) / day


def serving_log_path(loop: LoopSettings, day: str) -> Path:
    return Path(loop.serving_logs) / f"{day}.npz" if loop.serving_logs else day_dir(loop, day) / "serving_log.npz"


class ServingLogIncomplete(RuntimeError):
    """A day whose serving log is landed for some hours only: the gate does not judge on part of a day."""


def serving_log(settings: Settings, day: str) -> ServingLog | None:
    """Production's serving log of `day`, or None when the day has none: the file of it (`serving_log_path`, the
    closed loop writes one) where there is one, else the requests the hourly labeling landed from the serving
    log topic (`pipelines.serving_log`) that production served (those of the policy that served most, when
    production served none), with the outcomes of their impressions from the day's labeled examples
    and the feature tables they name (`serving.log.assemble`). A day landed for some hours only raises
    ServingLogIncomplete: the audit stops, and nothing is promoted on part of a day."""
    path = serving_log_path(settings.loop, day)
    if path.exists():
        return ServingLog.load(path)
    start, end = day_range(day)
    landed = landed_manifests(settings.join.serving_log_dir, start, end) if settings.join.serving_log_dir else []
    if not landed:
        _LOG.info("no serving log for %s (no %s, nothing landed under %s): the off-policy and served checks do "
                  "not run", day, path, settings.join.serving_log_dir)
        return None
    if len(landed) < (end - start) // HOUR_MS:
        have = {m["partition"] for m in landed}
        missing = [hour_text(h) for h in range(start, end, HOUR_MS) if partition_of(h) not in have]
        raise ServingLogIncomplete(f"the serving log of {day} is landed for {len(landed)} of its "
                                   f"{(end - start) // HOUR_MS} hours under {settings.join.serving_log_dir} "
                                   f"(missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}): "
                                   "the labeling DAG lands each hour; the candidate is not judged on part of a day")
    requests = read_landed(settings.join.serving_log_dir, start, end)
    if not requests:
        raise ServingLogIncomplete(f"the serving log of {day} is landed but holds no request")
    snapshots = Counter(r["feature_snapshot"] for r in requests)
    snapshot = max(sorted(snapshots), key=snapshots.get)
    # a canary's day logs two arms: the gate weighs what production (as it stands now) served
    registry = Registry(settings.registry)
    production = registry.production()
    serving = settings.simulator.logging_policy.name if production is None else f"{registry.name}/v{production}"
    assembled = assemble([r for r in requests if r["feature_snapshot"] == snapshot],
                         FeatureStore(settings.loop.feature_store).get(snapshot),
                         labeled_outcomes(settings.join.output_dir, start, end),
                         serving if any(r["policy"] == serving for r in requests) else None)
    _LOG.info("serving log of %s: %d of %d landed requests (%d of other feature snapshots, %s of other policies, "
              "%d of another shape, %d not labeled yet)", day, assembled.kept, len(requests),
              len(requests) - snapshots[snapshot], assembled.other_policies,
              assembled.other_shapes, assembled.unlabeled)
    if assembled.log is None:  # requests were served and logged, but none can be weighed: do not judge without
        raise ServingLogIncomplete(f"the serving log of {day}: none of its {len(requests)} landed requests has "
                                   "every shown slot labeled under " + str(settings.join.output_dir))
    return assembled.log


def labeled_outcomes(examples: Path, start_ms: int, end_ms: int) -> dict[tuple[str, int], tuple[bool, bool]]:
    """(request id, position) -> (clicked, purchased) of every labeled impression served in [start_ms, end_ms)."""
    outcomes: dict[tuple[str, int], tuple[bool, bool]] = {}
    try:
        partitions = find_partitions(examples, start_ms, end_ms)
    except FileNotFoundError:
        return outcomes
    for partition in partitions:
        for record in read_records(partition.path):
            fields = parse_example_fields(record)
            request_id = fields["request_id"]
            key = (request_id.decode() if isinstance(request_id, bytes) else request_id, int(fields["position"]))
            outcomes[key] = (bool(fields["clicked"]), bool(fields["purchased"]))
    return outcomes


@dataclasses.dataclass(frozen=True)
class Ranker:
    """How one ranker would serve a log's requests: P(candidate at slot) over the first slots (requests,
    candidates, slots) and its purchase predictions of every candidate (None for a ranker that has none)."""

    marginals: np.ndarray
    purchase: np.ndarray | None

    @property
    def served(self) -> Served:
        return Served(self.marginals, self.purchase)


def ranker_of(settings: Settings, log: ServingLog, model: Path | Predictor | dict[str, np.ndarray] | None) -> Ranker:
    """How `model` (a SavedModel, a `Predictor`, or its `candidate_predictions` on the log) would serve the log's
    requests, sampled as production samples (`loop.serving_*`, the support floor included); None is the policy
    that served the log (`logged_ranker`)."""
    if model is None:
        return logged_ranker(settings, log)
    slots = min(settings.audit.offpolicy_slots, log.order.shape[1])
    predictions = model if isinstance(model, dict) else candidate_predictions(log, model)
    return Ranker(slot_marginals(predictions["value"], slots, Sampling.of(settings.loop)), predictions.get("purchase"))


class UnknownLoggingPolicy(ValueError):
    """A serving log whose policy the gate cannot recompute the chances of."""


def logged_ranker(settings: Settings, log: ServingLog) -> Ranker:
    """How the policy the log names served it: the world's logging policy (its logits known from the log's
    tables), or a version of the registry's model (`<model>/v<N>`, as it was served). A log of any other policy
    cannot be weighed: the audit stops with an error saying so, and nothing is promoted."""
    logging = LoggingPolicy(settings.simulator.logging_policy, list(settings.simulator.surfaces))
    slots = min(settings.audit.offpolicy_slots, log.order.shape[1])
    if log.policy == logging.names[0]:
        return Ranker(logging.slot_marginals(log.tables, log.users, log.candidates, log.surfaces, slots), None)
    registry = Registry(settings.registry)
    name, _, version = log.policy.rpartition("/v")
    if name == registry.name and version.isdigit():
        return ranker_of(settings, log, registry.version(int(version)).model_dir)
    raise UnknownLoggingPolicy(f"the serving log is {log.policy}'s, neither the logging policy "
                               f"{logging.names[0]!r} nor a version of {registry.name}: the chances it served with "
                               "cannot be recomputed, so the off-policy check cannot weigh it")


def offpolicy_check(settings: Settings, log: ServingLog, candidate: Ranker, production: Ranker,
                    logged: Ranker) -> OffPolicyCheck:
    """The gate's off-policy check (`ope.check`) of the candidate against production on a log `logged` served
    (production itself, or its predecessor), the reward model the mean of their purchase predictions."""
    priced = [r.purchase for r in (candidate, production) if r.purchase is not None]
    audit = settings.audit
    return check(log, candidate.marginals, production.marginals, logged.marginals,
                 sum(priced) / len(priced) if priced else None,
                 audit.offpolicy_purchase_drop, audit.offpolicy_min_ess, audit.offpolicy_switch,
                 audit.offpolicy_bootstrap_draws, clip=audit.offpolicy_clip)


def served_check_of(settings: Settings, log: ServingLog, candidate: Ranker, production: Ranker) -> ServedCheck:
    """The gate's served check (`gate.served`) of the candidate against production on production's log."""
    audit = settings.audit
    return served_check(log, candidate.served, production.served, audit.served_purchase_drop,
                        audit.served_bait_points, audit.bait_headline_score, audit.served_bootstrap_draws)


def decide(verdict: Verdict, served_on_log: ServedCheck | None,
           offpolicy: OffPolicyCheck | None) -> tuple[str, list[str], bool]:
    """The gate's decision from the audit's verdict (drift and the model gate) and, where the day has a serving
    log, the served and off-policy checks: (status, reasons with the deciding ones first, promotable).

    A failed check blocks, its reasons first. An off-policy check that cannot decide makes the candidate
    inconclusive, its reason first unless something blocks; either way it stays out of production. It is
    promotable only when the verdict passes (or warns) and every check that ran passed."""
    status, reasons = verdict.status.value, list(verdict.reasons)
    if offpolicy is not None:
        if not offpolicy.judged:
            status, reasons = ("block", [*reasons, offpolicy.reason]) if status == "block" else \
                ("inconclusive", [offpolicy.reason, *reasons])
        elif not offpolicy.passed:
            status, reasons = "block", [offpolicy.reason, *reasons]
    if served_on_log is not None and not served_on_log.passed:
        status, reasons = "block", [*served_on_log.reasons, *reasons]
    promotable = verdict.status.exit_code == 0 and all(c is None or c.passed for c in (served_on_log, offpolicy))
    return status, reasons, promotable


def train_candidate(settings: Settings, loop: LoopSettings, day: str) -> Path:
    """The candidate for `day`, trained on the days before it; a model already trained for the same window and
    settings is kept as it is."""
    from trainer.train import train

    config = preset(settings.trainer, loop.preset)
    if loop.epochs is not None:
        config = config.model_copy(update={"epochs": loop.epochs})
    start, _ = day_range(day)
    first = start - loop.train_days * DAY_MS
    out = day_dir(loop, day) / "model"
    done = out / METADATA_FILE
    if done.exists():
        metadata = json.loads(done.read_text())
        if (metadata["data"]["start_ms"], metadata["data"]["end_ms"]) == (first, start) and \
                metadata["config"] == json.loads(json.dumps(config.model_dump())):
            _LOG.info("candidate for %s already trained at %s", day, out)
            return out
    train(config, settings.join.output_dir, first, start, out, verbose=2)
    return out


def register_candidate(settings: Settings, day: str, model_dir: Path) -> int:
    return Registry(settings.registry).register(model_dir, day).version


def audit_candidate(settings: Settings, loop: LoopSettings, day: str, version: int) -> Audited:
    """The audit of `day` against the day before and of the candidate against production on `day`, recorded on
    the version. Returns the verdict, the report and the production version it was judged against."""
    out = day_dir(loop, day) / "audit"
    done = out / "audited.json"
    if done.exists() and json.loads(done.read_text())["version"] == version:  # this day's audit of this version
        return Audited.from_dict(json.loads(done.read_text()))
    registry = Registry(settings.registry)
    production = registry.production()
    production_dir = registry.version(production).model_dir if production is not None else None
    candidate_dir = registry.version(version).model_dir
    start, end = day_range(day)
    verdict = run_audit(settings.join.output_dir, (start - DAY_MS, start), (start, end), None, settings.audit, out,
                        candidate=candidate_dir, production=production_dir if production != version else None,
                        long_dwell_ms=settings.trainer.model.long_dwell_ms)
    check = served_on_log = None
    log = serving_log(settings, day)
    if log is not None:
        judged, logged = ranker_of(settings, log, candidate_dir), logged_ranker(settings, log)
        against = ranker_of(settings, log, production_dir) if production not in (None, version) else logged
        served_on_log = served_check_of(settings, log, judged, against)
        (out / "served.json").write_text(json.dumps(served_on_log.as_dict(), indent=2) + "\n")
        check = offpolicy_check(settings, log, judged, against, logged)
        (out / "offpolicy.json").write_text(json.dumps(check.as_dict(), indent=2) + "\n")
    status, reasons, promotable = decide(verdict, served_on_log, check)
    registry.record_verdict(version, status, reasons, [out / "verdict.json", out / "report.html"])
    audited = Audited(status, promotable, reasons, str((out / "report.html").resolve()), production, version,
                      check.as_dict() if check is not None else None,
                      served_on_log.as_dict() if served_on_log is not None else None)
    done.write_text(json.dumps(audited.as_dict(), indent=2) + "\n")
    return audited


def promote_candidate(settings: Settings, day: str, audited: Audited, sinks: list | None = None) -> dict:
    """Moves production to the audited version if production still holds what it was audited against, and
    resolves the alerts an earlier run of the day opened (to `sinks`, by default the environment's)."""
    registry = Registry(settings.registry)
    expected = audited.production
    if registry.production() == audited.version:  # promoted by an earlier run of this day
        expected = audited.version
    entry = registry.promote(audited.version, expected, f"{day}: audit {audited.status}")
    sinks = sinks if sinks is not None else sinks_from_environment()
    book = AlertBook(alert_book(settings))
    held = [a["check"] for a in book.open_alerts().values()
            if a["window"] == day and a["check"].split(".")[0] == HELD]
    book.resolve_passing(held, day, sinks)
    return entry


HELD = "promotion_held"


def cause_of(reason: str) -> str:
    """The check a verdict's reason comes from: `served`, `off-policy`, `gate: <metric>`, the model-side or the
    data's clickbait signature, or the drift check it names."""
    if reason.startswith(("served", "off-policy")):
        return reason.split(":")[0]
    if reason.startswith("gate: "):
        return "gate: " + reason.split(" ")[1]
    if reason.startswith("clickbait signature in the candidate's predictions"):
        return "model-side clickbait signature"
    if reason.startswith("clickbait signature"):
        return "clickbait signature in the data"
    return reason.split(":")[0]


def hold_candidate(settings: Settings, day: str, audited: Audited, sinks: list | None = None) -> Held:
    """Keeps production and tells on-call through `sinks` (by default the environment's). A block pages: every
    sink, once per cause (its top reason's check) and day. An inconclusive or warning verdict waits for the
    day's digest (`send_digest`), which goes to the sinks that do not page (the log, Slack, a webhook), never to
    PagerDuty: nothing is wrong in production, and a person decides when. A re-run finds its alert open and
    sends nothing again."""
    blocked = audited.status == "block"
    top = audited.reasons[0] if audited.reasons else "no reason given"
    cause = cause_of(top).replace(": ", ".").replace(" ", "_")
    alert = Alert(f"{HELD}.{cause}", day, Severity.CRITICAL if blocked else Severity.WARNING,
                  f"candidate v{audited.version} held back for {day}: audit {audited.status}: {top}",
                  {"version": audited.version, "production": audited.production,
                   "reasons": "; ".join(audited.reasons), "report": audited.report},
                  report_url=Path(audited.report).as_uri())
    book = AlertBook(alert_book(settings))
    if not blocked:
        book.defer(alert)
        return Held(audited.production, audited.version, [], digest=True)
    deliveries = book.trigger(alert, sinks if sinks is not None else sinks_from_environment())
    return Held(audited.production, audited.version, [d.sink for d in deliveries if d.delivered])


def send_digest(settings: Settings, day: str, sinks: list | None = None) -> list[str]:
    """The day's digest of what was held without a page, to the sinks of `sinks` (by default the
    environment's) that do not page; the sinks that took it. Sent once per day and sink."""
    sinks = sinks if sinks is not None else sinks_from_environment()
    deliveries = AlertBook(alert_book(settings)).send_digest(day, [sink for sink in sinks if not pages(sink)])
    return [d.sink for d in deliveries if d.delivered]


def manifests_to_publish(settings: Settings, ledger: Path) -> list[HourToPublish]:
    """The hours whose complete partitions (of any writer: the streaming join, a bounded one) are not yet
    published at their current revision, per the `ledger` file."""
    published = json.loads(ledger.read_text()) if ledger.exists() else {}
    try:
        partitions = find_partitions(settings.join.output_dir)
    except FileNotFoundError:
        return []
    out = []
    for partition in partitions:
        manifest = partition.manifest
        if published.get(manifest["partition"]) == manifest["revision"]:
            continue
        day, hour = manifest["partition"].split("/")
        out.append(HourToPublish(f"{day[3:]}T{hour[5:]}:00:00", manifest["partition"], manifest["revision"],
                                 manifest["examples"], partition.path.parent.resolve().as_uri()))
    return out


def mark_published(ledger: Path, hours: list[HourToPublish]) -> None:
    """Records `hours` (from `manifests_to_publish`) as published at their revisions."""
    published = json.loads(ledger.read_text()) if ledger.exists() else {}
    published.update({h.partition: h.revision for h in hours})
    ledger.parent.mkdir(parents=True, exist_ok=True)
    temporary = ledger.with_suffix(".tmp")
    temporary.write_text(json.dumps(published, indent=1, sort_keys=True) + "\n")
    temporary.replace(ledger)
