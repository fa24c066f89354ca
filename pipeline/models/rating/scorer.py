"""The rating model outside Keras, for serving: its weights and the one scoring form both kinds share,
out(w · (u · a + b_user + b_anime) + b), unscaled to the rating scale.

- `cosine` (the seed model): unit user and anime vectors (u · a is their cosine), no biases, out = sigmoid.
- `biased` (biased MF, the default): raw vectors and biases, trained unclipped, served clipped to [0, 1].

tests/serving/test_recommend.py pins this form to the Keras model's own predictions.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numba
import numpy as np
import scipy.sparse as sp

from pipeline.matrix.id_map import IdMap
from pipeline.matrix.utility_matrix import RatingScale
from pipeline.settings import TrainingConfig

RatingKind = Literal["cosine", "biased"]
# The training default: the L2 of a model whose own is not recorded (bundles saved before it was)
FOLD_IN_L2 = TrainingConfig.model_fields["l2"].default
ARRAYS = ("user_vectors", "anime_vectors", "user_bias", "anime_bias")
NEW_ARRAYS = ("new_anime_ids", "new_anime_vectors", "new_anime_bias")  # absent from bundles saved before them
ARRAYS_FILE, CONFIG_FILE = "weights.npz", "rating.json"


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.maximum((vectors.astype(np.float64) ** 2).sum(axis=1, keepdims=True), 1e-12))
    return (vectors / norms).astype(np.float32)


@dataclass
class RatingScorer:
    kind: RatingKind
    user_vectors: np.ndarray  # (n_users, dim), unit rows for `cosine`
    anime_vectors: np.ndarray  # (n_anime, dim)
    user_bias: np.ndarray  # (n_users,), zeros for `cosine`
    anime_bias: np.ndarray  # (n_anime,)
    weight: float  # the final Dense(1)
    bias: float
    scale: RatingScale
    l2: float  # the L2 the model was trained with: a folded-in user is regularized the same way
    # Anime of the catalog that no rating names (the feature model scores them from their features alone): raw ids,
    # vectors and biases in the anime side's form; empty for the other kinds
    new_anime_ids: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.int64))
    new_anime_vectors: np.ndarray | None = None
    new_anime_bias: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, np.float32))

    def __post_init__(self) -> None:
        if self.new_anime_vectors is None:
            self.new_anime_vectors = np.zeros((0, self.anime_vectors.shape[1]), np.float32)

    @classmethod
    def from_keras(cls, model, scale: RatingScale, l2: float,
                   new_anime: tuple[np.ndarray, np.ndarray] | None = None) -> RatingScorer:
        """The weights of a trained Keras rating model (any kind, told by its layers); the feature model's anime
        vectors and biases are its ID parts plus its tower's output, and `new_anime` (ids and feature rows of anime
        no rating names) are scored by its tower."""
        from pipeline.models.rating.feature_model import FEATURES_LAYER, is_feature_model, tower_outputs  # Keras

        kind: RatingKind = "biased" if any(layer.name == "user_bias" for layer in model.layers) else "cosine"
        new = ()
        weight, bias = (model.get_layer("head") if kind == "biased" else model).get_layer("rating").get_weights()
        users, anime = (model.get_layer(name).get_weights()[0] for name in ("user_embedding", "anime_embedding"))
        if kind == "biased":
            user_bias, anime_bias = (model.get_layer(name).get_weights()[0].reshape(-1)
                                     for name in ("user_bias", "anime_bias"))
            if is_feature_model(model):
                tower_vectors, tower_bias = tower_outputs(model, model.get_layer(FEATURES_LAYER).get_weights()[0])
                anime, anime_bias = anime + tower_vectors, anime_bias + tower_bias
                if new_anime is not None:
                    new = (np.asarray(new_anime[0], np.int64), *tower_outputs(model, new_anime[1]))
        else:
            users, anime = unit_rows(users), unit_rows(anime)
            user_bias, anime_bias = np.zeros(len(users), np.float32), np.zeros(len(anime), np.float32)
        return cls(kind, users, anime, user_bias, anime_bias, float(weight.reshape(-1)[0]), float(bias.reshape(-1)[0]),
                   scale, l2, *new)

    def save(self, folder: Path) -> Path:
        """Weights as arrays (npz) and the rest as JSON: served without TensorFlow or unpickling."""
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / ARRAYS_FILE, **{name: getattr(self, name) for name in (*ARRAYS, *NEW_ARRAYS)})
        (folder / CONFIG_FILE).write_text(json.dumps({
            "kind": self.kind, "weight": self.weight, "bias": self.bias, "l2": self.l2,
            "scale": {"minimum": self.scale.minimum, "maximum": self.scale.maximum}}))
        return folder

    @classmethod
    def load(cls, folder: Path) -> RatingScorer:
        config = json.loads((folder / CONFIG_FILE).read_text())
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
            weights = {name: arrays[name] for name in (*ARRAYS, *NEW_ARRAYS) if name in arrays}
        return cls(kind=config["kind"], weight=float(config["weight"]), bias=float(config["bias"]),
                   scale=RatingScale(**config["scale"]), l2=float(config["l2"]), **weights)

    def trained_output(self, interaction: np.ndarray) -> np.ndarray:
        """What the loss saw in training, from u · a + b_user + b_anime (the biased kind's is unclipped)."""
        logit = self.weight * interaction + self.bias
        return 1.0 / (1.0 + np.exp(-logit)) if self.kind == "cosine" else logit

    def score_users(self, user_vectors: np.ndarray, user_bias: np.ndarray) -> np.ndarray:
        """Predicted ratings of every anime for a block of users (vectors and biases): one matrix product.
        Unclipped, so that anime predicted beyond the top of the scale still rank in order."""
        interaction = user_vectors @ self.anime_vectors.T + user_bias[:, None] + self.anime_bias[None, :]
        return self.scale.unscale(self.trained_output(interaction))

    def new_anime_ratings(self, user_vector: np.ndarray, user_bias: float) -> np.ndarray:
        """One user's predicted ratings (clipped to the scale) of the anime no rating names, from their features."""
        interaction = self.new_anime_vectors @ user_vector + user_bias + self.new_anime_bias
        return self.scale.unscale(np.clip(self.trained_output(interaction), 0.0, 1.0))

    def rating_scores(self, users: np.ndarray) -> np.ndarray:
        """`score_users` for a block of user indices."""
        return self.score_users(self.user_vectors[users], self.user_bias[users])

    def scores(self, users: np.ndarray, history: sp.csr_matrix | None = None) -> np.ndarray:
        """What lists by predicted rating (AnimeModel): w · (u · a + b_user + b_anime) + b of every anime for a
        block of user indices (their history is not needed), in float32 and in place. The predicted ratings are an
        increasing function of it, so it ranks anime as they do, without float64 user × anime blocks."""
        order = self.user_vectors[users] @ self.anime_vectors.T
        order += self.user_bias[users, None]
        order += self.anime_bias[None, :]
        order *= np.float32(self.weight)
        order += np.float32(self.bias)
        return order

    def predict_new(self, users: np.ndarray, new_anime: np.ndarray) -> np.ndarray:
        """Served predicted ratings of user indices for positions among the new anime (few pairs: one gather)."""
        interaction = (np.einsum("ij,ij->i", self.user_vectors[users], self.new_anime_vectors[new_anime])
                       + self.user_bias[users] + self.new_anime_bias[new_anime])
        return self.scale.unscale(np.clip(self.trained_output(interaction), 0.0, 1.0))

    def predict(self, users: np.ndarray, anime: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        """Served predicted ratings (clipped to the scale) of index pairs, `chunk` pairs at a time: the gathered
        vectors are pairs × dim, far larger than the pairs themselves on a large test split."""
        predicted = np.empty(len(users), dtype=np.float64)
        for start in range(0, len(users), chunk):
            some_users, some_anime = users[start:start + chunk], anime[start:start + chunk]
            interaction = (np.einsum("ij,ij->i", self.user_vectors[some_users], self.anime_vectors[some_anime])
                           + self.user_bias[some_users] + self.anime_bias[some_anime])
            predicted[start:start + chunk] = self.scale.unscale(np.clip(self.trained_output(interaction), 0.0, 1.0))
        return predicted

    def fold_in(self, anime: np.ndarray, ratings: np.ndarray, steps: int = 300) -> tuple[np.ndarray, float]:
        """Vector and bias for a user not in the data, from ratings of the anime indices `anime`, with the anime
        side fixed, on the training loss: for `biased`, squared error + L2 is a ridge regression in [vector, bias],
        solved exactly; for `cosine` (cross-entropy on a unit vector), `steps` of Adam."""
        target = self.scale.scale(np.asarray(ratings, dtype=np.float64)).astype(np.float64)
        vectors = self.anime_vectors[anime].astype(np.float64)
        if self.kind == "biased":
            return self._ridge_fold_in(vectors, self.anime_bias[anime].astype(np.float64), target)
        start = ((target - target.mean() + 1e-3)[:, None] * vectors).sum(axis=0)
        vector = _adam_fold_in(start / max(np.linalg.norm(start), 1e-12), vectors,
                               self.anime_bias[anime].astype(np.float64), target, self.weight, self.bias, steps)
        return (vector / np.linalg.norm(vector)).astype(np.float32), 0.0

    def _ridge_fold_in(self, vectors: np.ndarray, anime_bias: np.ndarray,
                       target: np.ndarray) -> tuple[np.ndarray, float]:
        """The minimum of mean((w · (u · a + b_user + b_anime) + b − target)²) / 2 + l2 · (|u|² + b_user²): the
        normal equations of a (dim + 1)-wide least squares, one small solve (no compiled kernel to load)."""
        features = self.weight * np.hstack([vectors, np.ones((len(vectors), 1))])
        residual = target - self.weight * anime_bias - self.bias
        n = len(target)
        gram = features.T @ features / n + 2 * self.l2 * np.eye(features.shape[1])
        params = np.linalg.solve(gram, features.T @ residual / n)
        return params[:-1].astype(np.float32), float(params[-1])

    @cached_property
    def anime_units(self) -> np.ndarray:
        """Unit anime vectors: similar anime are the nearest by embedding cosine."""
        return self.anime_vectors if self.kind == "cosine" else unit_rows(self.anime_vectors)

    @cached_property
    def user_units(self) -> np.ndarray:
        return self.user_vectors if self.kind == "cosine" else unit_rows(self.user_vectors)

    def aligned(self, own_users: IdMap, users: IdMap, own_anime: IdMap, anime: IdMap) -> RatingScorer:
        """The same model over other id maps: ids it never saw get zero vectors and biases."""
        def take(values: np.ndarray, own: IdMap, other: IdMap) -> np.ndarray:
            position = own.indices(other.ids)
            out = np.zeros((len(other), *values.shape[1:]), dtype=values.dtype)
            out[position >= 0] = values[position[position >= 0]]
            return out

        return dataclasses.replace(
            self, user_vectors=take(self.user_vectors, own_users, users),
            user_bias=take(self.user_bias, own_users, users), anime_vectors=take(self.anime_vectors, own_anime, anime),
            anime_bias=take(self.anime_bias, own_anime, anime))


@numba.njit(cache=True, fastmath=True)  # sums reassociated, so the loops vectorize
def _adam_fold_in(vector: np.ndarray, vectors: np.ndarray, anime_bias: np.ndarray, target: np.ndarray, weight: float,
                  bias: float, steps: int) -> np.ndarray:  # pragma: no cover (compiled)
    """`steps` of Adam (rate 0.05) on the seed model's user vector, with the anime side fixed: the cross-entropy of
    sigmoid(w · (cos(u, a) + b_anime) + b); compiled, as one request's few ratings leave per-call overhead as the
    whole cost in numpy."""
    vector = vector.copy()
    dim, n = len(vector), len(target)
    moment, velocity = np.zeros_like(vector), np.zeros_like(vector)
    similarity, d_logit, total = np.empty(n), np.empty(n), np.empty(dim)
    for step in range(1, steps + 1):
        norm = np.sqrt(np.sum(vector ** 2))
        for row in range(n):
            dot = 0.0
            for k in range(dim):
                dot += vectors[row, k] * vector[k]
            similarity[row] = dot / norm
            predicted = 1.0 / (1.0 + np.exp(-(weight * (similarity[row] + anime_bias[row]) + bias)))
            d_logit[row] = (predicted - target[row]) * weight / n
        corrected_moment, corrected_velocity = 1 - 0.9**step, 1 - 0.999**step
        total[:] = 0.0
        for row in range(n):  # row by row, so the inner loop runs along the contiguous vector
            for k in range(dim):
                total[k] += d_logit[row] * (vectors[row, k] - similarity[row] * vector[k] / norm)
        for k in range(dim):
            grad = total[k] / norm
            moment[k] = 0.9 * moment[k] + 0.1 * grad
            velocity[k] = 0.999 * velocity[k] + 0.001 * grad * grad
            vector[k] -= 0.05 * (moment[k] / corrected_moment) / (np.sqrt(velocity[k] / corrected_velocity) + 1e-8)
    return vector
