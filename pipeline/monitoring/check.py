"""The monitoring stage: before a run trains, its data against the data its data set's champion learned from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.matrix.utility_matrix import SPLITS, UtilityMatrix
from pipeline.monitoring.drift import DRIFT_COLUMNS, DriftReport, measure_drift
from pipeline.monitoring.new_ratings import ChampionData, all_ratings, champion_data, new_ratings
from pipeline.monitoring.version_scoring import (
    UnloadableVersionError,
    VersionOnRatings,
    load_version,
    score_version,
)
from pipeline.registry.scores import VersionScores
from pipeline.settings import Settings


@dataclass(frozen=True)
class NewDataReport:
    """What changed since the champion's data and how the champion does on it; `skipped` says why nothing was
    measured (no champion of the data set yet, no new data, its data no longer on disk)."""

    champion_version: str | None = None
    champion_data_version: str | None = None
    new_ratings: int = 0
    # RMSE over every new rating; NDCG@10 of its lists for the returning users with a relevant new rating, made
    # from the histories it learned from. None when no rating is new, or it could not be loaded
    champion_on_new: VersionOnRatings | None = None
    champion_test_scores: VersionScores | None = None  # the champion's figures on its own test split, as registered
    drift: DriftReport | None = None
    new_anime: int = 0  # anime rated in the new data that the champion's data has no rating of
    champion_on_new_anime: VersionOnRatings | None = None  # the champion on those anime's ratings (None: none)
    skipped: str | None = None
    not_scored: str | None = None  # why the champion was not scored on the new ratings (its bundle did not load)

    def description(self) -> str:
        """A sentence for the new version's registry description when drift passed its thresholds, else ""."""
        if self.drift is None or not self.drift.drifted:
            return ""
        return f"Its data drifted from champion v{self.champion_version}'s: {self.drift.passed()}."


def check_new_data(matrix: UtilityMatrix, settings: Settings) -> NewDataReport:
    """The champion of `settings`' data set on the ratings of `matrix` it never saw, and the drift of `matrix` from
    its data."""
    found = champion_data(settings.registered_model_name, settings.dataset_name, settings.matrix_root)
    if not isinstance(found, ChampionData):
        return NewDataReport(skipped=found)
    if found.data_version == matrix.data_version:
        return NewDataReport(found.version, found.data_version,
                             skipped=f"no new data since champion v{found.version}'s")
    # Each side read once, for both the join and the drift report; only the new ratings are kept past them.
    old = all_ratings(found.matrix, DRIFT_COLUMNS)
    current = all_ratings(matrix, [*DRIFT_COLUMNS, "scaled_rating"])
    new = new_ratings(old, current)
    drift = measure_drift(old, current, found.matrix.anime_metadata(), settings.drift)
    del old, current
    fresh_anime = pa.array(np.setdiff1d(matrix.anime_ids(), found.matrix.anime_ids()))
    of_fresh = new.filter(pc.is_in(new["anime_id"], fresh_anime))
    on_new, on_fresh, not_scored = None, None, None
    if new.num_rows:
        try:
            champion = load_version(settings.registered_model_name, found.version)
        except UnloadableVersionError as exc:
            not_scored = str(exc)
        else:
            on_new, on_fresh = (score_version(champion, found.version, ratings, found.matrix, SPLITS,
                                              settings.relevance_threshold) if ratings.num_rows else None
                                for ratings in (new, of_fresh))
    return NewDataReport(found.version, found.data_version, new.num_rows, on_new, found.test_scores, drift,
                         len(fresh_anime), on_fresh, not_scored=not_scored)
