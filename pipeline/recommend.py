"""Recommend: fill in the blanks of the utility matrix from a trained model's embeddings.

A predicted rating is sigmoid(w · cos(user, anime) + b), unscaled to the rating scale, so scoring every
anime for a user is one matrix–vector product over the normalized anime embedding table. The bundle a
`Recommender` saves (Keras model, id maps, anime metadata, known ratings) is what gets registered.
"""

from __future__ import annotations

import difflib
import html
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.matrix import ANIME_INDEX_FILE, SPLITS, USER_INDEX_FILE, RatingScale, UtilityMatrix, lookup_indices

MODEL_FILE = "model.keras"
KNOWN_FILE = "known.parquet"  # user_index, anime_index, rating (unrated value for watched-but-unrated)
ANIME_FILE = "anime.parquet"
META_FILE = "recommender.json"


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
    user_vectors: np.ndarray  # (n_users, dim), unit rows
    anime_vectors: np.ndarray  # (n_anime, dim), unit rows
    weight: float  # Dense(1) on the cosine
    bias: float
    scale: RatingScale
    fallback_rating: float  # served for pairs the model never saw (its train mean)
    unrated_value: int
    known: pa.Table  # user_index, anime_index, rating: every pair the user rated or watched
    anime: pd.DataFrame  # metadata indexed by anime_id (name, genre, type, ...)

    # ---- building and persisting -------------------------------------------------------------
    @classmethod
    def from_model(cls, model, user_ids: np.ndarray, anime_ids: np.ndarray, scale: RatingScale,
                   fallback_rating: float, unrated_value: int, known: pa.Table, anime: pa.Table) -> Recommender:
        weight, bias = model.get_layer("rating").get_weights()
        return cls(
            user_ids=np.asarray(user_ids), anime_ids=np.asarray(anime_ids),
            user_vectors=_normalize_rows(model.get_layer("user_embedding").get_weights()[0]),
            anime_vectors=_normalize_rows(model.get_layer("anime_embedding").get_weights()[0]),
            weight=float(weight.reshape(-1)[0]), bias=float(bias.reshape(-1)[0]), scale=scale,
            fallback_rating=fallback_rating, unrated_value=unrated_value, known=known,
            anime=anime.to_pandas().drop_duplicates("anime_id").set_index("anime_id"),
        )

    @classmethod
    def from_matrix(cls, model, matrix: UtilityMatrix, unrated_value: int,
                    splits: tuple[str, ...] = SPLITS) -> Recommender:
        """Recommender over a built matrix; `known` holds the given splits plus the unrated watch history."""
        user_map, anime_map = pq.read_table(matrix.user_index_path), pq.read_table(matrix.anime_index_path)
        parts = [matrix.split(name).select(["user_index", "anime_index", "rating"]) for name in splits]
        unrated = pq.read_table(matrix.path / "unrated.parquet")
        users = lookup_indices(unrated["user_id"].to_numpy(), user_map, "user_id", "user_index")
        anime = lookup_indices(unrated["anime_id"].to_numpy(), anime_map, "anime_id", "anime_index")
        mapped = (users >= 0) & (anime >= 0)
        parts.append(pa.table({"user_index": users[mapped].astype(np.int32), "anime_index": anime[mapped].astype(
            np.int32), "rating": np.full(int(mapped.sum()), unrated_value, dtype=np.int16)}))
        return cls.from_model(model, user_map["user_id"].to_numpy(), anime_map["anime_id"].to_numpy(), matrix.scale,
                              matrix.train_mean_rating, unrated_value, pa.concat_tables(parts),
                              pq.read_table(matrix.path / "anime.parquet"))

    @staticmethod
    def save_bundle(model, matrix: UtilityMatrix, unrated_value: int, out_dir: Path) -> Path:
        """Write what serving needs into `out_dir`: the Keras model, id maps, metadata, known pairs."""
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(out_dir / MODEL_FILE)
        for name in (USER_INDEX_FILE, ANIME_INDEX_FILE, ANIME_FILE):
            shutil.copyfile(matrix.path / name, out_dir / name)
        pq.write_table(Recommender.from_matrix(model, matrix, unrated_value).known, out_dir / KNOWN_FILE)
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
        return cls.from_model(
            model, pq.read_table(bundle / USER_INDEX_FILE)["user_id"].to_numpy(),
            pq.read_table(bundle / ANIME_INDEX_FILE)["anime_id"].to_numpy(), RatingScale(**meta["scale"]),
            meta["fallback_rating"], meta["unrated_value"], pq.read_table(bundle / KNOWN_FILE),
            pq.read_table(bundle / ANIME_FILE))

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

    def known_anime(self, user_index: int) -> np.ndarray:
        mask = pc.equal(self.known["user_index"], user_index)
        return self.known["anime_index"].filter(mask).to_numpy()

    # ---- scoring -------------------------------------------------------------------------------
    def _to_ratings(self, cosine: np.ndarray) -> np.ndarray:
        return self.scale.unscale(1.0 / (1.0 + np.exp(-(self.weight * cosine + self.bias))))

    def score_users(self, user_vectors: np.ndarray) -> np.ndarray:
        """Predicted ratings of every anime for a block of (unit) user vectors: one matrix product."""
        return self._to_ratings(user_vectors @ self.anime_vectors.T)

    def predict_pairs(self, user_ids: np.ndarray, anime_ids: np.ndarray) -> np.ndarray:
        """Predicted ratings for raw id pairs; pairs with an id the model never saw get its train mean."""
        users = lookup_indices(np.asarray(user_ids), pa.table({"id": self.user_ids, "i": np.arange(len(
            self.user_ids))}), "id", "i")
        anime = lookup_indices(np.asarray(anime_ids), pa.table({"id": self.anime_ids, "i": np.arange(len(
            self.anime_ids))}), "id", "i")
        known = (users >= 0) & (anime >= 0)
        predicted = np.full(len(users), self.fallback_rating, dtype=np.float64)
        cosine = np.einsum("ij,ij->i", self.user_vectors[users[known]], self.anime_vectors[anime[known]])
        predicted[known] = self._to_ratings(cosine)
        return predicted

    def top_n_batch(self, user_indices: np.ndarray, n: int, known: pa.Table | None = None,
                    scores_for: Callable[[np.ndarray], np.ndarray] | None = None,
                    chunk_size: int = 1024) -> np.ndarray:
        """Top-n unseen anime indices per user, scored in chunks so memory stays at chunk × n_anime.

        `scores_for(block)` gives a (len(block), n_anime) score block; the model's predicted ratings by
        default (a baseline can pass its own).
        """
        known = self.known if known is None else known
        scores_for = scores_for or (lambda block: self.score_users(self.user_vectors[block]))
        order = np.argsort(known["user_index"].to_numpy(), kind="stable")
        known_users = known["user_index"].to_numpy()[order]
        known_anime = known["anime_index"].to_numpy()[order]
        result = np.empty((len(user_indices), n), dtype=np.int64)
        for start in range(0, len(user_indices), chunk_size):
            block = np.asarray(user_indices[start:start + chunk_size])
            scores = np.array(scores_for(block), dtype=np.float64)
            lo, hi = np.searchsorted(known_users, block), np.searchsorted(known_users, block, side="right")
            rows = np.repeat(np.arange(len(block)), hi - lo)
            cols = np.concatenate([known_anime[a:b] for a, b in zip(lo, hi, strict=True)]) if len(rows) else rows
            scores[rows, cols] = -np.inf
            top = np.argpartition(-scores, kth=min(n, scores.shape[1] - 1), axis=1)[:, :n]
            ranked = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
            result[start:start + len(block)] = ranked
        return result

    # ---- what people ask for -------------------------------------------------------------------
    def recommend_for_vector(self, user_vector: np.ndarray, exclude: np.ndarray, n: int = 10,
                             genre: str | None = None, anime_type: str | None = None,
                             min_ratings: int = 0) -> pd.DataFrame:
        """The n unseen anime with the highest predicted rating, after optional filters."""
        predicted = self.score_users(user_vector[None, :])[0]
        eligible = np.ones(len(self.anime_ids), dtype=bool)
        eligible[exclude] = False
        meta = self.anime.reindex(self.anime_ids)
        if genre:
            eligible &= meta["genre"].fillna("").str.casefold().str.contains(genre.casefold(), regex=False).to_numpy()
        if anime_type:
            eligible &= (meta["type"].fillna("").str.casefold() == anime_type.casefold()).to_numpy()
        if min_ratings:
            eligible &= self.rating_counts() >= min_ratings
        candidates = np.flatnonzero(eligible)
        best = candidates[np.argsort(-predicted[candidates], kind="stable")[:n]]
        return self._describe(best, predicted_rating=predicted[best])

    def recommend(self, user_id: int, n: int = 10, **filters) -> pd.DataFrame:
        index = self.user_index(user_id)
        return self.recommend_for_vector(self.user_vectors[index], self.known_anime(index), n, **filters)

    def fold_in(self, anime_ids: np.ndarray, ratings: np.ndarray, steps: int = 300) -> np.ndarray:
        """Unit embedding for a user not in the data, from a few ratings, with anime embeddings fixed:
        gradient descent on the training loss (binary cross-entropy of the scaled ratings)."""
        indices = np.array([self.anime_index(int(anime_id)) for anime_id in anime_ids])
        target = self.scale.scale(np.asarray(ratings, dtype=np.float64)).astype(np.float64)
        vectors = self.anime_vectors[indices].astype(np.float64)
        start = ((target - target.mean() + 1e-3)[:, None] * vectors).sum(axis=0)
        user = start / max(np.linalg.norm(start), 1e-12)
        moment, velocity = np.zeros_like(user), np.zeros_like(user)
        for step in range(1, steps + 1):
            norm = np.linalg.norm(user)
            unit = user / norm
            cosine = vectors @ unit
            predicted = 1.0 / (1.0 + np.exp(-(self.weight * cosine + self.bias)))
            d_cosine = (predicted - target) * self.weight / len(target)
            grad = (d_cosine[:, None] * (vectors - cosine[:, None] * unit[None, :])).sum(axis=0) / norm
            moment = 0.9 * moment + 0.1 * grad
            velocity = 0.999 * velocity + 0.001 * grad**2
            user -= 0.05 * (moment / (1 - 0.9**step)) / (np.sqrt(velocity / (1 - 0.999**step)) + 1e-8)
        return (user / np.linalg.norm(user)).astype(np.float32)

    def recommend_from_ratings(self, anime_ids: np.ndarray, ratings: np.ndarray, n: int = 10,
                               **filters) -> pd.DataFrame:
        rated = np.asarray(ratings) != self.unrated_value
        vector = self.fold_in(np.asarray(anime_ids)[rated], np.asarray(ratings)[rated])
        exclude = np.array([self.anime_index(int(a)) for a in anime_ids], dtype=np.int64)
        return self.recommend_for_vector(vector, exclude, n, **filters)

    def similar_anime(self, anime_id: int, n: int = 10, include_self: bool = False) -> pd.DataFrame:
        index = self.anime_index(anime_id)
        similarity = self.anime_vectors @ self.anime_vectors[index]
        if not include_self:
            similarity[index] = -np.inf
        best = np.argsort(-similarity, kind="stable")[:n]
        return self._describe(best, similarity=similarity[best])

    def similar_users(self, user_id: int, n: int = 10, top_genres: int = 3) -> pd.DataFrame:
        index = self.user_index(user_id)
        similarity = self.user_vectors @ self.user_vectors[index]
        similarity[index] = -np.inf
        best = np.argsort(-similarity, kind="stable")[:n]
        return pd.DataFrame({"user_id": self.user_ids[best], "similarity": similarity[best],
                             "likes": [", ".join(self.liked_genres(int(u), top_genres)) for u in best]})

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

    def _describe(self, anime_indices: np.ndarray, **scores: np.ndarray) -> pd.DataFrame:
        ids = self.anime_ids[anime_indices]
        meta = self.anime.reindex(ids)
        frame = pd.DataFrame({"anime_id": ids, "name": meta["name"].to_numpy(), "genre": meta["genre"].to_numpy(),
                              "type": meta["type"].to_numpy()})
        for column, values in scores.items():
            frame[column] = np.round(values.astype(np.float64), 3)
        return frame
