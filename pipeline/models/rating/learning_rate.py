"""The learning-rate function of a Keras fit, from the settings: constant, a `keras.optimizers.schedules` schedule
(evaluated by the optimizer at every step), or Keras' `ReduceLROnPlateau` callback on validation RMSE.

Keras counts schedules in optimizer steps; people count in epochs, so arguments ending in `_epochs`
(`decay_epochs`, `warmup_epochs`, `first_decay_epochs`, `boundary_epochs`) are turned into steps of this data
set's epoch, and `boundary_fractions` are fractions of the fit's epochs. `learning_rate` is the rate the schedule
starts from (after a warm-up: the rate it warms up to); with no span given, CosineDecay and PolynomialDecay decay
over the fit's epochs, ExponentialDecay and InverseTimeDecay apply their `decay_rate` per epoch.
PiecewiseConstantDecay takes `factors` of `learning_rate` (one more than boundaries) instead of absolute `values`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import keras

from pipeline.errors import PipelineInputError
from pipeline.settings import KerasPart

CONSTANT, ON_PLATEAU = "constant", "ReduceLROnPlateau"
SCHEDULES = ("ExponentialDecay", "CosineDecay", "CosineDecayRestarts", "PiecewiseConstantDecay", "PolynomialDecay",
             "InverseTimeDecay")
EPOCH_ARGUMENTS = {"decay_epochs": "decay_steps", "warmup_epochs": "warmup_steps",
                   "first_decay_epochs": "first_decay_steps"}
# The span a schedule decays over unless told: the whole fit, or (rates per span) one epoch
WHOLE_FIT = {"CosineDecay": "decay_steps", "PolynomialDecay": "decay_steps", "CosineDecayRestarts": "first_decay_steps"}
PER_EPOCH = {"ExponentialDecay": "decay_steps", "InverseTimeDecay": "decay_steps"}
# ReduceLROnPlateau as the fit uses it unless told otherwise: a third of the rate as soon as an epoch does not
# improve validation RMSE by min_delta (on the [0, 1] scale).
PLATEAU_DEFAULTS = {"monitor": "val_rmse", "mode": "min", "factor": 0.3, "patience": 0, "min_delta": 1e-4}


@dataclass(frozen=True)
class LearningRateFunction:
    rate: Any  # what the optimizer is built with: a number or a LearningRateSchedule
    callbacks: list[keras.callbacks.Callback] = field(default_factory=list)


def learning_rate_function(part: KerasPart, learning_rate: float, steps_per_epoch: int,
                           epochs: int) -> LearningRateFunction:
    """The learning-rate function the settings name, for a fit of at most `epochs` of `steps_per_epoch`."""
    if part.name == CONSTANT:
        _no_arguments(part)
        return LearningRateFunction(learning_rate)
    if part.name == ON_PLATEAU:
        return LearningRateFunction(learning_rate, [keras.callbacks.ReduceLROnPlateau(
            **(PLATEAU_DEFAULTS | {"verbose": 0} | part.args))])
    if part.name not in SCHEDULES:
        raise PipelineInputError(f"learning_rate_schedule {part.name!r} is not one of "
                                 f"{', '.join((CONSTANT, ON_PLATEAU, *SCHEDULES))}")
    arguments = _in_steps(part.args, steps_per_epoch, epochs)
    if part.name == "PiecewiseConstantDecay":
        factors = arguments.pop("factors", None)
        if factors is not None:
            arguments["values"] = [learning_rate * factor for factor in factors]
    else:
        arguments = _starting_rate(part.name, arguments, learning_rate)
        if part.name in WHOLE_FIT:
            whole_fit = epochs * steps_per_epoch - arguments.get("warmup_steps", 0)
            arguments.setdefault(WHOLE_FIT[part.name], max(1, whole_fit))
        elif part.name in PER_EPOCH:
            arguments.setdefault(PER_EPOCH[part.name], steps_per_epoch)
    try:
        return LearningRateFunction(getattr(keras.optimizers.schedules, part.name)(**arguments))
    except (TypeError, ValueError) as exc:
        raise PipelineInputError(f"learning_rate_schedule {part}: {exc}") from exc


def _in_steps(arguments: dict[str, Any], steps_per_epoch: int, epochs: int) -> dict[str, Any]:
    converted = {}
    for name, value in arguments.items():
        if name in EPOCH_ARGUMENTS:
            converted[EPOCH_ARGUMENTS[name]] = max(1, math.ceil(value * steps_per_epoch))
        elif name == "boundary_epochs":
            converted["boundaries"] = [math.ceil(epoch * steps_per_epoch) for epoch in value]
        elif name == "boundary_fractions":
            converted["boundaries"] = [math.ceil(share * epochs * steps_per_epoch) for share in value]
        else:
            converted[name] = value
    return converted


def _starting_rate(name: str, arguments: dict[str, Any], learning_rate: float) -> dict[str, Any]:
    """A warm-up climbs from 0 to `learning_rate` (Keras: from initial_learning_rate to warmup_target)."""
    if name == "CosineDecay" and arguments.get("warmup_steps"):
        return {"initial_learning_rate": 0.0, "warmup_target": learning_rate} | arguments
    return {"initial_learning_rate": learning_rate} | arguments


def _no_arguments(part: KerasPart) -> None:
    if part.args:
        raise PipelineInputError(f"learning_rate_schedule {part.name!r} takes no arguments (got {part})")
