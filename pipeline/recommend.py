"""Recommend: the ranking model decides what to list, the rating model says how much the user would like it.

Lists come from the ranking model (pipeline/ranking.py): a user's history times its anime-to-anime
weights, with the one or two watched anime that added most shown as "because you watched". Each listed
anime shows the rating model's predicted rating. Both rating model families share one scoring form:
out(w · (u · a + b_user + b_anime) + b), unscaled to the rating scale, where the seed model's vectors are
unit rows (so u · a is the cosine), its biases are zero and `out` is the sigmoid, and the biased model's
`out` clips to [0, 1]. The bundle a `Recommender` saves (Keras rating model, ranking model, id maps,
anime metadata, known ratings) is what gets registered. A bundle without a ranking model (registered
before there was one) lists by predicted rating, as it did then.
"""

from __future__ import annotations

import dataclasses
import difflib
import html
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from pipeline.matrix import (
    ANIME_INDEX_FILE,
    ANIME_METADATA_FILE,
    SPLITS,
    USER_INDEX_FILE,
    RatingScale,
    UtilityMatrix,
    lookup_indices,
)
from pipeline.metrics import K, top_n_lists
from pipeline.ranking import ItemToItemModel

MODEL_FILE = "model.keras"
NOT_IN_METADATA = "(not in anime.csv)"  # shown for an anime rated in the data but missing from anime.csv
KNOWN_FILE = "known.parquet"  # user_index, anime_index, rating (unrated value for watched-but-unrated)
META_FILE = "recommender.json"
RANKING_DIR = "ranking"
FOLD_IN_L2 = 0.02  # per-rating L2 on a folded-in user's vector and bias (as the default training)


class UnknownIdError(LookupError):
    """A user or anime id the model does not know, or a name that matches no anime."""


def _normalize_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.maximum((vectors.astype(np.float64) ** 2).sum(axis=1, keepdims=True), 1e-12))
    return (vectors / norms).astype(np.float32)


def normalize_title(title: str) -> str:
    """Forgiving key for names: HTML entities decoded, case folded, punctuation and spacing dropped."""
    without_apostrophes = re.sub(r"['’`]", "", html.unescape(title).casefold())
    return re.sub(r"[\W_]+", " ", without_apostrophes).strip()


@dataclass
class Recommender:
    user_ids: np.ndarray  # embedding row → raw user id
    anime_ids: np.ndarray  # embedding row → raw anime id
    user_vectors: np.ndarray  # (n_users, dim), unit rows when `normalized`
    anime_vectors: np.ndarray  # (n_anime, dim)
    user_bias: np.ndarray  # (n_users,), zeros for the seed model
    anime_bias: np.ndarray  # (n_anime,)
    weight: float  # the final Dense(1)
    bias: float
    normalized: bool  # cosine model: vectors are unit rows and stay so when folding in
    output: str  # "sigmoid" (seed) or "clip" (biased: trained unclipped, served clipped to [0, 1])
    scale: RatingScale
    fallback_rating: float  # served for pairs the model never saw (its train mean)
    unrated_value: int
    known: pa.Table  # user_index, anime_index, rating: every pair the user rated or watched
    anime: pd.DataFrame  # metadata indexed by anime_id (name, genre, type, ...)
    ranking: ItemToItemModel | None  # what to list; None: rank by predicted rating (bundles from before it)

    # ---- building and persisting -------------------------------------------------------------
    @classmethod
    def from_model(cls, model, ranking: ItemToItemModel | None, user_ids: np.ndarray, anime_ids: np.ndarray,
                   scale: RatingScale, fallback_rating: float, unrated_value: int, known: pa.Table,
                   anime: pa.Table) -> Recommender:
        biased = any(layer.name == "user_bias" for layer in model.layers)
        weight, bias = (model.get_layer("head") if biased else model).get_layer("rating").get_weights()
        user_vectors, anime_vectors = (model.get_layer(name).get_weights()[0]
                                       for name in ("user_embedding", "anime_embedding"))
        if biased:
            user_bias, anime_bias = (model.get_layer(name).get_weights()[0].reshape(-1)
                                     for name in ("user_bias", "anime_bias"))
        else:
            user_vectors, anime_vectors = _normalize_rows(user_vectors), _normalize_rows(anime_vectors)
            user_bias, anime_bias = np.zeros(len(user_vectors), np.float32), np.zeros(len(anime_vectors), np.float32)
        return cls(
            user_ids=np.asarray(user_ids), anime_ids=np.asarray(anime_ids),
            user_vectors=user_vectors, anime_vectors=anime_vectors, user_bias=user_bias, anime_bias=anime_bias,
            weight=float(weight.reshape(-1)[0]), bias=float(bias.reshape(-1)[0]),
            normalized=not biased, output="clip" if biased else "sigmoid", scale=scale,
            fallback_rating=fallback_rating, unrated_value=unrated_value, known=known,
            anime=anime.to_pandas().drop_duplicates("anime_id").set_index("anime_id"), ranking=ranking,
        )

    @classmethod
    def from_matrix(cls, model, ranking: ItemToItemModel | None, matrix: UtilityMatrix, unrated_value: int,
                    splits: tuple[str, ...] = SPLITS) -> Recommender:
        """Recommender over a built matrix; `known` holds the given splits plus the unrated watch history."""
        return cls.from_model(model, ranking, matrix.user_ids(), matrix.anime_ids(), matrix.scale,
                              matrix.train_mean_rating, unrated_value, matrix.interactions(splits, unrated_value),
                              matrix.anime_metadata())

    @staticmethod
    def save_bundle(model, ranking: ItemToItemModel, matrix: UtilityMatrix, unrated_value: int, out_dir: Path) -> Path:
        """Write what serving needs into `out_dir`: both models, id maps, metadata, known pairs."""
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(out_dir / MODEL_FILE)
        ranking.save(out_dir / RANKING_DIR)
        for name in (USER_INDEX_FILE, ANIME_INDEX_FILE, ANIME_METADATA_FILE):
            shutil.copyfile(matrix.path / name, out_dir / name)
        pq.write_table(matrix.interactions(SPLITS, unrated_value), out_dir / KNOWN_FILE)
        (out_dir / META_FILE).write_text(json.dumps({
            "scale": {"minimum": matrix.scale.minimum, "maximum": matrix.scale.maximum},
            "fallback_rating": matrix.train_mean_rating, "unrated_value": unrated_value,
            "data_version": matrix.data_version}))
        return out_dir

    @classmethod
    def load_bundle(cls, bundle: Path) -> Recommender:
        import keras

        meta = json.loads((bundle / META_FILE).read_text())
        model = keras.models.load_model(bundle / MODEL_FILE, safe_mode=True, compile=False)
        ranking = ItemToItemModel.load(bundle / RANKING_DIR) if (bundle / RANKING_DIR).is_dir() else None
        return cls.from_model(
            model, ranking, pq.read_table(bundle / USER_INDEX_FILE)["user_id"].to_numpy(),
            pq.read_table(bundle / ANIME_INDEX_FILE)["anime_id"].to_numpy(), RatingScale(**meta["scale"]),
            meta["fallback_rating"], meta["unrated_value"], pq.read_table(bundle / KNOWN_FILE),
            pq.read_table(bundle / ANIME_METADATA_FILE))

    def on_matrix(self, matrix: UtilityMatrix, splits: tuple[str, ...]) -> Recommender:
        """These models over another matrix's ids and known pairs, to score a registered version on the
        current split: users and anime it never saw get zero vectors and biases and no ranking weights, so
        it is judged on what it could have served."""
        user_ids, anime_ids = matrix.user_ids(), matrix.anime_ids()

        def aligned(values: np.ndarray, own_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
            position = lookup_indices(ids, pa.table({"id": own_ids, "i": np.arange(len(own_ids))}), "id", "i")
            out = np.zeros((len(ids), *values.shape[1:]), dtype=values.dtype)
            out[position >= 0] = values[position[position >= 0]]
            return out

        return dataclasses.replace(
            self, user_ids=user_ids, anime_ids=anime_ids,
            user_vectors=aligned(self.user_vectors, self.user_ids, user_ids),
            user_bias=aligned(self.user_bias, self.user_ids, user_ids),
            anime_vectors=aligned(self.anime_vectors, self.anime_ids, anime_ids),
            anime_bias=aligned(self.anime_bias, self.anime_ids, anime_ids),
            known=matrix.interactions(splits, self.unrated_value),
            ranking=None if self.ranking is None else self.ranking.reindexed(self.anime_ids, anime_ids))

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
        if query.strip().isdigit():
            return int(query)
        names = self.anime["name"].dropna()
        keys = names.map(normalize_title)
        wanted = normalize_title(query)
        for candidates in (keys[keys == wanted], keys[keys.str.contains(wanted, regex=False)] if wanted else keys[:0]):
            modelled = [anime_id for anime_id in candidates.index if anime_id in set(self.anime_ids)]
            if modelled:
                return int(min(modelled, key=lambda anime_id: len(keys[anime_id])))
        close = difflib.get_close_matches(wanted, keys.tolist(), n=5, cutoff=0.5)
        suggestions = [names[keys == key].iloc[0] for key in close]
        hint = f"; did you mean: {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        raise UnknownIdError(f"no anime named {query!r}{hint}")

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
    def _trained_output(self, interaction: np.ndarray) -> np.ndarray:
        """What the loss saw in training, from u · a + b_user + b_anime (the biased model's is unclipped)."""
        logit = self.weight * interaction + self.bias
        return 1.0 / (1.0 + np.exp(-logit)) if self.output == "sigmoid" else logit

    def _scaled(self, interaction: np.ndarray) -> np.ndarray:
        """The model's served output, in [0, 1]."""
        return np.clip(self._trained_output(interaction), 0.0, 1.0)

    def score_users(self, user_vectors: np.ndarray, user_bias: np.ndarray) -> np.ndarray:
        """The rating model's predicted ratings of every anime for a block of users (vectors and biases):
        one matrix product. Unclipped, so that when they rank (the rating model alone, or a bundle without
        a ranking model) anime predicted beyond the top of the scale still rank in order.
        """
        interaction = user_vectors @ self.anime_vectors.T + user_bias[:, None] + self.anime_bias[None, :]
        return self.scale.unscale(self._trained_output(interaction))

    def rating_scores(self, block: np.ndarray) -> np.ndarray:
        """The rating model's (unclipped) predicted ratings of every anime for a block of user indices."""
        return self.score_users(self.user_vectors[block], self.user_bias[block])

    def ranking_scores(self, block: np.ndarray) -> np.ndarray:
        """What the served lists rank by: the ranking model's scores (the rating model's without one)."""
        if self.ranking is None:
            return self.rating_scores(block)
        return self.ranking.scores(self._known_matrix[block])

    def predict_pairs(self, user_ids: np.ndarray, anime_ids: np.ndarray) -> np.ndarray:
        """Predicted ratings for raw id pairs; pairs with an id the model never saw get its train mean."""
        users = lookup_indices(np.asarray(user_ids), pa.table({"id": self.user_ids, "i": np.arange(len(
            self.user_ids))}), "id", "i")
        anime = lookup_indices(np.asarray(anime_ids), pa.table({"id": self.anime_ids, "i": np.arange(len(
            self.anime_ids))}), "id", "i")
        known = (users >= 0) & (anime >= 0)
        predicted = np.full(len(users), self.fallback_rating, dtype=np.float64)
        users, anime = users[known], anime[known]
        interaction = (np.einsum("ij,ij->i", self.user_vectors[users], self.anime_vectors[anime])
                       + self.user_bias[users] + self.anime_bias[anime])
        predicted[known] = self.scale.unscale(self._scaled(interaction))
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
    def recommend_for_history(self, history: sp.csr_matrix, user_vector: np.ndarray, user_bias: float,
                              exclude: np.ndarray, n: int = K, genre: str | None = None,
                              anime_type: str | None = None, min_ratings: int = 0) -> pd.DataFrame:
        """The n best unseen anime for one user (their ranking-model row, and their rating-model vector and
        bias), after optional filters, each with its predicted rating and why it is listed."""
        predicted = self.score_users(user_vector[None, :], np.array([user_bias]))[0]
        scores = predicted if self.ranking is None else self.ranking.scores(history)[0]
        eligible = np.ones(len(self.anime_ids), dtype=bool)
        eligible[exclude] = False
        meta = self.anime.reindex(self.anime_ids) if genre or anime_type else None
        if genre:
            eligible &= meta["genre"].fillna("").str.casefold().str.contains(genre.casefold(), regex=False).to_numpy()
        if anime_type:
            eligible &= (meta["type"].fillna("").str.casefold() == anime_type.casefold()).to_numpy()
        if min_ratings:
            eligible &= self.rating_counts() >= min_ratings
        candidates = np.flatnonzero(eligible & (scores > -np.inf))
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:n]]
        frame = self._describe(best, predicted_rating=np.clip(predicted[best], self.scale.minimum,
                                                              self.scale.maximum))
        if self.ranking is not None:
            frame["because_you_watched"] = ["; ".join(self._names(reason))
                                            for reason in self.ranking.because(history, best)]
        return frame

    def recommend(self, user_id: int, n: int = K, **filters) -> pd.DataFrame:
        index = self.user_index(user_id)
        history = self._known_matrix[index] if self.ranking is not None else None
        return self.recommend_for_history(history, self.user_vectors[index], float(self.user_bias[index]),
                                          self.known_anime(index), n, **filters)

    def fold_in(self, anime_ids: np.ndarray, ratings: np.ndarray, steps: int = 300) -> tuple[np.ndarray, float]:
        """Vector and bias for a user not in the data, from a few ratings, with the anime side fixed:
        Adam on the training loss (cross-entropy for the sigmoid model, squared error + L2 for the
        biased one; both give the logit gradient `predicted − target`)."""
        indices = np.array([self.anime_index(int(anime_id)) for anime_id in anime_ids])
        target = self.scale.scale(np.asarray(ratings, dtype=np.float64)).astype(np.float64)
        vectors = self.anime_vectors[indices].astype(np.float64)
        anime_bias = self.anime_bias[indices].astype(np.float64)
        start = ((target - target.mean() + 1e-3)[:, None] * vectors).sum(axis=0)
        length = 1.0 if self.normalized else float(np.linalg.norm(self.user_vectors, axis=1).mean())
        params = np.append(start / max(np.linalg.norm(start), 1e-12) * length, 0.0)  # [vector..., bias]
        l2 = 0.0 if self.normalized else FOLD_IN_L2
        moment, velocity = np.zeros_like(params), np.zeros_like(params)
        for step in range(1, steps + 1):
            user, user_bias = params[:-1], params[-1] if not self.normalized else 0.0
            norm = np.linalg.norm(user) if self.normalized else 1.0
            similarity = vectors @ user / norm
            predicted = self._trained_output(similarity + user_bias + anime_bias)
            d_logit = (predicted - target) * self.weight / len(target)
            d_similarity = vectors - similarity[:, None] * (user / norm)[None, :] if self.normalized else vectors
            grad = np.append((d_logit[:, None] * d_similarity).sum(axis=0) / norm + 2 * l2 * user,
                             d_logit.sum() + 2 * l2 * user_bias if not self.normalized else 0.0)
            moment = 0.9 * moment + 0.1 * grad
            velocity = 0.999 * velocity + 0.001 * grad**2
            params -= 0.05 * (moment / (1 - 0.9**step)) / (np.sqrt(velocity / (1 - 0.999**step)) + 1e-8)
        user = params[:-1] / np.linalg.norm(params[:-1]) if self.normalized else params[:-1]
        return user.astype(np.float32), float(params[-1])

    def recommend_from_ratings(self, anime_ids: np.ndarray, ratings: np.ndarray, n: int = K,
                               **filters) -> pd.DataFrame:
        """For someone not in the data, without retraining: their ranking-model row comes straight from
        their ratings, their rating-model vector and bias are folded in."""
        anime_ids, ratings = np.asarray(anime_ids), np.asarray(ratings)
        indices = np.array([self.anime_index(int(a)) for a in anime_ids], dtype=np.int64)
        rated = ratings != self.unrated_value
        vector, bias = (self.fold_in(anime_ids[rated], ratings[rated]) if rated.any()
                        else (np.zeros(self.user_vectors.shape[1], np.float32), 0.0))
        history = None if self.ranking is None else self.ranking.interaction.matrix(
            pa.table({"user_index": np.zeros(len(indices), np.int32), "anime_index": indices, "rating": ratings}),
            1, len(self.anime_ids))
        return self.recommend_for_history(history, vector, bias, indices, n, **filters)

    def similar_anime(self, anime_id: int, n: int = K, include_self: bool = False) -> pd.DataFrame:
        """The anime nearest to one: by the ranking model's partial correlation (which anime go together in
        people's histories once the rest is accounted for), or by embedding cosine without one."""
        index = self.anime_index(anime_id)
        if self.ranking is None:
            similarity = self.anime_units @ self.anime_units[index]
        else:
            similarity = self.ranking.similarity(index)
            similarity[index] = 1.0
        if not include_self:
            similarity[index] = -np.inf
        best = np.argsort(-similarity, kind="stable")[:n]
        best = best[np.isfinite(similarity[best])]
        return self._describe(best, similarity=similarity[best])

    def similar_users(self, user_id: int, n: int = K, top_genres: int = 3) -> pd.DataFrame:
        index = self.user_index(user_id)
        similarity = self.user_units @ self.user_units[index]
        similarity[index] = -np.inf
        best = np.argsort(-similarity, kind="stable")[:n]
        return pd.DataFrame({"user_id": self.user_ids[best], "similarity": similarity[best],
                             "likes": [", ".join(self.liked_genres(int(u), top_genres)) for u in best]})

    @cached_property
    def anime_units(self) -> np.ndarray:
        """Unit anime vectors: similar anime are the nearest by embedding cosine."""
        return self.anime_vectors if self.normalized else _normalize_rows(self.anime_vectors)

    @cached_property
    def user_units(self) -> np.ndarray:
        return self.user_vectors if self.normalized else _normalize_rows(self.user_vectors)

    def liked_genres(self, user_index: int, top: int = 3) -> list[str]:
        """Genres most frequent among the anime a user rated at or above their own mean rating."""
        mask = pc.and_(pc.equal(self.known["user_index"], user_index),
                       pc.not_equal(self.known["rating"], self.unrated_value))
        rows = self.known.filter(mask)
        ratings = rows["rating"].to_numpy()
        if not len(ratings):
            return []
        liked = self.anime_ids[rows["anime_index"].to_numpy()[ratings >= ratings.mean()]]
        genres = self.anime.reindex(liked)["genre"].dropna().str.split(r",\s*").explode()
        return genres.value_counts().head(top).index.tolist()

    def rating_counts(self) -> np.ndarray:
        rated = pc.not_equal(self.known["rating"], self.unrated_value)
        return np.bincount(self.known["anime_index"].filter(rated).to_numpy(), minlength=len(self.anime_ids))

    def _names(self, anime_indices: np.ndarray) -> list[str]:
        ids = self.anime_ids[anime_indices]
        names = self.anime["name"].reindex(ids).to_numpy()
        return [name if isinstance(name, str) else f"anime {anime_id} {NOT_IN_METADATA}"
                for anime_id, name in zip(ids, names, strict=True)]

    def _describe(self, anime_indices: np.ndarray, **scores: np.ndarray) -> pd.DataFrame:
        ids = self.anime_ids[anime_indices]
        meta = self.anime.reindex(ids)
        frame = pd.DataFrame({"anime_id": ids, "name": meta["name"].to_numpy(), "genre": meta["genre"].to_numpy(),
                              "type": meta["type"].to_numpy()})
        for column, values in scores.items():
            frame[column] = np.round(values.astype(np.float64), 3)
        return frame
