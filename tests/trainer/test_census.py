"""The census-income experiment's data handling, and a small run of its three model kinds beating chance."""
import gzip

import numpy as np
import pytest

from trainer import census
from config.trainer import ModelConfig


@pytest.fixture(scope="module")
def rows():
    return census.read_rows()


def test_the_file_has_the_documented_rows_and_label_rates(rows):
    assert len(rows) == 99_762
    labels = census.labels_of(rows)
    assert 0.05 < labels["income"].mean() < 0.08  # about 6% earn over 50K
    assert 0.40 < labels["never_married"].mean() < 0.47


def test_a_malformed_row_names_its_file_and_line(tmp_path):
    path = tmp_path / "census.gz"
    with gzip.open(path, "wt") as f:
        f.write(", ".join(["1"] * 42) + "\n" + "1, 2, 3\n")
    with pytest.raises(census.CensusFormatError, match=r"census.gz:2: 3 fields, expected 42"):
        census.read_rows(path)


def test_the_split_is_seeded_and_never_encodes_a_label_as_a_feature(rows):
    first, again = census.split(rows[:5000], seed=1), census.split(rows[:5000], seed=1)
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert len(first.x_train) == 4000 and len(first.x_test) == 1000
    assert first.x_train.shape[1] == first.features
    # no column reproduces a label: a feature equal to "never married" on every row would be a leak
    for task in census.TASKS:
        y = first.y_train[task]
        assert not any(np.array_equal(first.x_train[:, j], y) for j in range(first.features))


def test_bucket_edges_give_zero_a_bucket_of_its_own_and_split_the_non_zero_values_by_quantile():
    mostly_zero = np.array([0.0] * 90 + [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    edges = census.bucket_edges(mostly_zero, 2)
    np.testing.assert_array_equal(edges, [1.0, 5.5])  # zero; 1 to 5; 6 to 10 (quantiles over all rows: all 0)
    np.testing.assert_array_equal(np.searchsorted(edges, [0.0, 1.0, 5.0, 6.0], side="right"), [0, 1, 1, 2])
    np.testing.assert_array_equal(census.bucket_edges(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2), [3.0])
    assert len(census.bucket_edges(np.zeros(4), 4)) == 0  # a column of zeros: one bucket


def test_crosses_join_each_crossed_value_to_the_age_band_and_never_a_label():
    row = [str(v) for v in range(census.FIELDS)]
    row[census.AGE] = "70"
    row[19], row[22], row[23], row[12] = "Joint both 65+", "Spouse of householder", "Spouse", "Female"
    crossed = census.with_crosses([row])[0]
    assert crossed[:census.FIELDS] == row
    assert crossed[census.FIELDS:] == ["5|Joint both 65+", "5|Spouse of householder", "5|Spouse", "5|Female"]
    assert [census.age_band(a) for a in ("0", "17", "18", "24", "25", "64", "65", "90")] == [0, 0, 1, 1, 2, 4, 5, 5]
    assert not {census.MARITAL, census.WEIGHT, census.INCOME} & set(census.CROSSED)


def test_each_model_kind_beats_chance_on_a_small_split(rows):
    data = census.split(rows[:12_000], seed=0)
    results = census.run(data, ModelConfig(experts=2, expert_units=[16], tower_units=[8]), epochs=3)
    assert set(results) == {"mmoe", "shared_bottom", "single_task"}
    for aucs in results.values():
        assert aucs["income"] > 0.8 and aucs["never_married"] > 0.9


def test_the_gradient_boosting_reference_re_measured_on_a_small_split_beats_chance(rows):
    data = census.split(rows[:12_000], seed=0)
    aucs = census.gradient_boosting(data, seed=0)
    assert aucs["income"] > 0.8 and aucs["never_married"] > 0.9
    assert aucs == census.gradient_boosting(data, seed=0)  # seeded: the same rows give the same reference


def test_the_command_offers_the_kinds_the_experiment_trains():
    from bench.census import KINDS

    assert KINDS == census.KINDS
