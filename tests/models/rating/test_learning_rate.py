"""Learning-rate functions from the settings: Keras schedules counted in epochs, the plateau callback, errors."""

import keras
import numpy as np
import pytest

from pipeline.errors import PipelineInputError
from pipeline.models.rating.learning_rate import learning_rate_function
from pipeline.settings import KerasPart

STEPS, EPOCHS = 10, 6  # steps per epoch, epochs of the fit


def _rates(part: KerasPart, learning_rate: float = 0.01) -> np.ndarray:
    schedule = learning_rate_function(part, learning_rate, STEPS, EPOCHS).rate
    return np.array([float(schedule(step)) for step in range(STEPS * EPOCHS + 1)])


def test_constant_and_plateau_keep_the_rate_and_the_plateau_is_keras_callback():
    assert learning_rate_function(KerasPart(name="constant"), 0.01, STEPS, EPOCHS).rate == 0.01
    plateau = learning_rate_function(KerasPart(name="ReduceLROnPlateau", args={"factor": 0.5}), 0.01, STEPS, EPOCHS)
    assert plateau.rate == 0.01
    (callback,) = plateau.callbacks
    assert isinstance(callback, keras.callbacks.ReduceLROnPlateau)
    assert callback.factor == 0.5 and callback.monitor == "val_rmse" and callback.patience == 0


def test_cosine_decay_warms_up_then_decays_to_zero_over_the_fit():
    rates = _rates(KerasPart(name="CosineDecay", args={"warmup_epochs": 1}))
    assert rates[0] == 0.0 and rates[STEPS] == pytest.approx(0.01)  # warm-up: one epoch, up to the learning rate
    assert np.all(np.diff(rates[:STEPS + 1]) > 0) and np.all(np.diff(rates[STEPS:]) < 0)
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)  # the end of the last epoch


def test_epoch_arguments_become_steps():
    rates = _rates(KerasPart(name="ExponentialDecay", args={"decay_rate": 0.5, "staircase": True}))
    assert rates[STEPS - 1] == pytest.approx(0.01) and rates[STEPS] == pytest.approx(0.005)  # per epoch by default
    rates = _rates(KerasPart(name="ExponentialDecay", args={"decay_rate": 0.5, "decay_epochs": 2, "staircase": True}))
    assert rates[2 * STEPS - 1] == pytest.approx(0.01) and rates[2 * STEPS] == pytest.approx(0.005)
    rates = _rates(KerasPart(name="PiecewiseConstantDecay", args={"boundary_epochs": [2, 4], "factors": [1, .3, .1]}))
    assert rates[2 * STEPS] == pytest.approx(0.01) and rates[2 * STEPS + 1] == pytest.approx(0.003)
    assert rates[-1] == pytest.approx(0.001)
    rates = _rates(KerasPart(name="PiecewiseConstantDecay", args={"boundary_fractions": [0.5], "factors": [1, .2]}))
    assert rates[EPOCHS * STEPS // 2] == pytest.approx(0.01) and rates[EPOCHS * STEPS // 2 + 1] == pytest.approx(0.002)


@pytest.mark.parametrize(("part", "message"), [
    (KerasPart(name="Cyclic"), "'Cyclic' is not one of constant, ReduceLROnPlateau, ExponentialDecay"),
    (KerasPart(name="ExponentialDecay"), "decay_rate"),
    (KerasPart(name="constant", args={"rate": 1}), "takes no arguments"),
])
def test_a_bad_learning_rate_function_is_one_line_naming_it(part, message):
    with pytest.raises(PipelineInputError, match=message):
        learning_rate_function(part, 0.01, STEPS, EPOCHS)
