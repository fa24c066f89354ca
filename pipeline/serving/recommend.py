"""Recommend: the ranking model decides what to list, the rating model says how much the user would like it.

Lists come from the ranking model (pipeline/models/ranking/): a user's history times its anime-to-anime weights, with
the one or two watched anime that added most shown as "because you watched". Each listed anime shows the rating
model's predicted rating (pipeline/models/rating/scorer.py). Names, genres and filters come from the catalog
(pipeline/serving/catalog.py); tables for people and filters from presentation.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from pipeline.matrix.anime_features import AnimeFeatures
from pipeline.matrix.id_map import IdMap
from pipeline.matrix.utility_matrix import SPLITS, UtilityMatrix
from pipeline.models.ranking.ease import ItemToItemModel
from pipeline.models.rating.scorer import FOLD_IN_L2, RatingScorer
from pipeline.serving.catalog import Catalog
from pipeline.top_n import K, top_n_lists


@dataclass(frozen=True)
class Listing:
    """One user's list: anime indices best first, their predicted ratings, and for each the indices of the watched
    anime that added most to it."""

    anime: np.ndarray
    predicted_rating: np.ndarray
    reasons: list[np.ndarray]


@dataclass
class Recommender:
    """Answers the questions people and the evaluation ask of the served models: lists, predicted ratings,
    neighbours. Ids travel in and out; indices stay inside."""

    users: IdMap  # user index ↔ raw user id
    anime: IdMap  # anime index ↔ raw anime id
    rating: RatingScorer  # predicted ratings
    ranking: ItemToItemModel  # what to list
    catalog: Catalog
    fallback_rating: float  # served for pairs the model never saw (its train mean)
    unrated_value: int
    known: pa.Table  # user_index, anime_index, rating: every pair the user rated or watched

    @classmethod
    def from_matrix(cls, model, ranking: ItemToItemModel, matrix: UtilityMatrix, unrated_value: int,
                    splits: tuple[str, ...] = SPLITS, l2: float = FOLD_IN_L2,
                    features: AnimeFeatures | None = None) -> Recommender:
        """Recommender over a built matrix and the trained Keras rating model; `known` holds the given splits plus
        the unrated watch history. `l2`: the rating model's training L2, which fold-in of someone new uses too.
        `features` (the feature model's): the catalog's anime no rating names are scored from theirs."""
        new_anime = None if features is None else features.not_in(matrix.anime_map)
        return cls(matrix.user_map, matrix.anime_map, RatingScorer.from_keras(model, matrix.scale, l2, new_anime),
                   ranking,
                   Catalog.of(matrix.anime_metadata()), matrix.train_mean_rating, unrated_value,
                   matrix.interactions(splits, unrated_value))

    def on_matrix(self, matrix: UtilityMatrix, splits: tuple[str, ...]) -> Recommender:
        """These models over another matrix's ids and known pairs, to score a registered version on the
        current split: users and anime it never saw get zero vectors and biases and no ranking weights, so
        it is judged on what it could have served."""
        users, anime = matrix.user_map, matrix.anime_map
        return dataclasses.replace(
            self, users=users, anime=anime, rating=self.rating.aligned(self.users, users, self.anime, anime),
            known=matrix.interactions(splits, self.unrated_value), ranking=self.ranking.reindexed(self.anime, anime))

    def find_anime(self, query: str) -> int:
        """Anime id for an id or a name, forgiving case, punctuation and HTML entities."""
        return self.catalog.find(query, self.anime.ids)

    @cached_property
    def new_anime(self) -> IdMap:
        """The anime no rating names that the rating model scores from their features (position ↔ raw id)."""
        return IdMap(self.rating.new_anime_ids, "new anime")

    def find_any_anime(self, query: str) -> int:
        """`find_anime` among the rated anime and the new ones (scored from their features)."""
        return self.catalog.find(query, np.concatenate([self.anime.ids, self.rating.new_anime_ids]))

    @cached_property
    def _known_matrix(self) -> sp.csr_matrix:
        """Every user's known pairs (users × anime), built once and weighted as the ranking model's input. Its
        structure is what each user has seen, so a lookup costs the user's own history."""
        return self.ranking.interaction.matrix(self.known, len(self.users), len(self.anime))

    def known_anime(self, user_index: int) -> np.ndarray:
        """The anime indices a user has rated or watched."""
        known = self._known_matrix
        return known.indices[known.indptr[user_index]:known.indptr[user_index + 1]]

    def ranking_scores(self, block: np.ndarray) -> np.ndarray:
        """What the served lists rank by, for a block of user indices: the ranking model's scores."""
        return self.ranking.scores(block, self._known_matrix[block])

    def predict_pairs(self, user_ids: np.ndarray, anime_ids: np.ndarray) -> np.ndarray:
        """Predicted ratings for raw id pairs: a new anime (no rating names it) from its features when the model
        has them; other pairs with an id the model never saw get its train mean."""
        users, anime = self.users.indices(user_ids), self.anime.indices(anime_ids)
        known = (users >= 0) & (anime >= 0)
        predicted = np.full(len(users), self.fallback_rating, dtype=np.float64)
        predicted[known] = self.rating.predict(users[known], anime[known])
        new = self.new_anime.indices(anime_ids)
        rows = np.flatnonzero((users >= 0) & (anime < 0) & (new >= 0))
        predicted[rows] = self.rating.predict_new(users[rows], new[rows])
        return predicted

    def top_n_batch(self, user_indices: np.ndarray, n: int,
                    scores_for: Callable[[np.ndarray], np.ndarray] | None = None,
                    chunk_size: int = 1024) -> np.ndarray:
        """Top-n unseen anime indices per user, scored in chunks so memory stays at chunk × n_anime.

        `scores_for(block)` gives a (len(block), n_anime) score block; the served ranking by default (the
        rating model alone or a baseline can pass their own).
        """
        return top_n_lists(scores_for or self.ranking_scores, user_indices, self._known_matrix, n, chunk_size)

    def _listing(self, history: sp.csr_matrix, user_vector: np.ndarray, user_bias: float, exclude: np.ndarray,
                 n: int, eligible: np.ndarray | None) -> Listing:
        """The n best unseen anime for one user (their ranking-model row, and their rating-model vector and
        bias) among the `eligible` ones, each with its predicted rating and why it is listed."""
        predicted = self.rating.score_users(user_vector[None, :], np.array([user_bias]))[0]
        scores = self.ranking.scores(None, history)[0]
        allowed = np.ones(len(self.anime), dtype=bool) if eligible is None else eligible.copy()
        allowed[exclude] = False
        candidates = np.flatnonzero(allowed & (scores > -np.inf))
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:n]]
        scale = self.rating.scale
        return Listing(best, np.clip(predicted[best], scale.minimum, scale.maximum),
                       self.ranking.because(history, best))

    def listing(self, user_id: int, n: int = K, eligible: np.ndarray | None = None) -> Listing:
        """A known user's list, among the `eligible` anime (a mask over anime indices; None: all)."""
        index = self.users.index(user_id)
        return self._listing(self._known_matrix[index], self.rating.user_vectors[index],
                             float(self.rating.user_bias[index]), self.known_anime(index), n, eligible)

    def listing_from_ratings(self, anime_ids: np.ndarray, ratings: np.ndarray, n: int = K,
                             eligible: np.ndarray | None = None) -> Listing:
        """For someone not in the data, without retraining: their ranking-model row comes straight from
        their ratings, their rating-model vector and bias are folded in."""
        anime_ids, ratings = np.asarray(anime_ids), np.asarray(ratings)
        self.rating.scale.check(anime_ids, ratings, self.unrated_value)
        indices = np.array([self.anime.index(int(a)) for a in anime_ids], dtype=np.int64)
        rated = ratings != self.unrated_value
        vector, bias = (self.rating.fold_in(indices[rated], ratings[rated]) if rated.any()
                        else (np.zeros(self.rating.user_vectors.shape[1], np.float32), 0.0))
        history = self.ranking.interaction.row(indices, ratings, len(self.anime))
        return self._listing(history, vector, bias, indices, n, eligible)

    def fold_in(self, anime_ids: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
        """Rating-model vector and bias for a user not in the data, from their ratings (anime side fixed)."""
        return self.rating.fold_in(np.array([self.anime.index(int(anime_id)) for anime_id in anime_ids]), ratings)

    def nearest_anime(self, anime_id: int, n: int = K, include_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The anime nearest to one, by the ranking model's partial correlation (which anime go together in
        people's histories once the rest is accounted for): their indices, nearest first, and similarities."""
        index = self.anime.index(anime_id)
        similarity = self.ranking.similarity(index)
        similarity[index] = 1.0 if include_self else -np.inf
        best = np.argsort(-similarity, kind="stable")[:n]
        best = best[np.isfinite(similarity[best])]
        return best, similarity[best]

    def rating_counts(self) -> np.ndarray:
        """How many ratings each anime has (watched-but-unrated rows not counted)."""
        return self._rating_counts.copy()

    @cached_property
    def _rating_counts(self) -> np.ndarray:
        rated = pc.not_equal(self.known["rating"], self.unrated_value)
        return np.bincount(self.known["anime_index"].filter(rated).to_numpy(), minlength=len(self.anime))
