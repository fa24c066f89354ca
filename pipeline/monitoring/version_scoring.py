"""A registered version scored on ratings: the one way the registry's champion is judged on this run's test split
and the monitoring check judges it on the ratings it never saw.

RMSE over every rating, through the version's own id maps (pairs it does not know get its train mean, as when
served); NDCG@10 of its lists for the users of a matrix with a relevant rating, made from their histories in that
matrix. Anime that matrix does not have are relevant but impossible to list: they count against the version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.errors import first_line
from pipeline.evaluation.evaluate import SEEN_SPLITS
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.metrics import ranking_report, relevant_pairs, rmse
from pipeline.registry.queries import current_champion, run_tags, tagged_scores
from pipeline.registry.scores import ChampionScores, VersionScores
from pipeline.serving.bundle import load_recommender
from pipeline.serving.recommend import Recommender
from pipeline.top_n import K


class UnloadableVersionError(Exception):
    """A registered version whose bundle does not load: reported, never allowed to stop the retrain that replaces
    it."""


@dataclass(frozen=True)
class VersionOnRatings:
    """A version's RMSE over `n_ratings` ratings, and the NDCG@10 of its lists for the `n_users` users with a relevant
    one (None when there is no such user)."""

    version: str
    n_ratings: int
    rmse: float
    ndcg: float | None
    n_users: int


def load_version(name: str, version: str) -> Recommender:
    """The registered version's recommender, or `UnloadableVersionError` saying why in one sentence."""
    try:
        return load_recommender(f"models:/{name}/{version}")
    except Exception as exc:
        raise UnloadableVersionError(f"champion v{version} could not be loaded ({first_line(exc)})") from exc


def _relevant_in(histories: UtilityMatrix, relevant: pa.Table) -> tuple[np.ndarray, pa.Table, int]:
    """The users of `histories` with a relevant rating, those ratings in its index space, and its catalog's size
    plus the anime it does not have (numbered after its own)."""
    users = histories.user_map.indices(relevant["user_id"].to_numpy())
    anime = histories.anime_map.indices(relevant["anime_id"].to_numpy())
    unseen_ids, unseen_rank = np.unique(relevant["anime_id"].to_numpy()[anime < 0], return_inverse=True)
    anime[anime < 0] = histories.n_anime + unseen_rank
    known = users >= 0
    pairs = pa.table({"user_index": users[known], "anime_index": anime[known]})
    return np.unique(users[known]), pairs, histories.n_anime + len(unseen_ids)


def score_version(recommender: Recommender, version: str, ratings: pa.Table, histories: UtilityMatrix,
                  history_splits: tuple[str, ...], relevance_threshold: float) -> VersionOnRatings:
    """`recommender` (a registered version) on `ratings`, its lists made from the `history_splits` of
    `histories`."""
    predicted = recommender.predict_pairs(ratings["user_id"].to_numpy(), ratings["anime_id"].to_numpy())
    users, relevant, n_anime = _relevant_in(histories, relevant_pairs(ratings, relevance_threshold))
    ndcg = None
    if len(users):
        lists = recommender.on_matrix(histories, history_splits).top_n_batch(users, K)
        ndcg = ranking_report(lists, users, relevant, n_anime).measured_ndcg
    return VersionOnRatings(version, ratings.num_rows, rmse(ratings["rating"].to_numpy(), predicted), ndcg,
                            len(users))


def score_version_on_split(name: str, version: str, matrix: UtilityMatrix, relevance_threshold: float
                           ) -> VersionScores:
    """Test RMSE and served NDCG@10 of a registered version on `matrix`'s test split, the users' histories being
    what they had rated before it."""
    scored = score_version(load_version(name, version), version, matrix.split("test"), matrix, SEEN_SPLITS,
                           relevance_threshold)
    return VersionScores.rounded(scored.rmse, scored.ndcg)


def score_champion(name: str, dataset: str, matrix: UtilityMatrix, relevance_threshold: float) -> ChampionScores:
    """The registered model's champion on `matrix`'s test split, if it learned from `dataset`: its registered
    scores when the split is the one it was evaluated on, else re-scored here. One whose bundle cannot be loaded is
    reported missing, with why."""
    champion = current_champion(name)
    if champion is None:
        return ChampionScores()
    found = ChampionScores(str(champion.version), champion.tags.get("dataset"))
    if found.dataset != dataset:
        return found
    if run_tags(champion.run_id).get("split_id") == matrix.split_id:
        return ChampionScores(found.version, found.dataset, tagged_scores(champion))
    try:
        scores = score_version_on_split(name, found.version, matrix, relevance_threshold)
    except UnloadableVersionError as exc:
        return ChampionScores(found.version, found.dataset, missing=str(exc))
    return ChampionScores(found.version, found.dataset, scores, rescored=True)
