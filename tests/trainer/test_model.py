"""The ranker on a small simulated world: shapes, gradients, ESMM, losses by hand, a seeded run, the round trip."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from trainer.tf_runtime import tf

from pipelines.label_files import label_events, write_examples
from config.join import LabelConfig, LabelStrategy
from simulator import Simulation, SimulatorConfig
from config.simulator import CatalogueConfig
from config.trainer import TASKS, TrainConfig, preset
from trainer.data import dataset, find_partitions, load_columns
from trainer.evaluate import observed_labels
from trainer.metrics import auc
from trainer.model import ValueRanker
from trainer.exported import ExportedModel
from trainer.train import build_model, export, train

LABELS = LabelConfig(purchase_window_s=6 * 3600.0)
WORLD = SimulatorConfig(seed=11, requests=5000, days=2.0, catalogue=CatalogueConfig(users=1500, items=300))
TRAIN_END_MS = WORLD.start_ms + 30 * 3600 * 1000  # train on the first 30 hours, evaluate on what follows
CONFIG = TrainConfig(batch_size=512, epochs=4, learning_rate=0.01, shuffle_buffer=50_000)


def _write_world(directory, strategy=LabelStrategy.WAIT_FOR_WINDOW):
    events = [(e.name, e.datum) for e in Simulation(WORLD).events()]
    examples = label_events(events, LABELS.model_copy(update={"strategy": strategy}))
    write_examples(examples, directory, {"test": "small world"})
    return directory


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory):
    return _write_world(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module")
def trained(examples_dir, tmp_path_factory):
    """The value model trained on the first 30 hours, exported, and the export reloaded."""
    partitions = find_partitions(examples_dir, None, TRAIN_END_MS)
    model = build_model(CONFIG, partitions)
    model.fit(dataset(partitions, CONFIG.batch_size, CONFIG.shuffle_buffer, CONFIG.seed), epochs=CONFIG.epochs,
              verbose=0)
    out = tmp_path_factory.mktemp("model") / "value"
    export(model, out, {"config": CONFIG.model_dump(), "data": {"end_ms": TRAIN_END_MS}})
    return model, ExportedModel(out)


@pytest.fixture(scope="module")
def batch(examples_dir):
    return next(iter(dataset(find_partitions(examples_dir), 256)))


def test_outputs_have_the_batch_shape_and_every_gradient_is_finite(examples_dir, batch):
    model = build_model(CONFIG, find_partitions(examples_dir, None, TRAIN_END_MS))
    predictions = model(batch)
    assert set(predictions) == {*TASKS, "bounce", "value"}
    assert all(p.shape == (256,) for p in predictions.values())
    with tf.GradientTape() as tape:
        loss = model.compute_loss(batch, training=True)
    gradients = tape.gradient(loss, model.trainable_variables)
    assert len(gradients) == len(model.trainable_variables) > 10
    assert all(g is not None and bool(tf.reduce_all(tf.math.is_finite(tf.convert_to_tensor(g)))) for g in gradients)


def test_esmm_never_predicts_a_conversion_more_likely_than_its_click(trained, batch):
    predictions = trained[0](batch)
    for task in ("long_dwell", "add_to_cart", "purchase"):
        assert bool(tf.reduce_all(predictions[task] <= predictions["click"])), task
    assert bool(tf.reduce_all(predictions["bounce"] >= 0))


def test_the_loss_is_the_weighted_sum_of_each_task_cross_entropy_over_impressions(examples_dir, batch):
    config = CONFIG.model.model_copy(update={"loss_weights": {"click": 1.0, "purchase": 2.0, "add_to_cart": 0.5},
                                             "value_weights": {"purchase": 1.0}})
    model = build_model(CONFIG.model_copy(update={"model": config}), find_partitions(examples_dir))
    p = {k: v.numpy().astype(np.float64) for k, v in model(batch).items()}
    y = {k: v.astype(np.float64) for k, v in observed_labels({k: v.numpy() for k, v in batch.items()}, 30_000).items()}

    def cross_entropy(task):
        return -np.mean(y[task] * np.log(p[task]) + (1 - y[task]) * np.log(1 - p[task]))

    expected = cross_entropy("click") + 2.0 * cross_entropy("purchase") + 0.5 * cross_entropy("add_to_cart")
    assert float(model.compute_loss(batch)) == pytest.approx(expected, rel=1e-4)


def test_fake_negative_weights_by_hand():
    model = ValueRanker.__new__(ValueRanker)  # only the weighting, a pure function of its inputs, is exercised
    model.fake_negative = True
    columns = {"is_correction": tf.constant([0, 0, 1, 1])}
    labels = {"click": tf.constant([1.0, 0.0, 1.0, 1.0]), "long_dwell": tf.constant([0.0, 0.0, 0.0, 0.0]),
              "add_to_cart": tf.constant([0.0, 0.0, 1.0, 0.0]), "purchase": tf.constant([0.0, 0.0, 0.0, 1.0])}
    p = tf.constant([0.2, 0.1, 0.5, 0.4])
    weights = ValueRanker.sample_weights(model, columns, labels, {"add_to_cart": p, "purchase": p})
    assert weights["click"].numpy().tolist() == [1, 1, 0, 0]  # corrections repeat the click; count it once
    # first rows are negatives, (1 - p)(1 + p); a task's own correction is a positive, 1 + p; another's is left out
    np.testing.assert_allclose(weights["add_to_cart"], [0.8 * 1.2, 0.9 * 1.1, 1.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(weights["purchase"], [0.8 * 1.2, 0.9 * 1.1, 0.0, 1.4], rtol=1e-6)


def test_the_ctr_baseline_is_the_same_class_trained_on_clicks_alone(examples_dir, batch):
    model = build_model(preset(CONFIG, "ctr"), find_partitions(examples_dir))
    assert list(model.tasks) == ["click"]
    predictions = model(batch)
    np.testing.assert_allclose(predictions["value"], predictions["click"])


def test_a_tiny_seeded_run_clearly_beats_chance_on_a_later_range(trained, examples_dir):
    later = load_columns(find_partitions(examples_dir, TRAIN_END_MS, None))
    predictions = trained[1].predict(later)
    labels = observed_labels(later, 30_000)
    assert auc(labels["click"], predictions["click"]) > 0.65
    assert auc(labels["purchase"], predictions["purchase"]) > 0.65
    # mean predictions near the observed rates: the ESMM products are calibrated, not just ordered
    assert predictions["click"].mean() == pytest.approx(labels["click"].mean(), rel=0.25)


def test_the_saved_model_reloads_to_the_same_predictions(trained, batch):
    model, exported = trained
    columns = {k: v.numpy() for k, v in batch.items()}
    reloaded = exported.predict(columns)
    in_memory = model(batch)
    for name in ("click", "long_dwell", "add_to_cart", "purchase", "bounce", "value"):
        np.testing.assert_allclose(reloaded[name], in_memory[name].numpy(), rtol=1e-5, atol=1e-7)
    assert exported.metadata["signature"]["outputs"][-1] == "value"
    assert set(exported.metadata["preprocessing"]["vocabularies"]) == {"item_category", "surface", "device"}
    assert math.isfinite(exported.metadata["preprocessing"]["numeric_stats"]["item_rating"][0])


def test_the_ranker_rebuilt_from_its_config_with_its_weights_predicts_the_same(trained, batch):
    model = trained[0]
    config = json.loads(json.dumps(model.get_config()))  # JSON all the way: what a saved model can record
    rebuilt = ValueRanker.from_config(config)
    rebuilt(batch)
    rebuilt.set_weights(model.get_weights())
    assert rebuilt.config == model.config and rebuilt.fake_negative == model.fake_negative
    for name, prediction in model(batch).items():
        np.testing.assert_allclose(rebuilt(batch)[name].numpy(), prediction.numpy(), rtol=1e-6)


def test_fake_negative_weighting_brings_conversion_rates_back_toward_the_truth(tmp_path, examples_dir):
    """Trained on fake-negative rows, the weighted model's mean p(cart) lies nearer the true rate than the
    unweighted one's, which the fake negatives drag down; both still rank conversions above chance."""
    fake_negative_dir = _write_world(tmp_path / "fn", LabelStrategy.FAKE_NEGATIVE)
    partitions = find_partitions(fake_negative_dir, None, TRAIN_END_MS)
    later = load_columns(find_partitions(examples_dir, TRAIN_END_MS, None))  # final labels to judge by
    observed = observed_labels(later, 30_000)
    mean_cart = {}
    for weighting in (True, False):
        config = CONFIG.model_copy(update={"model": CONFIG.model.model_copy(
            update={"fake_negative_weighting": weighting})})
        model = build_model(config, partitions)
        assert model.fake_negative is weighting
        model.fit(dataset(partitions, config.batch_size, config.shuffle_buffer, config.seed), epochs=config.epochs,
                  verbose=0)
        predictions = {k: v.numpy() for k, v in model({k: tf.constant(v) for k, v in later.items()}).items()}
        assert auc(observed["add_to_cart"], predictions["add_to_cart"]) > 0.6
        mean_cart[weighting] = predictions["add_to_cart"].mean()
    truth = observed["add_to_cart"].mean()
    assert abs(mean_cart[True] - truth) < abs(mean_cart[False] - truth)


def test_a_damaged_example_file_is_named_when_training_reads_it(examples_dir, tmp_path):
    import shutil

    from trainer.data import CorruptPartitionError

    damaged = tmp_path / "examples"
    shutil.copytree(examples_dir, damaged)
    victim = find_partitions(damaged)[3].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptPartitionError, match=str(victim).replace(".", r"\.") + ": corrupt record at byte"):
        load_columns(find_partitions(damaged))
    with pytest.raises(CorruptPartitionError, match="1 example file"):
        train(CONFIG.model_copy(update={"epochs": 1}), damaged, None, None, tmp_path / "model", verbose=0)
