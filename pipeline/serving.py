"""The registered model: an MLflow pyfunc that bundles the ranking model, the Keras rating model, id maps,
anime metadata and known ratings, so `mlflow models serve -m models:/anime-recommender@champion` answers
top-N requests.

Request rows: `user_id` (a known user), or `ratings` (a JSON list of {"anime_id", "rating"} for someone
not in the data, served without retraining) with `user_id` -1 when the batch also has known users;
param `n` (default 10). Each answer row: rank, anime, its predicted rating and `because_you_watched`
(the one or two anime of the user's history that contributed most, names joined by "; "). An anime missing
from anime.csv has `name` null.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from pipeline.recommend import Recommender, UnknownIdError

BUNDLE = "bundle"
NEW_USER = -1  # user_id reported for rows answered from `ratings`

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("long", "user_id", required=False), ColSpec("string", "ratings", required=False)]),
    outputs=Schema([ColSpec("long", "request"), ColSpec("long", "user_id"), ColSpec("long", "rank"),
                    ColSpec("long", "anime_id"), ColSpec("string", "name"), ColSpec("double", "predicted_rating"),
                    ColSpec("string", "because_you_watched")]),
    params=ParamSchema([ParamSpec("n", "long", 10)]),
)


class RecommenderModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.recommender = Recommender.load_bundle(Path(context.artifacts[BUNDLE]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        n = int((params or {}).get("n", 10))
        answers = []
        for request, row in enumerate(model_input.to_dict("records")):
            try:
                ratings = row.get("ratings")
                if isinstance(ratings, str) and ratings.strip():
                    pairs = json.loads(ratings)
                    top = self.recommender.recommend_from_ratings(
                        np.array([p["anime_id"] for p in pairs]), np.array([p["rating"] for p in pairs]), n)
                    user_id = NEW_USER
                elif row.get("user_id") is not None and not pd.isna(row.get("user_id")):
                    user_id = int(row["user_id"])
                    top = self.recommender.recommend(user_id, n)
                else:
                    raise UnknownIdError("each request row needs a user_id or ratings")
            except (UnknownIdError, ValueError, KeyError, TypeError) as exc:
                raise MlflowException(f"request row {request}: {exc}", error_code=INVALID_PARAMETER_VALUE) from exc
            answers.append(pd.DataFrame({"request": request, "user_id": user_id, "rank": np.arange(1, len(top) + 1),
                                         "anime_id": top["anime_id"], "name": top["name"],
                                         "predicted_rating": top["predicted_rating"].astype(float),
                                         "because_you_watched": top.get("because_you_watched", "")}))
        answer = pd.concat(answers, ignore_index=True)
        # An anime missing from anime.csv has no name: null in the JSON answer (NaN is not JSON; strict parsers
        # such as JavaScript's JSON.parse reject the whole answer).
        return answer.assign(name=answer["name"].astype(object).where(answer["name"].notna(), None))


def load_recommender(model_uri: str) -> Recommender:
    """The Recommender inside a registered version (e.g. `models:/anime-recommender@champion`)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().recommender
