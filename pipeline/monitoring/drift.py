"""Drift of a run's data from the data its data set's champion learned from, measured by Evidently.

Four distributions go to one Evidently report (each column sampled to `DriftConfig.sample_rows` per side; the
shorter ones padded with missing values, which Evidently's drift tests leave out): rating values and how the
ratings of the reference's most-rated anime spread over them (Jensen-Shannon distance), ratings per user and per
anime (Wasserstein distance normed by the reference's spread). The shares of users and anime the champion never saw are
counted here. Each measure is held to its threshold in `Settings.drift`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.settings import DriftConfig

DRIFT_COLUMNS = ["user_id", "anime_id", "rating"]
JENSEN_SHANNON = "Jensen-Shannon distance"
WASSERSTEIN = "Wasserstein distance, normed"


@dataclass(frozen=True)
class DriftMeasure:
    """One row of the drift table: what is measured, how, its value and the threshold above which it counts."""

    key: str  # the MLflow metric is drift_<key>
    name: str
    statistic: str
    value: float
    threshold: float

    @property
    def drifted(self) -> bool:
        return self.value > self.threshold


@dataclass(frozen=True)
class DriftReport:
    measures: tuple[DriftMeasure, ...]
    evidently: Any  # the Evidently snapshot: saved as HTML and JSON to the run (tracking)

    @property
    def drifted(self) -> tuple[DriftMeasure, ...]:
        return tuple(measure for measure in self.measures if measure.drifted)

    def passed(self) -> str:
        """The measures past their thresholds, in one line ("" when none)."""
        return "; ".join(f"{m.name} {m.value:.3f} > {m.threshold:g}" for m in self.drifted)


def import_evidently() -> Any:
    """Evidently, imported on first use (it takes seconds). Its legacy data-integrity module imports
    `pandas.core.dtypes.common.infer_dtype_from_object`, which pandas 3 removed: defined first when missing."""
    from pandas.core.dtypes import common

    if not hasattr(common, "infer_dtype_from_object"):
        common.infer_dtype_from_object = lambda dtype: np.dtype(dtype).type
    import evidently
    import evidently.metrics

    return evidently


def _sample(n: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of `rows` of `n` values drawn without replacement (all of them when there are fewer)."""
    return np.arange(n) if n <= rows else rng.choice(n, rows, replace=False)


def _padded(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    length = max(len(values) for values in columns.values())
    return pd.DataFrame({name: pd.Series(values).reindex(range(length)) for name, values in columns.items()})


def _side(ratings: pa.Table, top_anime: dict[int, str], config: DriftConfig) -> pd.DataFrame:
    """One side's columns for Evidently: sampled rows, and sampled per-user and per-anime counts."""
    rng = np.random.default_rng(config.seed)
    rows = _sample(ratings.num_rows, config.sample_rows, rng)
    anime = ratings["anime_id"].take(rows).to_numpy()
    per_user, per_anime = _counts(ratings["user_id"]), _counts(ratings["anime_id"])
    return _padded({
        "rating": ratings["rating"].take(rows).to_numpy().astype(str),
        "most_rated_anime": np.array([top_anime[a] for a in anime.tolist() if a in top_anime], dtype=object),
        "ratings_per_user": per_user[_sample(len(per_user), config.sample_rows, rng)].astype(float),
        "ratings_per_anime": per_anime[_sample(len(per_anime), config.sample_rows, rng)].astype(float)})


def _counts(ids: pa.ChunkedArray) -> np.ndarray:
    return pc.value_counts(ids).field("counts").to_numpy()


def _most_rated(ratings: pa.Table, metadata: pa.Table, top: int) -> dict[int, str]:
    """The reference's `top` most-rated anime, labelled by name where anime.csv has one."""
    counts = pc.value_counts(ratings["anime_id"])
    order = np.argsort(-counts.field("counts").to_numpy(), kind="stable")[:top]
    ids = counts.field("values").to_numpy()[order]
    names = dict(zip(metadata["anime_id"].to_pylist(), metadata["name"].to_pylist(), strict=True))
    return {int(i): f"{names.get(int(i)) or 'anime'} ({int(i)})" for i in ids}


def _new_share(current: pa.ChunkedArray, reference: pa.ChunkedArray) -> float:
    distinct = pc.unique(current)
    return float(1 - pc.sum(pc.is_in(distinct, pc.unique(reference))).as_py() / max(len(distinct), 1))


def measure_drift(old: pa.Table, new: pa.Table, anime_metadata: pa.Table, config: DriftConfig) -> DriftReport:
    """The Evidently report of the ratings `new` against `old` (`all_ratings` tables with DRIFT_COLUMNS; the anime
    named by `old`'s anime metadata), and the drift table it and the shares make."""
    evidently = import_evidently()
    ValueDrift = evidently.metrics.ValueDrift  # noqa: N806 (a class)
    top_anime = _most_rated(old, anime_metadata, config.top_anime)
    definition = evidently.DataDefinition(categorical_columns=["rating", "most_rated_anime"],
                                          numerical_columns=["ratings_per_user", "ratings_per_anime"])
    tests = [("rating distribution", "rating", "jensenshannon", JENSEN_SHANNON, config.rating_distance),
             (f"popularity of the {len(top_anime)} most-rated anime", "most_rated_anime", "jensenshannon",
              JENSEN_SHANNON, config.top_anime_distance),
             ("ratings per user", "ratings_per_user", "wasserstein", WASSERSTEIN, config.ratings_per_user_distance),
             ("ratings per anime", "ratings_per_anime", "wasserstein", WASSERSTEIN, config.ratings_per_anime_distance)]
    current_side = _side(new, top_anime, config)
    none_rated = []  # new data rating none of those anime: as far from the reference as it gets (Evidently refuses)
    if current_side["most_rated_anime"].isna().all():
        name, column, _, _, threshold = tests.pop(1)
        none_rated = [DriftMeasure(column, name, "none of them rated in the new data", 1.0, threshold)]
    snapshot = evidently.Report([ValueDrift(column=column, method=method, threshold=threshold)
                                 for _, column, method, _, threshold in tests]).run(
        current_data=evidently.Dataset.from_pandas(current_side, data_definition=definition),
        reference_data=evidently.Dataset.from_pandas(_side(old, top_anime, config), data_definition=definition))
    values = [float(result["value"]) for result in snapshot.dict()["metrics"]]
    measures = [DriftMeasure(column, name, statistic, value, threshold)
                for (name, column, _, statistic, threshold), value in zip(tests, values, strict=True)] + none_rated
    measures += [DriftMeasure("new_user_share", "share of new users", "users it never saw / all users",
                              _new_share(new["user_id"], old["user_id"]), config.new_user_share),
                 DriftMeasure("new_anime_share", "share of new anime", "anime it never saw / all anime",
                              _new_share(new["anime_id"], old["anime_id"]), config.new_anime_share)]
    return DriftReport(tuple(measures), snapshot)
