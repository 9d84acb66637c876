"""What the model reads: the parse spec derived from the LabeledExample schema, its inputs and its labels.

The join writes one tf.Example per LabeledExample with the served features inlined and nulls left out, so the
spec is the schema's flattened fields with a default for each nullable one. Labels are derived here, once.
"""
from __future__ import annotations

import math

from pipelines.labeling import long_dwell
from schemas.registry import default_registry

# Inputs to the ranker. Ids are hashed (any new id has a bucket); small categoricals get a vocabulary adapted on
# the training range with an out-of-vocabulary index; numbers are normalised after the transform named here.
HASHED = ("user_id", "item_id")
CATEGORICAL = ("item_category", "surface", "device")
NUMERIC = {
    "item_price": "log1p",
    "item_age_hours": "log1p",
    "item_rating": "identity",  # missing ratings become the mean, with a missing flag beside them
    "headline_score": "identity",
    "user_category_affinity": "identity",
    "user_tenure_days": "log1p",
}
INPUTS = (*HASHED, *CATEGORICAL, *NUMERIC)
MISSING = {"item_rating"}  # nullable inputs that get a missing flag

_AVRO_TO_TF = {"string": "string", "int": "int64", "long": "int64", "boolean": "int64", "float": "float32",
               "double": "float32"}


def _flat_fields(schema: dict) -> list[tuple[str, str, bool]]:
    """(name, Avro primitive, nullable) of every leaf field, nested records inlined as the writer inlines them."""
    fields = []
    for field in schema["fields"]:
        type_ = field["type"]
        if isinstance(type_, dict) and type_.get("type") == "record":
            fields.extend(_flat_fields(type_))
            continue
        nullable = isinstance(type_, list) and "null" in type_
        if nullable:
            type_ = next(t for t in type_ if t != "null")
        if isinstance(type_, dict):
            type_ = type_["type"]
        fields.append((field["name"], type_, nullable))
    return fields


def example_columns() -> dict[str, tuple[str, object]]:
    """name -> (TensorFlow dtype name, default) for every column of a LabeledExample record."""
    schema = default_registry().latest("LabeledExample").parsed
    columns = {}
    for name, avro_type, nullable in _flat_fields(schema):
        dtype = _AVRO_TO_TF[avro_type]
        if dtype == "string":
            default = ""
        elif dtype == "float32":
            default = math.nan if nullable else 0.0
        else:
            default = -1 if nullable else 0
        columns[name] = (dtype, default)
    return columns


LABEL_COLUMNS = ("clicked", "dwell_ms", "added_to_cart", "purchased", "is_correction")
TRAINING_COLUMNS = (*INPUTS, *LABEL_COLUMNS)  # what training parses: each column left out is work saved per example


def parse_spec(columns: tuple[str, ...] | None = None):
    """The tf.io.parse_example spec of a LabeledExample, or of the named columns of it."""
    from trainer.tf_runtime import tf

    known = example_columns()
    unknown = set(columns or ()) - set(known)
    if unknown:
        raise ValueError(f"not LabeledExample columns: {sorted(unknown)}")
    return {name: tf.io.FixedLenFeature([], getattr(tf, dtype), default_value=default)
            for name, (dtype, default) in known.items() if columns is None or name in columns}


def serving_spec():
    """TensorSpecs of the raw features the exported model takes."""
    from trainer.tf_runtime import tf

    columns = example_columns()
    return {name: tf.TensorSpec([None], getattr(tf, columns[name][0]), name=name) for name in INPUTS}


def labels(columns: dict, long_dwell_ms: int) -> dict:
    """Per-task labels over the impression space (float 0/1) from parsed columns; dwell counts only when clicked."""
    from trainer.tf_runtime import tf

    clicked = columns["clicked"] > 0
    return {
        "click": tf.cast(clicked, tf.float32),
        "long_dwell": tf.cast(long_dwell(clicked, columns["dwell_ms"], long_dwell_ms), tf.float32),
        "add_to_cart": tf.cast(columns["added_to_cart"] > 0, tf.float32),
        "purchase": tf.cast(columns["purchased"] > 0, tf.float32),
    }
