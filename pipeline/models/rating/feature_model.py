"""The rating model that knows what an anime is (`architecture="feature_mf"`): biased matrix factorization whose anime
vector and bias are an ID part plus the output of a feature tower over the anime's features (genres, type,
episodes, members, …: pipeline/matrix/anime_features.py).

- An anime no training rating names has no ID part (train_model zeroes its rows before the fit, and no gradient
  ever reaches them): an anime the model never saw is scored from its features alone.
- Training (keras_fit.FactorizationTrainer) leaves the ID part out of a share `id_dropout` of each batch's ratings
  (DropoutNet's idea), so that the tower learns to predict on its own, not only to correct the ID part.
- The tower's kernels start from the settings' initializer, as the user embeddings do; the learning-rate function
  and optimizer are the biased model's.
"""

from __future__ import annotations

import keras
import numpy as np

from pipeline.models.rating.initializers import embedding_initializer
from pipeline.models.rating.keras_fit import FEATURES_LAYER, TOWER_LAYER
from pipeline.settings import TrainingConfig


def build_feature_tower(width: int, config: TrainingConfig) -> keras.Model:
    """Features → (vector, bias) of an anime: one ReLU layer of `tower_units`, then a linear vector and bias, times
    `tower_output_scale`. Adam moves each weight by about the learning rate per step, and every batch updates the
    shared tower while an embedding row moves only when a batch names it: scaled down, the tower moves as slowly
    as the rows that learn with it."""
    features = keras.Input(shape=(width,), name="features")
    hidden = keras.layers.Dense(config.tower_units, activation="relu", name="tower_hidden",
                                kernel_initializer=embedding_initializer(config.initializer, config.seed + 2)
                                )(features)
    vector = keras.layers.Dense(config.embedding_dim, name="tower_vector",
                                kernel_initializer=embedding_initializer(config.initializer, config.seed + 3))(hidden)
    bias = keras.layers.Dense(1, name="tower_bias", kernel_initializer="zeros")(hidden)
    scaled = [keras.layers.Rescaling(config.tower_output_scale, name=f"{name}_scaled")(output)
              for name, output in (("tower_vector", vector), ("tower_bias", bias))]
    return keras.Model(features, scaled, name=TOWER_LAYER)


def tower_outputs(model: keras.Model, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tower's vectors and biases of feature rows (an anime's vector and bias when no rating trained its ID
    part)."""
    if not len(features):
        dim = model.get_layer("anime_embedding").output_dim
        return np.zeros((0, dim), np.float32), np.zeros(0, np.float32)
    vector, bias = model.get_layer(TOWER_LAYER).predict_on_batch(features.astype(np.float32))
    return np.asarray(vector, np.float32), np.asarray(bias, np.float32).reshape(-1)


def zero_untrained_anime(model: keras.Model, train_anime: np.ndarray) -> None:
    """Zero the ID rows of the anime no training rating names (they would hold their initial values only, as no
    gradient reaches them), so that those anime are their features alone."""
    untouched = np.bincount(train_anime, minlength=model.get_layer("anime_embedding").input_dim) == 0
    for name in ("anime_embedding", "anime_bias"):
        table = model.get_layer(name).get_weights()[0]
        table[untouched] = 0.0
        model.get_layer(name).set_weights([table])


def is_feature_model(model: keras.Model) -> bool:
    return any(layer.name == TOWER_LAYER for layer in model.layers)


__all__ = ["FEATURES_LAYER", "TOWER_LAYER", "build_feature_tower", "zero_untrained_anime", "is_feature_model",
           "tower_outputs"]
