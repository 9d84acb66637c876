"""The multi-task ranker: shared embeddings, MMoE, one tower per task, ESMM products, an expected-value score.

Click is learned directly. Long dwell, add-to-cart and purchase are learned over the entire impression space as
p(click) x p(outcome | click) (ESMM, Ma et al., SIGIR 2018): the conditional towers never see a loss of their
own, so they learn from every impression without the selection bias of training on clicks alone. The CTR-only
baseline is this class with every loss weight but click's at zero.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
from trainer.tf_runtime import tf  # noqa: E402
from trainer.tf_runtime import tfrs  # noqa: E402
from tf_keras import layers  # noqa: E402

import tf_keras as keras  # noqa: E402
from config.trainer import TASKS, ModelConfig  # noqa: E402
from trainer.features import CATEGORICAL, HASHED, MISSING, NUMERIC, labels as task_labels  # noqa: E402
from pipelines.labeling import bounce_probability  # noqa: E402

CONDITIONAL = {"long_dwell": "long_dwell_given_click", "add_to_cart": "add_to_cart_given_click",
               "purchase": "purchase_given_click"}
_EPSILON = 1e-7


def _dense_stack(units: list[int], name: str, dropout: float = 0.0) -> keras.Sequential:
    stack = []
    for u in units:
        stack.append(layers.Dense(u, activation="relu"))
        if dropout:
            stack.append(layers.Dropout(dropout))
    return keras.Sequential(stack, name=name)


class MMoE(layers.Layer):
    """Experts shared by every head, mixed by one softmax gate per head (Ma et al., KDD 2018)."""

    def __init__(self, heads: tuple[str, ...], experts: int, expert_units: list[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.experts = [_dense_stack(expert_units, f"expert_{k}", dropout) for k in range(experts)]
        self.gates = {head: layers.Dense(experts, activation="softmax", name=f"gate_{head}") for head in heads}

    def call(self, x):
        outputs = tf.stack([expert(x) for expert in self.experts], axis=1)  # (batch, experts, units)
        return {head: tf.einsum("be,beu->bu", gate(x), outputs) for head, gate in self.gates.items()}


class SharedBottom(layers.Layer):
    """One network shared by every head: the classic multi-task baseline MMoE improves on."""

    def __init__(self, heads: tuple[str, ...], units: list[int], dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.bottom = _dense_stack(units, "bottom", dropout)

    def call(self, x):
        shared = self.bottom(x)
        return {head: shared for head in self.heads}


def mixture(config: ModelConfig, heads: tuple[str, ...]) -> layers.Layer:
    if config.architecture == "mmoe":
        return MMoE(heads, config.experts, config.expert_units, config.dropout, name="mmoe")
    # The same budget as the experts together, so the comparison is of structure, not size.
    return SharedBottom(heads, [u * config.experts for u in config.expert_units], config.dropout, name="shared_bottom")


class FeatureEncoder(layers.Layer):
    """Raw served features to one dense vector: hashed id embeddings, vocabulary embeddings, normalised numbers.

    Vocabularies and numeric statistics come from `adapt_statistics` over the training range and are saved in
    the model, so serving applies exactly the preprocessing training saw.
    """

    def __init__(self, config: ModelConfig, vocabularies: dict[str, list[str]], numeric_stats: dict[str, list[float]],
                 **kwargs):
        super().__init__(**kwargs)
        self.hashing = {name: layers.Hashing(config.id_buckets, name=f"hash_{name}") for name in HASHED}
        self.lookups = {name: layers.StringLookup(vocabulary=vocabularies[name], num_oov_indices=1,
                                                  name=f"lookup_{name}") for name in CATEGORICAL}
        self.embeddings = {name: layers.Embedding(config.id_buckets, config.embedding_dim, name=f"embed_{name}")
                           for name in HASHED}
        self.embeddings.update({name: layers.Embedding(len(vocabularies[name]) + 1, max(2, config.embedding_dim // 4),
                                                       name=f"embed_{name}") for name in CATEGORICAL})
        self.means = tf.constant([numeric_stats[name][0] for name in NUMERIC], tf.float32)
        self.stds = tf.constant([max(numeric_stats[name][1], 1e-6) for name in NUMERIC], tf.float32)

    def call(self, features):
        parts = [self.embeddings[name](self.hashing[name](features[name])) for name in HASHED]
        parts += [self.embeddings[name](self.lookups[name](features[name])) for name in CATEGORICAL]
        numbers = tf.stack([numeric_column(features, name) for name in NUMERIC], axis=1)
        missing = tf.math.is_nan(numbers)
        numbers = tf.where(missing, self.means, numbers)
        parts.append((numbers - self.means) / self.stds)
        parts.append(tf.cast(tf.gather(missing, [list(NUMERIC).index(n) for n in MISSING], axis=1), tf.float32))
        return tf.concat(parts, axis=1)


def numeric_column(features, name: str):
    value = tf.cast(features[name], tf.float32)
    return tf.math.log1p(tf.maximum(value, 0.0)) if NUMERIC[name] == "log1p" else value


def adapt_statistics(batches) -> tuple[dict[str, list[str]], dict[str, list[float]]]:
    """Vocabularies of the small categoricals (most frequent first) and mean/std of each transformed number."""
    counts: dict[str, dict[str, int]] = {name: {} for name in CATEGORICAL}
    sums = {name: np.zeros(3) for name in NUMERIC}  # n, sum, sum of squares of non-missing values
    for batch in batches:
        for name in CATEGORICAL:
            values, frequency = np.unique(batch[name].numpy(), return_counts=True)
            for value, n in zip(values, frequency):
                counts[name][value.decode()] = counts[name].get(value.decode(), 0) + int(n)
        for name in NUMERIC:
            column = numeric_column(batch, name).numpy().astype(np.float64)
            column = column[~np.isnan(column)]
            sums[name] += (len(column), column.sum(), np.square(column).sum())
    vocabularies = {name: [v for v, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])) if v]
                    for name, c in counts.items()}
    stats = {}
    for name, (n, total, squares) in sums.items():
        mean = total / n if n else 0.0
        stats[name] = [float(mean), float(np.sqrt(max(squares / n - mean * mean, 0.0))) if n else 1.0]
    return vocabularies, stats


class ValueRanker(tfrs.models.Model):
    """Per-impression probabilities of click, long dwell, add-to-cart and purchase, and the value score."""

    def __init__(self, config: ModelConfig, vocabularies: dict[str, list[str]], numeric_stats: dict[str, list[float]],
                 fake_negative: bool = False):
        super().__init__()
        self.config = config
        self.vocabularies, self.numeric_stats = vocabularies, numeric_stats
        self.fake_negative = fake_negative and config.fake_negative_weighting
        self.encoder = FeatureEncoder(config, vocabularies, numeric_stats, name="features")
        # Only what some loss trains gets a tower and a gate: the CTR baseline is click alone, not click plus noise.
        self.heads = ("click", *(CONDITIONAL[task] for task in CONDITIONAL if config.trains(task)))
        self.mixer = mixture(config, self.heads)
        self.towers = {head: keras.Sequential([*_dense_stack(config.tower_units, f"tower_{head}").layers,
                                               layers.Dense(1, name=f"logit_{head}")], name=f"tower_{head}")
                       for head in self.heads}
        self.tasks = {task: tfrs.tasks.Ranking(loss=keras.losses.BinaryCrossentropy(),
                                               metrics=[keras.metrics.AUC(name=f"{task}_auc")])
                      for task in TASKS if config.trains(task)}
        self.value_weights = dict(config.value_weights)

    def get_config(self) -> dict:
        """The arguments that rebuild this ranker (its weights apart), as JSON values."""
        return {"config": self.config.model_dump(mode="json"),
                "vocabularies": {name: list(values) for name, values in self.vocabularies.items()},
                "numeric_stats": {name: list(stats) for name, stats in self.numeric_stats.items()},
                "fake_negative": self.fake_negative}

    @classmethod
    def from_config(cls, config: dict) -> "ValueRanker":
        return cls(ModelConfig.model_validate(config["config"]), config["vocabularies"], config["numeric_stats"],
                   config["fake_negative"])

    def call(self, features, training=False):
        mixed = self.mixer(self.encoder(features), training=training)
        p = {head: tf.sigmoid(tf.squeeze(self.towers[head](mixed[head], training=training), axis=1))
             for head in self.heads}
        out = {"click": p["click"]}
        for task, head in CONDITIONAL.items():
            if head in p:
                out[task] = p["click"] * p[head]  # ESMM: learned over every impression, never above p(click)
        if "long_dwell" in out:
            out["bounce"] = bounce_probability(p["click"], out["long_dwell"])
        out["value"] = tf.add_n([weight * out[term] for term, weight in self.value_weights.items()])
        return out

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        columns = inputs
        predictions = self(columns, training=training)
        labels = task_labels(columns, self.config.long_dwell_ms)
        weights = self.sample_weights(columns, labels, predictions)
        losses = []
        for task, objective in self.tasks.items():
            prediction = tf.clip_by_value(predictions[task], _EPSILON, 1 - _EPSILON)[:, None]
            loss = objective(labels[task][:, None], prediction, sample_weight=weights[task][:, None], training=training)
            losses.append(self.config.loss_weights[task] * loss)
        return tf.add_n(losses)

    def sample_weights(self, columns, labels, predictions) -> dict:
        """Weights per task; with fake-negative data, each task's rows and Ktena et al.'s importance weights.

        Under the fake-negative strategy every impression arrives once as a negative, and again as a positive
        correction per converted label. Click and dwell learn from the first rows only; a conversion task learns
        from the first rows plus its own corrections, weighted (1 + p) for positives and (1 - p)(1 + p) for
        negatives with p the model's current estimate (held constant), which undoes the fake negatives' bias.
        """
        ones = tf.ones_like(labels["click"])
        if not self.fake_negative:
            return {task: ones for task in TASKS}
        correction = tf.cast(columns["is_correction"] > 0, tf.float32)
        weights = {"click": 1.0 - correction, "long_dwell": 1.0 - correction}
        for task in ("add_to_cart", "purchase"):
            p = tf.stop_gradient(predictions[task])
            rows = (1.0 - correction) + correction * labels[task]
            weights[task] = rows * tf.where(labels[task] > 0, 1.0 + p, (1.0 - p) * (1.0 + p))
        return weights
