"""The serving log: per request what a ranking service chose from and what it showed, with each slot's logged
propensity and the feature tables it read, as a ranking service keeps for counterfactual evaluation; and the
scores a candidate model gives the logged candidates from those same served features.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from serving.policies import candidate_features
from trainer.exported import Predictor, predictor

TABLES = ("item_category", "item_headline_score", "item_price", "item_published_ms", "item_rating", "user_affinity",
          "user_device", "user_tenure_days")


@dataclass(frozen=True)
class FeatureTables:
    """What the serving system knew of items and users when it ranked, as a feature store holds it: the observed
    attributes the served features are made of (never a world's hidden truth), and the surface and device
    names the indices stand for."""

    surfaces: list[str]
    devices: list[str]
    item_category: np.ndarray
    item_headline_score: np.ndarray
    item_price: np.ndarray
    item_published_ms: np.ndarray
    item_rating: np.ndarray
    user_affinity: np.ndarray
    user_device: np.ndarray
    user_tenure_days: np.ndarray

    @classmethod
    def of(cls, source, surfaces: list[str], devices: list[str]) -> FeatureTables:
        """The tables of anything with these attributes (a simulated world)."""
        return cls(list(surfaces), list(devices), **{name: np.asarray(getattr(source, name)) for name in TABLES})

    @property
    def version(self) -> str:
        """A digest of the tables' contents: equal tables have equal versions, and a served request names the
        version it was ranked from."""
        digest = hashlib.sha256("\x1f".join([*self.surfaces, "|", *self.devices]).encode())
        for name in TABLES:
            values = np.ascontiguousarray(getattr(self, name))
            digest.update(f"{name}:{values.dtype.str}:{values.shape}".encode())
            digest.update(values.tobytes())
        return digest.hexdigest()[:20]


class FeatureStore:
    """Feature tables by version, one `<version>.npz` each in a directory: what a served request's
    `feature_snapshot` names. A version is written once; writing it again leaves the file as it is."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, version: str) -> Path:
        return self.directory / f"{version}.npz"

    def put(self, tables: FeatureTables) -> str:
        version = tables.version
        target = self.path(version)
        if not target.exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, suffix=".npz.tmp")
            os.close(fd)
            with open(temporary, "wb") as out:
                np.savez_compressed(out, **{f.name: np.asarray(getattr(tables, f.name))
                                            for f in fields(FeatureTables)})
            os.replace(temporary, target)
        return version

    def get(self, version: str) -> FeatureTables:
        path = self.path(version)
        if not path.exists():
            raise FileNotFoundError(f"feature snapshot {version} is not in the feature store {self.directory}: "
                                    "the served requests that name it cannot be scored")
        with np.load(path) as data:
            tables = FeatureTables(**{f.name: data[f.name] for f in fields(FeatureTables)})
        tables = FeatureTables(**{**tables.__dict__, "surfaces": tables.surfaces.tolist(),
                                  "devices": tables.devices.tolist()})
        if tables.version != version:
            raise ValueError(f"{path}: its tables' digest is {tables.version}, not the {version} it is named for")
        return tables


@dataclass(frozen=True)
class ServingLog:
    policy: str
    tables: FeatureTables
    users: np.ndarray  # (requests,)
    surfaces: np.ndarray  # (requests,) index into the surfaces served
    request_ms: np.ndarray  # (requests,)
    candidates: np.ndarray  # (requests, candidates) item ids
    order: np.ndarray  # (requests, slots): which candidate column each slot showed
    propensity: np.ndarray  # (requests, slots): the logged conditional propensity of each slot's choice
    clicked: np.ndarray  # (requests, slots)
    bought: np.ndarray  # (requests, slots)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in fields(self) if f.name != "tables"}
        arrays.update({f"table_{f.name}": np.asarray(getattr(self.tables, f.name)) for f in fields(FeatureTables)})
        np.savez_compressed(path, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> ServingLog:
        with np.load(path) as data:
            wanted = {f.name for f in fields(cls) if f.name != "tables"} | {f"table_{f.name}"
                                                                             for f in fields(FeatureTables)}
            missing = wanted - set(data.files)
            if missing:
                raise ValueError(f"{path}: not a serving log (no {sorted(missing)})")
            tables = FeatureTables(**{f.name: data[f"table_{f.name}"] for f in fields(FeatureTables)})
            tables = FeatureTables(**{**tables.__dict__, "surfaces": tables.surfaces.tolist(),
                                      "devices": tables.devices.tolist()})
            return cls(tables=tables, **{f.name: (str(data[f.name]) if f.name == "policy" else data[f.name])
                                         for f in fields(cls) if f.name != "tables"})


def _rows(ids: list[str], prefix: str, size: int, what: str) -> np.ndarray:
    """The table rows of ids written as the served features write them (`u0000042`, `i000042`)."""
    try:
        rows = np.array([int(i[1:]) if i[:1] == prefix else -1 for i in ids], np.int64)
    except ValueError:
        rows = np.array([-1])
    if rows.size and (rows.min() < 0 or rows.max() >= size):
        raise ValueError(f"{what} ids outside the feature tables' {size} rows (ids are {prefix} and a number)")
    return rows


@dataclass(frozen=True)
class Assembled:
    """A serving log assembled from served requests, with what was left out and why."""

    log: ServingLog | None
    requests: int  # served requests given
    kept: int
    other_policies: dict  # policy -> requests served by a policy other than the log's
    other_shapes: int  # requests of another number of candidates or slots than most
    unlabeled: int  # requests with a shown slot that has no labeled example


def assemble(requests: list[dict], tables: FeatureTables, outcomes: dict[tuple[str, int], tuple[bool, bool]],
             policy: str | None = None) -> Assembled:
    """The serving log of `policy` (by default the one that served the most requests) from its ServedRequests, the
    feature tables they name and the outcomes of their impressions ((request id, position) -> (clicked,
    bought), from the labeled examples). A log is rectangular: requests of another number of candidates or slots
    than most are left out, as are requests whose shown slots are not all labeled yet; each count is returned."""
    counts: dict[str, int] = {}
    for r in requests:
        counts[r["policy"]] = counts.get(r["policy"], 0) + 1
    if not counts:
        return Assembled(None, 0, 0, {}, 0, 0)
    policy = policy or max(sorted(counts), key=counts.get)
    mine = [r for r in requests if r["policy"] == policy]
    shapes: dict[tuple[int, int], int] = {}
    for r in mine:
        shape = (len(r["candidates"]), len(r["shown"]))
        shapes[shape] = shapes.get(shape, 0) + 1
    shape = max(sorted(shapes), key=shapes.get) if shapes else (0, 0)
    same = [r for r in mine if (len(r["candidates"]), len(r["shown"])) == shape]
    labeled = [r for r in same if all((r["request_id"], k) in outcomes for k in range(shape[1]))]
    others = {p: n for p, n in counts.items() if p != policy}
    if not labeled:
        return Assembled(None, len(requests), 0, others, len(mine) - len(same), len(same))
    surfaces = {name: k for k, name in enumerate(tables.surfaces)}
    unknown = sorted({r["surface"] for r in labeled} - surfaces.keys())
    if unknown:
        raise ValueError(f"served requests on surfaces {unknown} the feature tables do not name ({tables.surfaces})")
    drawn = np.array([[outcomes[(r["request_id"], k)] for k in range(shape[1])] for r in labeled], bool)
    log = ServingLog(
        policy, tables,
        users=_rows([r["user_id"] for r in labeled], "u", len(tables.user_device), "user"),
        surfaces=np.array([surfaces[r["surface"]] for r in labeled], np.int64),
        request_ms=np.array([r["event_time_ms"] for r in labeled], np.int64),
        candidates=_rows([i for r in labeled for i in r["candidates"]], "i", len(tables.item_category),
                         "item").reshape(len(labeled), shape[0]),
        order=np.array([r["shown"] for r in labeled], np.int64),
        propensity=np.array([r["propensities"] for r in labeled], np.float64),
        clicked=drawn[:, :, 0], bought=drawn[:, :, 1])
    return Assembled(log, len(requests), len(labeled), others, len(mine) - len(same), len(same) - len(labeled))


def candidate_predictions(log: ServingLog, model: Path | Predictor) -> dict[str, np.ndarray]:
    """Every output of the model (a SavedModel's directory, or a `Predictor`) for every logged request's
    candidates, from the served features (the log's tables), each (requests, candidates)."""
    model = predictor(model)
    columns = candidate_features(log.tables, log.users, log.candidates, log.tables.surfaces, log.surfaces,
                                 log.tables.devices, log.request_ms)
    return {name: values.reshape(log.candidates.shape).astype(np.float64)
            for name, values in model.predict(columns).items()}


def candidate_scores(log: ServingLog, model: Path | Predictor, output: str = "value") -> np.ndarray:
    """The candidate model's `output` scores of every logged request's candidates, (requests, candidates)."""
    return candidate_predictions(log, model)[output]
