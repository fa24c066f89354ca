"""Keras' fit on several devices: the CPU split into two logical devices, trained in step by MirroredStrategy,
against the same fit on one device. TensorFlow fixes its devices when it starts, so this runs in a child process."""

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

CHILD = """
import json, sys
from pathlib import Path
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from pipeline.data.ingest import ingest
from pipeline.matrix.utility_matrix import build_utility_matrix
from pipeline.models.rating.train import predict_scaled, train_model
from pipeline.settings import Settings, TrainingConfig
from pipeline.validation.validate import validate

root = Path(sys.argv[2])
settings = Settings(data_root=root / "data", mlruns_dir=root / "mlruns", dataset_name="tests")
matrix = build_utility_matrix(validate(ingest(Path(sys.argv[1])), settings), settings)
test = matrix.split("test")
result = {}
for devices in ("all", "one"):
    # no ID dropout: its random mask is drawn per device; a rate at which the tower's fit is not chaotic (at 0.02,
    # float rounding of the summed gradients alone moves the result by 2 %)
    trained = train_model(matrix, TrainingConfig(embedding_dim=32, batch_size=2048, epochs=3, learning_rate=0.005,
                                                 id_dropout=0.0, devices=devices))
    predicted = matrix.scale.unscale(predict_scaled(trained.model, test["user_index"].to_numpy(),
                                                    test["anime_index"].to_numpy()))
    error = predicted - test["rating"].to_numpy()
    result[devices] = {"device": trained.device, "rmse": float((error ** 2).mean() ** 0.5),
                       "epochs": trained.epochs_run}

print(json.dumps(result))
"""


@pytest.mark.slow
def test_two_devices_fit_as_one(small_data, tmp_path):
    child = subprocess.run([sys.executable, "-c", CHILD, str(small_data), str(tmp_path)], capture_output=True,
                           text=True, cwd=PROJECT_ROOT, timeout=280)
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["all"]["device"] == "2 × CPU (MirroredStrategy)"
    assert result["one"]["device"] == "CPU"
    assert result["all"]["epochs"] == result["one"]["epochs"] == 3
    assert result["all"]["rmse"] == pytest.approx(result["one"]["rmse"], rel=0.005)
