"""Bundles registered by earlier code keep loading and answering the same with the current code."""

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from pipeline.serving import RecommenderModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_a_bundle_saved_before_the_stage_packages_serves_the_same_answers():
    model = mlflow.pyfunc.load_model(str(FIXTURES / "bundle-v1"))
    request = pd.DataFrame(json.loads((FIXTURES / "bundle-v1-request.json").read_text()))
    expected = pd.DataFrame(json.loads((FIXTURES / "bundle-v1-expected.json").read_text()))

    answer = model.predict(request, params={"n": 5})

    assert isinstance(model.unwrap_python_model(), RecommenderModel)
    assert set(answer["request"]) == set(range(len(request)))
    assert len(answer) == len(expected)
    for column in ("request", "user_id", "rank", "anime_id", "name", "because_you_watched"):
        assert answer[column].tolist() == expected[column].tolist(), column
    assert np.allclose(answer["predicted_rating"], expected["predicted_rating"], atol=1e-3)
