"""The data a data set's champion learned from, and the ratings of a new matrix it never saw."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.matrix.utility_matrix import METADATA_FILE, SPLITS, UtilityMatrix
from pipeline.registry.queries import current_champion, tagged_scores
from pipeline.registry.scores import VersionScores

PAIR = ["user_id", "anime_id"]


@dataclass(frozen=True)
class ChampionData:
    """The champion of a data set and the matrix it was trained on (its version's `data_version`)."""

    version: str
    data_version: str
    matrix: UtilityMatrix
    test_scores: VersionScores  # as registered: on its own test split


def champion_data(name: str, dataset: str, matrix_root: Path) -> ChampionData | str:
    """The data set's champion and its matrix folder, or why there is nothing to compare with."""
    champion = current_champion(name)
    if champion is None or champion.tags.get("dataset") != dataset:
        return f"no champion of data set {dataset} yet"
    data_version = champion.tags.get("data_version", "")
    # Every folder of one data version holds the same ratings (folders differ in split or scale settings only).
    folders = sorted(path for path in matrix_root.glob(f"{data_version}-*") if (path / METADATA_FILE).exists())
    if not data_version or not folders:
        return (f"champion v{champion.version}'s data (data version {data_version[:8] or 'unknown'}) is no longer in "
                f"{matrix_root}")
    return ChampionData(str(champion.version), data_version, UtilityMatrix.open(folders[0]),
                        tagged_scores(champion))


def all_ratings(matrix: UtilityMatrix, columns: list[str]) -> pa.Table:
    """The matrix's known ratings, every split."""
    return pa.concat_tables(matrix.split(name, columns) for name in SPLITS)


def new_ratings(reference: pa.Table, current: pa.Table) -> pa.Table:
    """The ratings of `current` whose (user, anime) pair `reference` has no rating for: what a model trained on
    `reference` never saw (a pair re-rated since is not new). Both are `all_ratings` tables with the pair's columns."""
    return current.join(reference.select(PAIR), keys=PAIR, join_type="left anti")
