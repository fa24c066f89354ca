"""The cold-start evaluation cannot be gamed: the held-out anime leave train and validation (and the watched rows)
entirely, their test ratings stay to judge, and lists are ranked among them only."""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.evaluation.cold_start import hold_out_anime, judge_cold_start
from pipeline.matrix.utility_matrix import SPLITS


def _anime_in(table, anime_index) -> int:
    return int(pc.sum(pc.is_in(table["anime_index"], anime_index)).as_py() or 0)


def test_held_out_anime_leave_train_validation_and_history_and_keep_their_test_ratings(small_models, tmp_path):
    matrix = small_models.matrix
    split = hold_out_anime(matrix, 0.1, 7, tmp_path / "cold")
    held = split.held_out
    assert len(held) == round(0.1 * matrix.n_anime) and len(np.unique(held)) == len(held)
    cold = split.matrix
    held_array = pa.array(held, pa.int32())
    assert _anime_in(cold.split("train"), held_array) == _anime_in(cold.split("validation"), held_array) == 0
    assert _anime_in(matrix.split("train"), held_array) > 0  # they had ratings to lose
    assert cold.split("test").equals(matrix.split("test"))
    unrated = cold.unrated()
    assert not pc.any(pc.is_in(unrated["anime_id"], pa.array(matrix.anime_ids()[held]))).as_py()
    assert split.cold_rows().num_rows + split.warm_rows().num_rows == matrix.split_sizes["test"]
    assert cold.train_mean_rating == np.mean(cold.split("train")["rating"].to_numpy())
    assert cold.split_id != matrix.split_id and cold.split_sizes["test"] == matrix.split_sizes["test"]
    assert sum(cold.split_sizes[name] for name in SPLITS) < sum(matrix.split_sizes[name] for name in SPLITS)
    for_choosing = hold_out_anime(matrix, 0.1, 7, tmp_path / "choose", judged="validation").matrix
    assert for_choosing.split("validation").equals(matrix.split("validation"))  # kept to judge a setting


def test_lists_are_ranked_among_the_held_out_anime_only(small_models, tmp_path):
    split = hold_out_anime(small_models.matrix, 0.2, 3, tmp_path / "cold")
    n_anime = split.matrix.n_anime
    favour_warm = np.where(np.isin(np.arange(n_anime), split.held_out), 0.0, 100.0)  # warm anime score highest
    mean = split.matrix.train_mean_rating
    judged = judge_cold_start(split, lambda u, a: np.full(len(u), mean), lambda block: np.tile(
        favour_warm + np.arange(n_anime) * 1e-3, (len(block), 1)), 0.75, -1)
    assert judged.lists.n_users > 0 and judged.lists.ndcg >= 0
    assert judged.lists.coverage * n_anime <= len(split.held_out)  # nothing warm listed, however high it scored
    rows = split.cold_rows()
    assert judged.cold.rmse == pytest.approx(np.sqrt(np.mean((rows["rating"].to_numpy() - mean) ** 2)))
