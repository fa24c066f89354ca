"""The champion scored on the ratings it never saw, before a new version is trained: is it getting worse?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.evaluation.metrics import K, ranking_report, relevant_pairs, rmse
from pipeline.matrix.utility_matrix import SPLITS, lookup_indices
from pipeline.monitoring.new_ratings import ChampionData
from pipeline.registry.promotion import VersionScores
from pipeline.serving.bundle import load_recommender


@dataclass(frozen=True)
class ChampionOnNewRatings:
    """RMSE over every new rating; NDCG@10 of its lists for the returning users with a relevant new rating,
    made from the histories it learned from (None when no such user)."""

    version: str
    n_ratings: int
    rmse: float
    ndcg: float | None
    n_users: int  # returning users judged by NDCG@10
    test_scores: VersionScores  # the same figures on its own test split, as registered


def _relevant_in_champion_space(relevant: pa.Table, champion: ChampionData) -> tuple[np.ndarray, pa.Table, int]:
    """Users the champion knows with a relevant new rating, those ratings in its index space, and its catalog's size
    plus the anime it never saw (relevant, but impossible for it to list: they count against it)."""
    users = lookup_indices(relevant["user_id"].to_numpy(), pq.read_table(champion.matrix.user_index_path), "user_id",
                           "user_index")
    anime = lookup_indices(relevant["anime_id"].to_numpy(), pq.read_table(champion.matrix.anime_index_path),
                           "anime_id", "anime_index")
    unseen_ids, unseen_rank = np.unique(relevant["anime_id"].to_numpy()[anime < 0], return_inverse=True)
    anime[anime < 0] = champion.matrix.n_anime + unseen_rank
    known = users >= 0
    pairs = pa.table({"user_index": users[known], "anime_index": anime[known]})
    return np.unique(users[known]), pairs, champion.matrix.n_anime + len(unseen_ids)


def score_on_new_ratings(name: str, champion: ChampionData, new: pa.Table, relevance_threshold: float
                         ) -> ChampionOnNewRatings:
    """The champion's registered bundle on `new` (ratings it never saw): pairs of users or anime it does not know
    get its train mean, as when served."""
    recommender = load_recommender(f"models:/{name}/{champion.version}")
    predicted = recommender.predict_pairs(new["user_id"].to_numpy(), new["anime_id"].to_numpy())
    users, relevant, n_anime = _relevant_in_champion_space(relevant_pairs(new, relevance_threshold), champion)
    ndcg = None
    if len(users):
        lists = recommender.on_matrix(champion.matrix, SPLITS).top_n_batch(users, K)
        ndcg = ranking_report(lists, users, relevant, n_anime).measured_ndcg
    return ChampionOnNewRatings(champion.version, new.num_rows, rmse(new["rating"].to_numpy(), predicted), ndcg,
                                len(users), champion.test_scores)
