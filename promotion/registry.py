"""The model registry on MLflow's Model Registry: candidates as model versions, `production` and `candidate` as
aliases, promotion as a compare-and-swap under a lock, every promotion in an append-only log.

The store is MLflow's SQLite file under the registry directory by default (`RegistrySettings.uri` names any
MLflow server instead). A model version carries the SavedModel, its metadata, and once audited the verdict and
report as artifacts of its run; its tags say which window it was trained for and what the audit decided.

Why production is always wholly old or wholly new: production is one alias, and moving it is one transaction
of the store. Around it, the promotion log (`promotions.jsonl` beside the store) gets an `intent` line, fsynced,
before the alias moves and a `committed` line after. A process killed between the two leaves an intent with no
outcome; the next registry operation, under the same lock, finds it and writes the outcome the alias shows
(`committed` if it moved, `aborted` if not), so the log never disagrees with the store. The lock is a `flock`
on a file beside the log, which the kernel releases when its holder dies.

Promotion names the version it replaces (`expected`): when production holds anything else, someone else
promoted in between and the promotion is refused. Only a version whose recorded verdict lets promotion go
ahead may be promoted; rollback returns production to the version it held before its current one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

from config.registry import RegistrySettings

PRODUCTION, CANDIDATE = "production", "candidate"
PROMOTABLE = ("pass", "warn")  # the audit statuses that let promotion go ahead (`audit.drift.Status`)
TAG_WINDOW, TAG_DIGEST, TAG_VERDICT, TAG_REASONS = ("valueloop.window", "valueloop.digest", "valueloop.verdict",
                                                    "valueloop.verdict_reasons")


class RegistryError(RuntimeError):
    """A registry operation that was refused or could not be done; the message says why and what to do."""


class StaleProduction(RegistryError):
    """The promotion named a version to replace that production no longer holds."""


class PromotionRefused(RegistryError):
    """The version may not be promoted: no verdict recorded, or a verdict that blocks it."""


@dataclasses.dataclass(frozen=True)
class Version:
    version: int
    window: str | None
    verdict: str | None
    reasons: str | None
    created_ms: int
    source: str
    run_id: str | None
    aliases: tuple[str, ...]

    @property
    def model_dir(self) -> Path | None:
        """The SavedModel's local directory, where the store's artifacts are local files."""
        from mlflow.utils.file_utils import local_file_uri_to_path

        return Path(local_file_uri_to_path(self.source)) if self.source.startswith("file:") else None


def model_digest(model_dir: Path) -> str:
    """A SavedModel directory's content: sha256 over every file's relative path and bytes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(model_dir).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class PromotionLog:
    """The append-only promotion log: JSON lines, each fsynced; read back as promotions with their outcomes."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, entry: dict) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"  # a line cut short by a killed writer
            os.write(fd, (b"\n" if torn else b"") + json.dumps(entry, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    def lines(self) -> list[dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):  # a torn line: its promotion's outcome is decided on recovery
                out.append(json.loads(line))
        return out

    def promotions(self) -> list[dict]:
        """Each promotion (intent) with its outcome: committed, aborted, or pending (no outcome yet)."""
        by_id: dict[str, dict] = {}
        for line in self.lines():
            if line.get("event") == "intent":
                by_id[line["id"]] = {**line, "outcome": "pending"}
            elif line.get("id") in by_id:
                by_id[line["id"]].update(outcome=line["event"], recovered=line.get("recovered", False),
                                         settled_at=line["at"])
        return list(by_id.values())


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class Registry:
    """The registry of one registered model (`RegistrySettings`)."""

    def __init__(self, settings: RegistrySettings | None = None):
        settings = settings or RegistrySettings()
        self.settings = settings
        self.directory = Path(settings.directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.uri = settings.uri or f"sqlite:///{self.directory / 'mlflow.db'}"
        self.name = settings.model_name
        self.log = PromotionLog(self.directory / "promotions.jsonl")
        self._lock_path = self.directory / "promotion.lock"
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from mlflow import MlflowClient

        with self._locked():  # two first users of a new store must not both create its tables
            self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
            self._ensure_model()
            self._recover()

    # -- the lock and recovery ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.settings.lock_timeout_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RegistryError(f"{self._lock_path}: another promotion has held the lock for over "
                                            f"{self.settings.lock_timeout_s:g} s") from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing releases the lock; so does the kernel when the holder dies

    def _recover(self) -> None:
        """Settles promotions whose process died between intent and outcome, from what the alias shows."""
        for promotion in self.log.promotions():
            if promotion["outcome"] == "pending":
                moved = self._alias_version(PRODUCTION) == promotion["to"]
                self.log.append({"id": promotion["id"], "event": "committed" if moved else "aborted",
                                 "recovered": True, "at": _now()})

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(self.name, description="valueloop's ranker: each version a "
                                                "candidate trained on a window; the production alias serves.")

    # -- reading --------------------------------------------------------------------------------------------------

    def _alias_version(self, alias: str) -> int | None:
        model = self.client.get_registered_model(self.name)
        version = model.aliases.get(alias)
        return None if version is None else int(version)

    def production(self) -> int | None:
        return self._alias_version(PRODUCTION)

    def aliases(self) -> dict[str, int]:
        return {alias: int(v) for alias, v in self.client.get_registered_model(self.name).aliases.items()}

    def _as_version(self, mv, aliases: dict[str, int]) -> Version:
        tags = mv.tags or {}
        return Version(int(mv.version), tags.get(TAG_WINDOW), tags.get(TAG_VERDICT), tags.get(TAG_REASONS),
                       int(mv.creation_timestamp), mv.source, mv.run_id,
                       tuple(sorted(a for a, v in aliases.items() if v == int(mv.version))))

    def versions(self) -> list[Version]:
        aliases = self.aliases()
        found = self.client.search_model_versions(f"name = '{self.name}'", max_results=10_000)
        return sorted((self._as_version(mv, aliases) for mv in found), key=lambda v: v.version)

    def version(self, number: int) -> Version:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(self.name, str(number))
        except MlflowException:
            raise RegistryError(f"{self.name} has no version {number}; `valueloop models` lists them") from None
        return self._as_version(mv, self.aliases())

    def promotions(self) -> list[dict]:
        return self.log.promotions()

    # -- registering and recording verdicts -----------------------------------------------------------------------

    def register(self, model_dir: Path, window: str) -> Version:
        """The SavedModel at `model_dir`, trained for `window`, as a model version aliased `candidate`. A model
        with the same content already registered for the same window is that version again (a re-run of a
        data interval registers nothing new)."""
        model_dir = Path(model_dir)
        if not (model_dir / "saved_model.pb").exists():
            raise RegistryError(f"{model_dir}: not a SavedModel directory (no saved_model.pb)")
        digest = model_digest(model_dir)
        with self._locked():
            for mv in self.client.search_model_versions(f"name = '{self.name}'", max_results=10_000):
                if (mv.tags or {}).get(TAG_DIGEST) == digest and (mv.tags or {}).get(TAG_WINDOW) == window:
                    self.client.set_registered_model_alias(self.name, CANDIDATE, mv.version)
                    return self.version(int(mv.version))
            run_id = self._run_for(model_dir, window)
            artifact_uri = self.client.get_run(run_id).info.artifact_uri
            mv = self.client.create_model_version(self.name, source=f"{artifact_uri}/model", run_id=run_id,
                                                  tags={TAG_WINDOW: window, TAG_DIGEST: digest},
                                                  description=f"trained for {window}")
            self.client.set_registered_model_alias(self.name, CANDIDATE, mv.version)
            return self.version(int(mv.version))

    def _run_for(self, model_dir: Path, window: str) -> str:
        experiment = self.client.get_experiment_by_name(self.name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            self.name, artifact_location=None if self.settings.uri else (self.directory / "artifacts").as_uri())
        run = self.client.create_run(experiment_id, run_name=f"train {window}", tags={TAG_WINDOW: window})
        metadata_file = model_dir / "valueloop_model.json"
        if metadata_file.exists():
            metadata = json.loads(metadata_file.read_text())
            for key, value in metadata.get("training", {}).get("final", {}).items():
                self.client.log_metric(run.info.run_id, f"train.{key}", float(value))
            self.client.log_param(run.info.run_id, "examples", metadata.get("data", {}).get("examples"))
            self.client.log_param(run.info.run_id, "code_version", metadata.get("code_version"))
        self.client.log_artifacts(run.info.run_id, str(model_dir), "model")
        self.client.set_terminated(run.info.run_id)
        return run.info.run_id

    def record_verdict(self, number: int, status: str, reasons: list[str], artifacts: list[Path] = ()) -> Version:
        """The audit's and gate's verdict on a version (`pass`, `warn`, `block`, `inconclusive`), its reasons,
        and its files (verdict.json, report.html) as artifacts of the version's run under `audit/`."""
        version = self.version(number)
        if version.run_id:
            for path in artifacts:
                self.client.log_artifact(version.run_id, str(path), "audit")
        self.client.set_model_version_tag(self.name, str(number), TAG_VERDICT, status)
        self.client.set_model_version_tag(self.name, str(number), TAG_REASONS, "; ".join(reasons)[:4_000])
        return self.version(number)

    # -- promotion ------------------------------------------------------------------------------------------------

    def promote(self, number: int, expected: int | None, reason: str, override: bool = False) -> dict:
        """Moves production from `expected` (None: no production yet) to version `number`, refusing when
        production holds anything else or the version's verdict does not let it go ahead. With `override`, a
        version the audit did not pass is promoted all the same, logged as an override with `reason` (the
        break-glass path; the compare-and-swap still holds). Returns the log's record of the promotion."""
        with self._locked():
            self._recover()
            version = self.version(number)
            if override:
                return self._move(number, expected, reason, "override", version.verdict)
            if version.verdict not in PROMOTABLE:
                raise PromotionRefused(
                    f"version {number} may not be promoted: its verdict is {version.verdict or 'not recorded'}"
                    + (f" ({version.reasons})" if version.reasons else "")
                    + "; only an audited version that passed (or warned) is promoted")
            return self._move(number, expected, reason, "promote", version.verdict)

    def rollback(self, expected: int, reason: str) -> dict:
        """Moves production from `expected` back to the version it held before `expected` was promoted; rolling
        back again goes one promotion further back."""
        with self._locked():
            self._recover()
            held = self.held()
            if len(held) < 2 or held[-1] != self.production():
                raise RegistryError(f"nothing to roll back to: production is "
                                    f"{'unset' if self.production() is None else f'version {self.production()}'} "
                                    "and the promotion log names no version it held before")
            return self._move(held[-2], expected, reason, "rollback", self.version(held[-2]).verdict)

    def held(self) -> list[int]:
        """The versions production has held, oldest first, as promotions pushed them and rollbacks popped them."""
        held: list[int] = []
        for promotion in self.log.promotions():
            if promotion["outcome"] != "committed":
                continue
            if promotion["kind"] == "rollback" and held:
                held.pop()
            else:
                held.append(promotion["to"])
        return held

    def _move(self, number: int, expected: int | None, reason: str, kind: str, verdict: str | None) -> dict:
        current = self.production()
        if current == expected == number:  # asked again for what is done already: nothing is written
            return {"kind": kind, "from": current, "to": number, "outcome": "unchanged"}
        if current != expected:
            raise StaleProduction(
                f"production is {'unset' if current is None else f'version {current}'}, not "
                f"{'unset' if expected is None else f'version {expected}'} as this {kind} expected: another "
                "promotion moved it; look at `valueloop models` and try again naming what production holds now")
        entry = {"id": uuid.uuid4().hex, "event": "intent", "kind": kind, "at": _now(), "from": current,
                 "to": number, "reason": reason, "verdict": verdict, "user": os.environ.get("USER", "")}
        self.log.append(entry)
        self.client.set_registered_model_alias(self.name, PRODUCTION, str(number))
        self.log.append({"id": entry["id"], "event": "committed", "at": _now()})
        return {**entry, "outcome": "committed"}
