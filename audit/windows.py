"""A window of labeled examples as the audit reads it: columns, their slices, and each slice's rates and
distributions, conversion counted at fixed ages after the click (`maturity`).

A window is the join's partitions over an event-time range, loaded as numpy columns. `now_ms` is when the window
is audited: a conversion after it has not arrived, and a click younger than an age is not counted at that age.
A settled window (every conversion window closed) has no `now_ms`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit.stattests import Rate
from pipelines.labeling import bounced, long_dwell
from pipelines.tf_example import example_fields
from schemas.units import HOUR_MS
from trainer.data import find_partitions, load_columns

REQUIRED = ("clicked", "click_time_ms", "dwell_ms", "added_to_cart", "purchased", "cart_time_ms", "purchase_time_ms",
            "purchase_value", "surface", "device", "position", "item_age_hours", "headline_score", "item_category",
            "event_time_ms")
MIX = ("surface", "device", "item_category")


class WindowError(ValueError):
    """A window the audit cannot read: missing columns (a schema the audit does not know), NaNs, no rows."""


@dataclass(frozen=True)
class Window:
    columns: dict[str, np.ndarray]
    now_ms: int | None = None
    name: str = "window"

    def __post_init__(self):
        missing = [c for c in REQUIRED if c not in self.columns]
        if missing:
            raise WindowError(f"{self.name}: no column {', '.join(missing)}: the audit reads LabeledExample v2 "
                              "(the join of this version writes it)")
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise WindowError(f"{self.name}: columns of different lengths {sorted(lengths)}")
        for name in ("clicked", "dwell_ms", "click_time_ms", "purchase_time_ms", "cart_time_ms", "position"):
            values = np.asarray(self.columns[name])
            if values.dtype.kind == "f" and np.isnan(values).any():
                raise WindowError(f"{self.name}: {int(np.isnan(values).sum())} NaN values in {name}")

    @property
    def size(self) -> int:
        return len(self.columns["clicked"])

    def text(self, name: str) -> np.ndarray:
        values = self.columns[name]
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values]) if values.dtype == object \
            else values.astype(str)

    def arrived(self, name: str) -> np.ndarray:
        """A conversion's event time where it has arrived by `now_ms`, else -1."""
        times = np.asarray(self.columns[name], np.int64)
        return times if self.now_ms is None else np.where(times <= self.now_ms, times, -1)


def load_window(examples: Path, from_ms: int | None, to_ms: int | None, now_ms: int | None = None,
                name: str = "window") -> Window:
    """The join's partitions in [from_ms, to_ms) as a Window; WindowError when there is none."""
    try:
        partitions = find_partitions(examples, from_ms, to_ms)
    except FileNotFoundError as error:
        raise WindowError(f"{name}: {error}") from None
    columns = load_columns(partitions) if partitions else {c: np.array([]) for c in REQUIRED}
    return Window(columns, now_ms, name)


_TEXT = ("surface", "device", "item_category")
_FLOATS = ("purchase_value", "item_age_hours", "headline_score")


def window_of_examples(examples, now_ms: int | None = None, name: str = "window") -> Window:
    """A Window of labeled examples in memory (`pipelines.labeling.Example`), as `load_window` reads them from
    partitions: for experiments and calibration, without writing files."""
    rows = [example_fields(e) for e in examples]
    columns = {}
    for column in REQUIRED:
        if column in _TEXT:
            columns[column] = np.array([r.get(column, "") for r in rows], dtype=object)
        elif column in _FLOATS:
            columns[column] = np.array([r.get(column, np.nan) for r in rows], np.float64)
        else:
            columns[column] = np.array([int(r.get(column, -1)) for r in rows], np.int64)
    return Window(columns, now_ms, name)


def slices(window: Window) -> dict[str, np.ndarray]:
    """The slices every audit compares: all, each surface and device, position bands, new against established
    items, headline-score bands. A name is `dimension=value`."""
    out = {"all": np.ones(window.size, bool)}
    for dimension in ("surface", "device"):
        values = window.text(dimension)
        for value in sorted(set(values)):
            out[f"{dimension}={value}"] = values == value
    position = np.asarray(window.columns["position"])
    out.update({"position=0-2": position <= 2, "position=3-5": (position >= 3) & (position <= 5),
                "position=6+": position >= 6})
    age = np.asarray(window.columns["item_age_hours"], np.float64)
    out.update({"item=new": age < 24, "item=established": age >= 24})
    headline = np.asarray(window.columns["headline_score"], np.float64)
    out.update({"headline=low": headline < 1 / 3, "headline=mid": (headline >= 1 / 3) & (headline < 2 / 3),
                "headline=high": headline >= 2 / 3})
    return out


def rates(window: Window, mask: np.ndarray, ages_ms: tuple[int, ...], long_dwell_ms: int) -> dict[str, Rate]:
    """The slice's rates: CTR, bounce and long dwell per click, and carts and purchases per impression and per
    click at each age (`cart_per_impression@1h`, ...), and over the whole window (`@full`) when it is settled."""
    clicked = np.asarray(window.columns["clicked"], bool)[mask]
    click_ms = np.asarray(window.columns["click_time_ms"], np.int64)[mask]
    event_ms = np.asarray(window.columns["event_time_ms"], np.int64)[mask]
    dwell = np.asarray(window.columns["dwell_ms"], np.int64)[mask]
    out = {"ctr": Rate(int(clicked.sum()), int(mask.sum())),
           "bounce_per_click": Rate(int(bounced(clicked, dwell, long_dwell_ms).sum()), int(clicked.sum())),
           "long_dwell_per_click": Rate(int(long_dwell(clicked, dwell, long_dwell_ms).sum()), int(clicked.sum()))}
    for label, column in (("cart", "cart_time_ms"), ("purchase", "purchase_time_ms")):
        converted_ms = window.arrived(column)[mask]
        delay = np.where(clicked & (converted_ms >= 0), converted_ms - click_ms, -1)
        for age in ages_ms:
            tag = f"{age / HOUR_MS:g}h"
            if window.now_ms is None:
                impressions_old, clicks_old = np.ones(len(clicked), bool), clicked
            else:
                impressions_old = event_ms + age <= window.now_ms
                clicks_old = clicked & (click_ms + age <= window.now_ms)
            within = clicks_old & (delay >= 0) & (delay <= age)
            out[f"{label}_per_impression@{tag}"] = Rate(int((within & impressions_old).sum()), int(impressions_old.sum()))
            out[f"{label}_per_click@{tag}"] = Rate(int(within.sum()), int(clicks_old.sum()))
        if window.now_ms is None:
            final = clicked & (delay >= 0)
            out[f"{label}_per_impression@full"] = Rate(int(final.sum()), len(clicked))
            out[f"{label}_per_click@full"] = Rate(int(final.sum()), int(clicked.sum()))
    return out


def dwell_of_clicks(window: Window, mask: np.ndarray) -> np.ndarray:
    clicked = np.asarray(window.columns["clicked"], bool) & mask
    dwell = np.asarray(window.columns["dwell_ms"], np.float64)[clicked]
    return dwell[dwell >= 0]


def mix(window: Window, dimension: str) -> dict[str, int]:
    values, counts = np.unique(window.text(dimension), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}
