"""The registered model: an MLflow pyfunc that bundles the ranking model, the Keras rating model, id maps,
anime metadata and known ratings, so `mlflow models serve -m models:/anime-recommender@champion` answers
top-N requests.

Request rows: `user_id` (a known user), or `ratings` (a JSON list of {"anime_id", "rating"} for someone
not in the data, served without retraining) with `user_id` -1 when the batch also has known users;
param `n` (default 10). With `anime_id` in a row, the answer is that anime's predicted rating (an anime of
anime.csv that no rating names is scored from its features, by the feature model); with param `new`, the new anime
(no ratings in the model's data) best for the user, the reason in `because_you_watched`. Each answer row: rank,
anime, its predicted rating and `because_you_watched` (the one or two anime of the user's history that contributed
most, names joined by "; "). An anime missing from anime.csv has `name` null.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from pipeline.errors import UnknownIdError
from pipeline.matrix.anime_features import AnimeFeatures
from pipeline.matrix.id_map import IdMap
from pipeline.matrix.utility_matrix import (
    ANIME_INDEX_FILE,
    ANIME_METADATA_FILE,
    SPLITS,
    USER_INDEX_FILE,
    RatingScale,
    UtilityMatrix,
)
from pipeline.models.ranking.ease import InteractionWeights, ItemToItemModel
from pipeline.models.ranking.fit import fit_item_weights, modelled_anime
from pipeline.models.rating.scorer import FOLD_IN_L2, RatingScorer
from pipeline.serving.catalog import Catalog
from pipeline.serving.presentation import rating_of, recommend, recommend_from_ratings, recommend_new
from pipeline.serving.recommend import Recommender
from pipeline.settings import RankingConfig
from pipeline.top_n import K

BUNDLE = "bundle"
MODEL_FILE = "model.keras"
KNOWN_FILE = "known.parquet"  # user_index, anime_index, rating (unrated value for watched-but-unrated)
META_FILE = "recommender.json"
RANKING_DIR = "ranking"
RATING_DIR = "rating"  # the rating model as served (RatingScorer); MODEL_FILE: as Keras trained it
NEW_USER = -1  # user_id reported for rows answered from `ratings`

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("long", "user_id", required=False), ColSpec("string", "ratings", required=False),
                   ColSpec("long", "anime_id", required=False)]),
    outputs=Schema([ColSpec("long", "request"), ColSpec("long", "user_id"), ColSpec("long", "rank"),
                    ColSpec("long", "anime_id"), ColSpec("string", "name"), ColSpec("double", "predicted_rating"),
                    ColSpec("string", "because_you_watched")]),
    params=ParamSchema([ParamSpec("n", "long", K), ParamSpec("new", "boolean", False)]),
)


def save_bundle(model, ranking: ItemToItemModel, matrix: UtilityMatrix, unrated_value: int, l2: float,
                out_dir: Path, features: AnimeFeatures | None = None) -> Path:
    """Write what serving needs into `out_dir`: both models, id maps, metadata, known pairs, and the rating model's
    training L2 (fold-in of someone new uses it); with the feature model's `features`, the catalog's anime no
    rating names, scored from their features."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / MODEL_FILE)
    new_anime = None if features is None else features.not_in(matrix.anime_map)
    RatingScorer.from_keras(model, matrix.scale, l2, new_anime).save(out_dir / RATING_DIR)
    ranking.save(out_dir / RANKING_DIR)
    for name in (USER_INDEX_FILE, ANIME_INDEX_FILE, ANIME_METADATA_FILE):
        shutil.copyfile(matrix.path / name, out_dir / name)
    pq.write_table(matrix.interactions(SPLITS, unrated_value), out_dir / KNOWN_FILE)
    (out_dir / META_FILE).write_text(json.dumps({
        "scale": {"minimum": matrix.scale.minimum, "maximum": matrix.scale.maximum},
        "fallback_rating": matrix.train_mean_rating, "unrated_value": unrated_value,
        "data_version": matrix.data_version, "l2": l2}))
    return out_dir


@dataclass(frozen=True)
class BundleParts:
    """What a bundle holds, in today's shape."""

    rating: RatingScorer
    ranking: ItemToItemModel
    fallback_rating: float
    unrated_value: int
    known: pa.Table  # user_index, anime_index, rating: every pair the model's users rated or watched


def migrate_bundle(bundle: Path) -> BundleParts:
    """A bundle as today's code reads it, whatever code saved it: the one place that knows older layouts, so that
    serving has one path. Today's saves the rating model as arrays (`rating/`) beside the ranking model
    (`ranking/`). Older bundles hold the rating model only as Keras saved it: it is loaded here in safe mode (no
    arbitrary code). The oldest have no ranking model: one is fitted here on the bundle's own known pairs, at the
    default λ (the bundle has no validation split to walk λ on)."""
    meta = json.loads((bundle / META_FILE).read_text())
    scale, known = RatingScale(**meta["scale"]), pq.read_table(bundle / KNOWN_FILE)
    if (bundle / RATING_DIR).is_dir():
        rating = RatingScorer.load(bundle / RATING_DIR)
    else:
        import keras

        model = keras.models.load_model(bundle / MODEL_FILE, safe_mode=True, compile=False)
        rating = RatingScorer.from_keras(model, scale, meta.get("l2", FOLD_IN_L2))
    if (bundle / RANKING_DIR).is_dir():
        ranking = ItemToItemModel.load(bundle / RANKING_DIR)
    else:
        config = RankingConfig()
        interaction = InteractionWeights.of_config(config, scale.minimum, scale.maximum, meta["unrated_value"])
        history = interaction.matrix(known, len(rating.user_vectors), len(rating.anime_vectors))
        ranking = fit_item_weights(history, interaction, modelled_anime(history, config.max_anime),
                                   config.relative_l2, config.neighbours)
    return BundleParts(rating, ranking, meta["fallback_rating"], meta["unrated_value"], known)


def load_bundle(bundle: Path) -> Recommender:
    """The Recommender a bundle holds, from arrays and JSON (no TensorFlow for today's bundles)."""
    parts = migrate_bundle(bundle)
    return Recommender(IdMap(pq.read_table(bundle / USER_INDEX_FILE)["user_id"].to_numpy(), "user"),
                       IdMap(pq.read_table(bundle / ANIME_INDEX_FILE)["anime_id"].to_numpy(), "anime"),
                       parts.rating, parts.ranking, Catalog.of(pq.read_table(bundle / ANIME_METADATA_FILE)),
                       parts.fallback_rating, parts.unrated_value, parts.known)


class RequestError(MlflowException):
    """A request the model can't answer, said in one sentence. MLflow's scoring server prefixes the message of an
    error raised by `predict` with the whole request as a pandas table; this one keeps its own sentence."""

    def __init__(self, sentence: str):
        self._sentence = sentence
        super().__init__(sentence, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._sentence

    @message.setter
    def message(self, _prefixed: str) -> None:
        pass


class RecommenderModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        self.recommender = load_bundle(Path(context.artifacts[BUNDLE]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        n, new = int((params or {}).get("n", K)), bool((params or {}).get("new", False))
        if model_input.empty:
            raise RequestError("the request has no rows: send rows with a user_id or ratings")
        answers = []
        for request, row in enumerate(model_input.to_dict("records")):
            try:
                user_id, top = self._answer(row, n, new)
            except (UnknownIdError, ValueError, KeyError, TypeError) as exc:
                raise RequestError(f"request row {request}: {exc}") from exc
            answers.append(pd.DataFrame({"request": request, "user_id": user_id, "rank": np.arange(1, len(top) + 1),
                                         "anime_id": top["anime_id"], "name": top["name"],
                                         "predicted_rating": top["predicted_rating"].astype(float),
                                         "because_you_watched": top["because_you_watched"]}))
        answer = pd.concat(answers, ignore_index=True)
        # An anime missing from anime.csv has no name: null in the JSON answer (NaN is not JSON; strict parsers
        # such as JavaScript's JSON.parse reject the whole answer).
        return answer.assign(name=answer["name"].astype(object).where(answer["name"].notna(), None))


    def _answer(self, row: dict, n: int, new: bool) -> tuple[int, pd.DataFrame]:
        """One request row: its user (NEW_USER when answered from `ratings`) and its rows. With `anime_id`, that
        anime's predicted rating (a new anime's from its features, with the reason); with `new`, the new anime
        (no ratings yet) best for them, the reason in `because_you_watched`; else their top-n."""
        ratings, user_id, ids, scores = row.get("ratings"), None, None, None
        if isinstance(ratings, str) and ratings.strip():
            pairs = json.loads(ratings)
            ids, scores = np.array([p["anime_id"] for p in pairs]), np.array([p["rating"] for p in pairs])
        elif row.get("user_id") is not None and not pd.isna(row.get("user_id")):
            user_id = int(row["user_id"])
        else:
            raise UnknownIdError("each request row needs a user_id or ratings")
        who = NEW_USER if user_id is None else user_id
        if row.get("anime_id") is not None and not pd.isna(row.get("anime_id")):
            return who, rating_of(self.recommender, int(row["anime_id"]), user_id, ids, scores)
        if new:
            return who, recommend_new(self.recommender, n, user_id, ids, scores).rename(
                columns={"why": "because_you_watched"})
        return who, (recommend(self.recommender, user_id, n) if ids is None
                     else recommend_from_ratings(self.recommender, ids, scores, n))


def load_recommender(model_uri: str) -> Recommender:
    """The Recommender inside a registered version (e.g. `models:/anime-recommender@champion`). MLflow's check of the
    version's pip requirements is skipped: it imports each listed package, TensorFlow among them for versions
    registered before serving left it out, and this code reads the bundle's arrays only."""
    return mlflow.pyfunc.load_model(model_uri, suppress_warnings=True).unwrap_python_model().recommender
