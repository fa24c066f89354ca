import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.ingest import ingest
from pipeline.errors import UnknownIdError
from pipeline.matrix.id_map import IdMap
from pipeline.matrix.utility_matrix import RatingScale, build_utility_matrix, split_assignment
from pipeline.validation.results import data_version_of
from pipeline.validation.validate import validate


@pytest.fixture
def validated(small_data, settings):
    return validate(ingest(small_data), settings)


def test_scaling_round_trips_and_spans_unit_interval():
    scale = RatingScale(1, 10)
    ratings = np.arange(1, 11)
    scaled = scale.scale(ratings)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    np.testing.assert_allclose(scale.unscale(scaled), ratings, atol=1e-5)


def test_split_is_reproducible_sized_as_configured_and_fixed_per_pair():
    rng = np.random.default_rng(0)
    users, anime = rng.integers(1, 5_000, 100_000), rng.integers(1, 9_000, 100_000)
    first = split_assignment(users, anime, 0.1, 0.1, seed=1)
    assert np.array_equal(first, split_assignment(users, anime, 0.1, 0.1, seed=1))
    assert not np.array_equal(first, split_assignment(users, anime, 0.1, 0.1, seed=2))
    assert (first == 2).mean() == pytest.approx(0.1, abs=0.005)  # test: 10% of all
    assert (first == 1).mean() == pytest.approx(0.09, abs=0.005)  # validation: 10% of the rest
    subset = rng.permutation(100_000)[:30_000]  # other rows, another order: each pair keeps its label
    np.testing.assert_array_equal(split_assignment(users[subset], anime[subset], 0.1, 0.1, seed=1), first[subset])


def test_matrix_is_long_form_with_contiguous_maps(validated, settings):
    matrix = build_utility_matrix(validated, settings)
    parts = [matrix.split(name) for name in ("train", "validation", "test")]
    assert sum(p.num_rows for p in parts) == validated.counts.accepted
    users = pq.read_table(matrix.user_index_path)
    anime = pq.read_table(matrix.anime_index_path)
    assert users["user_index"].to_pylist() == list(range(matrix.n_users))
    assert anime["anime_index"].to_pylist() == list(range(matrix.n_anime))
    everything = pa.concat_tables(parts)
    np.testing.assert_array_equal(
        matrix.user_map.indices(everything["user_id"].to_numpy()),
        everything["user_index"].to_numpy())
    np.testing.assert_allclose(matrix.scale.unscale(everything["scaled_rating"].to_numpy()),
                               everything["rating"].to_numpy(), atol=1e-5)
    meta = json.loads((matrix.path / "metadata.json").read_text())
    assert meta["counts"]["unrated"] == pq.read_table(matrix.path / "unrated.parquet").num_rows
    assert matrix.path.name == f"{matrix.data_version}-{matrix.split_id[:8]}"


def test_same_data_gives_same_version_and_split(validated, settings, tmp_path):
    first = build_utility_matrix(validated, settings)
    first_test = first.split("test")
    shuffled = validated.ratings.take(np.random.default_rng(0).permutation(validated.ratings.num_rows))
    unrated = validated.unrated.take(np.random.default_rng(1).permutation(validated.unrated.num_rows))
    assert data_version_of(shuffled, unrated) == first.data_version  # row order does not matter
    settings.data_root = tmp_path / "elsewhere"
    second = build_utility_matrix(validated, settings)
    assert second.split_id == first.split_id
    assert second.split("test").equals(first_test)
    ratings = validated.ratings["rating"].to_numpy().copy()
    ratings[0] = 1 if ratings[0] != 1 else 2  # one rating changes
    changed = validated.ratings.set_column(2, "rating", pa.array(ratings))
    assert data_version_of(changed, validated.unrated) != first.data_version
    statuses = validated.unrated["watching_status"].to_numpy().copy()
    statuses[0] = 4  # one interaction changes (dropped, say): the ranking model's input changed
    assert data_version_of(validated.ratings, validated.unrated.set_column(
        2, "watching_status", pa.array(statuses))) != first.data_version


def test_an_id_map_gives_each_known_id_its_index_and_says_which_id_it_does_not_know():
    users = IdMap(np.array([30, 10, 20]), "user")  # index → id, in no order
    assert users.indices(np.array([20, 99, 10, 5, 30])).tolist() == [2, -1, 1, -1, 0]
    assert users.index(10) == 1
    with pytest.raises(UnknownIdError, match=r"unknown user id 99: .*\(it knows 3, ids 10\.\.30\)"):
        users.index(99)
    assert IdMap(np.array([], np.int64)).indices(np.array([1])).tolist() == [-1]


def test_failed_write_leaves_previous_matrix_intact(validated, settings, monkeypatch):
    matrix = build_utility_matrix(validated, settings)
    before = {p.name: p.read_bytes() for p in matrix.path.iterdir()}
    calls = {"n": 0}
    real_write = pq.write_table

    def failing_write(table, where, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        build_utility_matrix(validated, settings)
    assert {p.name: p.read_bytes() for p in matrix.path.iterdir()} == before
    assert [p.name for p in settings.matrix_root.iterdir()] == [matrix.path.name]  # no temp leftovers
