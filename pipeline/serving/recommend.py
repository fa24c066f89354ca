"""Recommend: the ranking model decides what to list, the rating model says how much the user would like it.

Lists come from the ranking model (pipeline/models/ranking/): a user's history times its anime-to-anime weights, with
the one or two watched anime that added most shown as "because you watched". Each listed anime shows the rating
model's predicted rating (pipeline/models/rating/scorer.py); names, genres and filters come from the catalog
(pipeline/serving/catalog.py). A recommender over a registered bundle (bundle.py) without a ranking model
(registered before there was one) lists by predicted rating, as it did then.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from pipeline.matrix.utility_matrix import SPLITS, RatingScale, UtilityMatrix, lookup_indices
from pipeline.models.ranking.ease import ItemToItemModel
from pipeline.models.rating.scorer import FOLD_IN_L2, RatingScorer
from pipeline.serving.catalog import Catalog, UnknownIdError
from pipeline.top_n import K, top_n_lists


@dataclass(frozen=True)
class Listing:
    """One user's list: anime indices best first, their predicted ratings, and for each the indices of the watched
    anime that added most to it (none without a ranking model)."""

    anime: np.ndarray
    predicted_rating: np.ndarray
    reasons: list[np.ndarray]


@dataclass
class Recommender:
    user_ids: np.ndarray  # user index → raw user id
    anime_ids: np.ndarray  # anime index → raw anime id
    rating: RatingScorer  # predicted ratings
    ranking: ItemToItemModel | None  # what to list; None: rank by predicted rating (bundles from before it)
    catalog: Catalog
    fallback_rating: float  # served for pairs the model never saw (its train mean)
    unrated_value: int
    known: pa.Table  # user_index, anime_index, rating: every pair the user rated or watched

    @classmethod
    def from_model(cls, rating: RatingScorer, ranking: ItemToItemModel | None, user_ids: np.ndarray,
                   anime_ids: np.ndarray, fallback_rating: float, unrated_value: int, known: pa.Table,
                   anime: pa.Table) -> Recommender:
        return cls(np.asarray(user_ids), np.asarray(anime_ids), rating, ranking, Catalog.of(anime), fallback_rating,
                   unrated_value, known)

    @classmethod
    def from_matrix(cls, model, ranking: ItemToItemModel | None, matrix: UtilityMatrix, unrated_value: int,
                    splits: tuple[str, ...] = SPLITS, l2: float = FOLD_IN_L2) -> Recommender:
        """Recommender over a built matrix and the trained Keras rating model; `known` holds the given splits plus
        the unrated watch history. `l2`: the rating model's training L2, which fold-in of someone new uses too."""
        return cls.from_model(RatingScorer.from_keras(model, matrix.scale, l2), ranking, matrix.user_ids(),
                              matrix.anime_ids(), matrix.train_mean_rating, unrated_value,
                              matrix.interactions(splits, unrated_value), matrix.anime_metadata())

    def on_matrix(self, matrix: UtilityMatrix, splits: tuple[str, ...]) -> Recommender:
        """These models over another matrix's ids and known pairs, to score a registered version on the
        current split: users and anime it never saw get zero vectors and biases and no ranking weights, so
        it is judged on what it could have served."""
        user_ids, anime_ids = matrix.user_ids(), matrix.anime_ids()
        return dataclasses.replace(
            self, user_ids=user_ids, anime_ids=anime_ids,
            rating=self.rating.aligned(self.user_ids, user_ids, self.anime_ids, anime_ids),
            known=matrix.interactions(splits, self.unrated_value),
            ranking=None if self.ranking is None else self.ranking.reindexed(self.anime_ids, anime_ids))

    @property
    def scale(self) -> RatingScale:
        return self.rating.scale

    # ---- lookups -------------------------------------------------------------------------------
    def user_index(self, user_id: int) -> int:
        found = np.flatnonzero(self.user_ids == user_id)
        if not found.size:
            raise UnknownIdError(f"unknown user id {user_id}: the model knows {len(self.user_ids):,} users "
                                 f"(ids {self.user_ids.min()}..{self.user_ids.max()})")
        return int(found[0])

    def anime_index(self, anime_id: int) -> int:
        found = np.flatnonzero(self.anime_ids == anime_id)
        if not found.size:
            raise UnknownIdError(f"unknown anime id {anime_id}: it has no ratings in the model's data")
        return int(found[0])

    def find_anime(self, query: str) -> int:
        """Anime id for an id or a name, forgiving case, punctuation and HTML entities."""
        return self.catalog.find(query, self.anime_ids)

    @cached_property
    def _known_matrix(self) -> sp.csr_matrix:
        """Every user's known pairs (users × anime), built once: weighted as the ranking model's input (ones
        without one). Its structure is what each user has seen, so a lookup costs the user's own history."""
        n_users, n_anime = len(self.user_ids), len(self.anime_ids)
        if self.ranking is not None:
            return self.ranking.interaction.matrix(self.known, n_users, n_anime)
        return sp.csr_matrix((np.ones(self.known.num_rows, np.float32), (self.known["user_index"].to_numpy(),
                                                                         self.known["anime_index"].to_numpy())),
                             shape=(n_users, n_anime))

    def known_anime(self, user_index: int) -> np.ndarray:
        known = self._known_matrix
        return known.indices[known.indptr[user_index]:known.indptr[user_index + 1]]

    # ---- scoring -------------------------------------------------------------------------------
    def rating_scores(self, block: np.ndarray) -> np.ndarray:
        """The rating model's (unclipped) predicted ratings of every anime for a block of user indices."""
        return self.rating.rating_scores(block)

    def ranking_scores(self, block: np.ndarray) -> np.ndarray:
        """What the served lists rank by: the ranking model's scores (the rating model's without one)."""
        if self.ranking is None:
            return self.rating.scores(block)
        return self.ranking.scores(block, self._known_matrix[block])

    def predict_pairs(self, user_ids: np.ndarray, anime_ids: np.ndarray) -> np.ndarray:
        """Predicted ratings for raw id pairs; pairs with an id the model never saw get its train mean."""
        users = lookup_indices(np.asarray(user_ids), pa.table({"id": self.user_ids, "i": np.arange(len(
            self.user_ids))}), "id", "i")
        anime = lookup_indices(np.asarray(anime_ids), pa.table({"id": self.anime_ids, "i": np.arange(len(
            self.anime_ids))}), "id", "i")
        known = (users >= 0) & (anime >= 0)
        predicted = np.full(len(users), self.fallback_rating, dtype=np.float64)
        predicted[known] = self.rating.predict(users[known], anime[known])
        return predicted

    def top_n_batch(self, user_indices: np.ndarray, n: int,
                    scores_for: Callable[[np.ndarray], np.ndarray] | None = None,
                    chunk_size: int = 1024) -> np.ndarray:
        """Top-n unseen anime indices per user, scored in chunks so memory stays at chunk × n_anime.

        `scores_for(block)` gives a (len(block), n_anime) score block; the served ranking by default (the
        rating model alone or a baseline can pass their own).
        """
        return top_n_lists(scores_for or self.ranking_scores, user_indices, self._known_matrix, n, chunk_size)

    # ---- what people ask for -------------------------------------------------------------------
    def listing_for_history(self, history: sp.csr_matrix | None, user_vector: np.ndarray, user_bias: float,
                            exclude: np.ndarray, n: int = K, genre: str | None = None,
                            anime_type: str | None = None, min_ratings: int = 0) -> Listing:
        """The n best unseen anime for one user (their ranking-model row, and their rating-model vector and
        bias), after optional filters, each with its predicted rating and why it is listed."""
        predicted = self.rating.score_users(user_vector[None, :], np.array([user_bias]))[0]
        scores = predicted if self.ranking is None else self.ranking.scores(None, history)[0]
        eligible = (self.catalog.matches(self.anime_ids, genre, anime_type) if genre or anime_type
                    else np.ones(len(self.anime_ids), dtype=bool))
        eligible[exclude] = False
        if min_ratings:
            eligible &= self._rating_counts >= min_ratings
        candidates = np.flatnonzero(eligible & (scores > -np.inf))
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:n]]
        reasons = ([np.empty(0, np.int64)] * len(best) if self.ranking is None
                   else self.ranking.because(history, best))
        return Listing(best, np.clip(predicted[best], self.scale.minimum, self.scale.maximum), reasons)

    def listing(self, user_id: int, n: int = K, **filters) -> Listing:
        """A known user's list."""
        index = self.user_index(user_id)
        history = self._known_matrix[index] if self.ranking is not None else None
        return self.listing_for_history(history, self.rating.user_vectors[index],
                                        float(self.rating.user_bias[index]), self.known_anime(index), n, **filters)

    def listing_from_ratings(self, anime_ids: np.ndarray, ratings: np.ndarray, n: int = K, **filters) -> Listing:
        """For someone not in the data, without retraining: their ranking-model row comes straight from
        their ratings, their rating-model vector and bias are folded in."""
        anime_ids, ratings = np.asarray(anime_ids), np.asarray(ratings)
        indices = np.array([self.anime_index(int(a)) for a in anime_ids], dtype=np.int64)
        rated = ratings != self.unrated_value
        vector, bias = (self.rating.fold_in(indices[rated], ratings[rated]) if rated.any()
                        else (np.zeros(self.rating.user_vectors.shape[1], np.float32), 0.0))
        history = None if self.ranking is None else self.ranking.interaction.row(indices, ratings,
                                                                                  len(self.anime_ids))
        return self.listing_for_history(history, vector, bias, indices, n, **filters)

    def describe(self, listing: Listing) -> pd.DataFrame:
        """A listing as a table for people: id, name, genre, type, predicted rating and (with a ranking model)
        because you watched, the names joined by "; "."""
        frame = self.catalog.describe(self.anime_ids[listing.anime], predicted_rating=listing.predicted_rating)
        if self.ranking is not None:
            frame["because_you_watched"] = ["; ".join(self.catalog.names(self.anime_ids[reason]))
                                            for reason in listing.reasons]
        return frame

    def recommend(self, user_id: int, n: int = K, **filters) -> pd.DataFrame:
        return self.describe(self.listing(user_id, n, **filters))

    def recommend_from_ratings(self, anime_ids: np.ndarray, ratings: np.ndarray, n: int = K,
                               **filters) -> pd.DataFrame:
        return self.describe(self.listing_from_ratings(anime_ids, ratings, n, **filters))

    def fold_in(self, anime_ids: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
        """Rating-model vector and bias for a user not in the data, from their ratings (anime side fixed)."""
        return self.rating.fold_in(np.array([self.anime_index(int(anime_id)) for anime_id in anime_ids]), ratings)

    def similar_anime(self, anime_id: int, n: int = K, include_self: bool = False) -> pd.DataFrame:
        """The anime nearest to one: by the ranking model's partial correlation (which anime go together in
        people's histories once the rest is accounted for), or by embedding cosine without one."""
        best, similarity = self.nearest_anime(anime_id, n, include_self)
        return self.catalog.describe(self.anime_ids[best], similarity=similarity)

    def nearest_anime(self, anime_id: int, n: int = K, include_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`similar_anime`'s indices, nearest first, and their similarities."""
        index = self.anime_index(anime_id)
        if self.ranking is None:
            similarity = self.rating.anime_units @ self.rating.anime_units[index]
        else:
            similarity = self.ranking.similarity(index)
            similarity[index] = 1.0
        if not include_self:
            similarity[index] = -np.inf
        best = np.argsort(-similarity, kind="stable")[:n]
        best = best[np.isfinite(similarity[best])]
        return best, similarity[best]

    def similar_users(self, user_id: int, n: int = K, top_genres: int = 3) -> pd.DataFrame:
        """Nearest users by rating-model embedding, each with the genres they like most."""
        index = self.user_index(user_id)
        similarity = self.rating.user_units @ self.rating.user_units[index]
        similarity[index] = -np.inf
        best = np.argsort(-similarity, kind="stable")[:n]
        return pd.DataFrame({"user_id": self.user_ids[best], "similarity": similarity[best],
                             "likes": [", ".join(self.liked_genres(int(u), top_genres)) for u in best]})

    def liked_genres(self, user_index: int, top: int = 3) -> list[str]:
        """Genres most frequent among the anime a user rated at or above their own mean rating."""
        rows = self.known.filter(pc.and_(pc.equal(self.known["user_index"], user_index),
                                         pc.not_equal(self.known["rating"], self.unrated_value)))
        ratings = rows["rating"].to_numpy()
        if not len(ratings):
            return []
        return self.catalog.top_genres(self.anime_ids[rows["anime_index"].to_numpy()[ratings >= ratings.mean()]], top)

    def rating_counts(self) -> np.ndarray:
        """How many ratings each anime has (watched-but-unrated rows not counted)."""
        return self._rating_counts.copy()

    @cached_property
    def _rating_counts(self) -> np.ndarray:
        rated = pc.not_equal(self.known["rating"], self.unrated_value)
        return np.bincount(self.known["anime_index"].filter(rated).to_numpy(), minlength=len(self.anime_ids))
