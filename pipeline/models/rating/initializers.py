"""Where the rating model's embeddings start: any `keras.initializers` class by name with its arguments, or a warm
start from a short ALS solve (`"als"`).

The warm start runs `sweeps` alternations of ALS (als.py) from a small random start, at the fit's `l2` (and
along its L2 path if validation keeps improving), and hands the best factors to the Keras model as its starting
weights; Keras' fit then goes on from there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import keras
import numpy as np

from pipeline.errors import PipelineInputError
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.models.rating.als import Factors, fit_als
from pipeline.models.rating.keras_fit import SPLIT_COLUMNS
from pipeline.settings import KerasPart, TrainingConfig

ALS_WARM_START = "als"
ALS_WARM_START_SWEEPS = 5
ALS_START = KerasPart(name="RandomNormal", args={"stddev": 0.01})  # the embeddings ALS's first sweep starts from


def embedding_initializer(part: KerasPart, seed: int) -> keras.initializers.Initializer:
    """The Keras initializer the settings name (ALS_START for the ALS warm start), seeded if it takes a seed."""
    if part.name == ALS_WARM_START:
        part = ALS_START
    try:
        kind = keras.initializers.get(part.name)
    except ValueError as exc:
        raise PipelineInputError(f"initializer {part.name!r} is neither '{ALS_WARM_START}' nor a keras.initializers "
                                 "class (e.g. RandomNormal, TruncatedNormal, GlorotUniform)") from exc
    arguments = dict(part.args)
    if "seed" in inspect.signature(type(kind)).parameters:
        arguments.setdefault("seed", seed)
    try:
        return type(kind)(**arguments)
    except TypeError as exc:
        raise PipelineInputError(f"initializer {part}: {exc}") from exc


def solve_with_als(model: keras.Model, matrix: UtilityMatrix, config: TrainingConfig, global_mean: float,
                   on_sweep: Callable[[int, dict[str, float]], None]) -> dict[str, list[float]]:
    """ALS (at most `config.epochs` sweeps along its L2 path) from the biased model's weights; the best factors
    become its embedding and bias weights. The output layer stays as built (weight 1, bias the train mean), the
    model the factors are solved for. Returns the per-sweep history."""
    tables = {name: model.get_layer(name).get_weights()[0] for name in
              ("user_embedding", "user_bias", "anime_embedding", "anime_bias")}
    start = Factors(tables["user_embedding"], tables["user_bias"][:, 0].copy(), tables["anime_embedding"],
                    tables["anime_bias"][:, 0].copy(), global_mean)
    # the split's raw ids too would add 0.7 GB at 46M ratings
    best, history = fit_als(matrix.split("train", SPLIT_COLUMNS), matrix.split("validation", SPLIT_COLUMNS), start,
                            config, on_sweep)
    for name, values in (("user_embedding", best.users), ("anime_embedding", best.anime),
                         ("user_bias", best.user_bias[:, None]), ("anime_bias", best.anime_bias[:, None])):
        model.get_layer(name).set_weights([values.astype(np.float32)])
    return history


def warm_start_from_als(model: keras.Model, matrix: UtilityMatrix, config: TrainingConfig,
                        global_mean: float) -> dict[str, list[float]]:
    """The initializer "als": a short ALS solve (`sweeps`, from `config.initializer.args`) as the biased model's
    starting weights."""
    sweeps = config.initializer.args.get("sweeps", ALS_WARM_START_SWEEPS)
    if set(config.initializer.args) - {"sweeps"} or not isinstance(sweeps, int) or sweeps < 1:
        raise PipelineInputError(f"initializer {config.initializer}: the ALS warm start takes `sweeps`, a whole "
                                 "number ≥ 1")
    return solve_with_als(model, matrix, config.model_copy(update={"epochs": sweeps}), global_mean,
                          lambda sweep, logs: None)
