"""Build the utility matrix: accepted ratings in long (COO) Parquet form, never dense.

Output folder `data/matrix/<data_version>-<settings>/` (written atomically; `<settings>` hashes the split and
rating-scale settings, so a run with other settings never overwrites it) holds contiguous id maps, the
train/validation/test split with ratings min–max scaled to [0, 1], the interactions without a rating (with
their watching status), the quarantine tables, the anime metadata and `metadata.json`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.hashing import row_hash, unit_interval
from pipeline.settings import Settings
from pipeline.storage import atomic_dir
from pipeline.validate import ValidatedData

SPLITS = ("train", "validation", "test")
# The files of a matrix folder (read through UtilityMatrix, not by name elsewhere).
USER_INDEX_FILE = "user_index.parquet"
ANIME_INDEX_FILE = "anime_index.parquet"
ANIME_METADATA_FILE = "anime.parquet"  # the accepted rows of anime.csv
UNRATED_FILE = "unrated.parquet"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class RatingScale:
    """Min–max scaling between the declared rating scale and the model's [0, 1] target."""

    minimum: int
    maximum: int

    def scale(self, ratings: np.ndarray) -> np.ndarray:
        return ((np.asarray(ratings, dtype=np.float64) - self.minimum) / (self.maximum - self.minimum)).astype(
            np.float32)

    def unscale(self, scaled: np.ndarray) -> np.ndarray:
        return np.asarray(scaled, dtype=np.float64) * (self.maximum - self.minimum) + self.minimum


@dataclass(frozen=True)
class UtilityMatrix:
    """Handle on a built matrix folder; tables are read on demand."""

    path: Path
    data_version: str
    split_id: str  # changes when data, split or scale settings change: scores are comparable only within one
    n_users: int
    n_anime: int
    scale: RatingScale
    split_sizes: dict[str, int]
    train_mean_rating: float
    row_counts: dict[str, object]  # validation counts of the data it was built from (per file: nested)

    def split(self, name: str) -> pa.Table:
        return pq.read_table(self.path / f"{name}.parquet")

    @property
    def user_index_path(self) -> Path:
        return self.path / USER_INDEX_FILE

    @property
    def anime_index_path(self) -> Path:
        return self.path / ANIME_INDEX_FILE

    @property
    def metadata_path(self) -> Path:
        return self.path / METADATA_FILE

    def user_ids(self) -> np.ndarray:
        """Matrix row → raw user id."""
        return pq.read_table(self.user_index_path)["user_id"].to_numpy()

    def anime_ids(self) -> np.ndarray:
        """Matrix column → raw anime id."""
        return pq.read_table(self.anime_index_path)["anime_id"].to_numpy()

    def anime_metadata(self) -> pa.Table:
        return pq.read_table(self.path / ANIME_METADATA_FILE)

    def unrated(self) -> pa.Table:
        """Watched-but-unrated pairs (and Kaggle 2020 list entries) by raw id, with their watching status."""
        return pq.read_table(self.path / UNRATED_FILE)

    def interactions(self, splits: tuple[str, ...], unrated_value: int) -> pa.Table:
        """Every (user_index, anime_index, rating, watching_status) a user rated in `splits` or has without a
        rating (rating = `unrated_value`, with its watching status; 0 = not given). Pairs of users or anime
        with no accepted rating are left out, as the models have no row for them."""
        parts = [self.split(name).select(["user_index", "anime_index", "rating"]).append_column(
            "watching_status", pa.array(np.zeros(self.split_sizes[name], np.int8))) for name in splits]
        unrated = self.unrated()
        users = lookup_indices(unrated["user_id"].to_numpy(), pq.read_table(self.user_index_path), "user_id",
                               "user_index")
        anime = lookup_indices(unrated["anime_id"].to_numpy(), pq.read_table(self.anime_index_path), "anime_id",
                               "anime_index")
        mapped = (users >= 0) & (anime >= 0)
        parts.append(pa.table({"user_index": users[mapped].astype(np.int32),
                               "anime_index": anime[mapped].astype(np.int32),
                               "rating": np.full(int(mapped.sum()), unrated_value, dtype=np.int16),
                               "watching_status": unrated["watching_status"].to_numpy()[mapped]}))
        return pa.concat_tables(parts)

    @classmethod
    def open(cls, path: Path) -> UtilityMatrix:
        meta = json.loads((path / METADATA_FILE).read_text())
        return cls(path=path, data_version=meta["data_version"], split_id=meta["split_id"],
                   n_users=meta["n_users"], n_anime=meta["n_anime"], scale=RatingScale(**meta["scale"]),
                   split_sizes=meta["split_sizes"], train_mean_rating=meta["train_mean_rating"],
                   row_counts=meta["counts"])


def split_assignment(user_ids: np.ndarray, anime_ids: np.ndarray, test_fraction: float,
                     validation_fraction: float, seed: int) -> np.ndarray:
    """Labels 0=train, 1=validation, 2=test from a seeded hash of each (user, anime) pair.

    A pair's label depends only on the pair and the seed: not on row order, and not on other rows,
    so a rating keeps its split when new data arrive (a test pair never leaks into training later).
    """
    draw = unit_interval(row_hash(user_ids, anime_ids, seed=seed))
    labels = np.zeros(len(draw), dtype=np.int8)
    labels[draw < test_fraction + (1 - test_fraction) * validation_fraction] = 1
    labels[draw < test_fraction] = 2
    return labels


def _contiguous_index(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids and each row's position among them: by a lookup table when ids are small
    (linear time, like MyAnimeList's), by sorting otherwise."""
    if ids.size and 0 <= ids.min() and ids.max() < 4 * ids.size + 1_000_000:
        present = np.zeros(int(ids.max()) + 1, dtype=bool)
        present[ids] = True
        position = np.cumsum(present, dtype=np.int64) - 1
        return np.flatnonzero(present), position[ids].astype(np.int32)
    distinct, index = np.unique(ids, return_inverse=True)
    return distinct, index.astype(np.int32)


def build_utility_matrix(validated: ValidatedData, settings: Settings,
                         source_sha256: dict[str, str] | None = None) -> UtilityMatrix:
    """Write the versioned matrix folder (atomically) and return a handle on it."""
    ratings = validated.ratings
    if ratings.num_rows == 0:
        raise ValueError("no accepted ratings: nothing to build a utility matrix from")
    data_version = validated.data_version
    split_params = {"test_fraction": settings.test_fraction, "validation_fraction": settings.validation_fraction,
                    "seed": settings.split_seed}
    scale = RatingScale(settings.rating_min, settings.rating_max)
    # Everything that changes the folder's contents besides the data: the split and how ratings are read.
    matrix_settings = [split_params, asdict(scale), settings.unrated_value]
    split_id = hashlib.sha256(json.dumps([data_version, *matrix_settings]).encode()).hexdigest()[:16]

    user_ids, user_index = _contiguous_index(ratings["user_id"].to_numpy())
    anime_ids, anime_index = _contiguous_index(ratings["anime_id"].to_numpy())
    rating_values = ratings["rating"].to_numpy()
    coo = pa.table({
        "user_index": user_index,
        "anime_index": anime_index,
        "user_id": ratings["user_id"],
        "anime_id": ratings["anime_id"],
        "rating": pa.array(rating_values.astype(np.int16)),
        "scaled_rating": scale.scale(rating_values),
    })
    labels = split_assignment(ratings["user_id"].to_numpy(), ratings["anime_id"].to_numpy(), settings.test_fraction,
                              settings.validation_fraction, settings.split_seed)

    target = settings.matrix_root / f"{data_version}-{split_id[:8]}"
    with atomic_dir(target) as tmp:
        split_sizes = {}
        for code, name in enumerate(SPLITS):
            part = coo.filter(pa.array(labels == code))
            split_sizes[name] = part.num_rows
            pq.write_table(part, tmp / f"{name}.parquet")
        train_mean_rating = float(rating_values[labels == 0].mean())
        pq.write_table(pa.table({"user_id": user_ids, "user_index": np.arange(len(user_ids), dtype=np.int32)}),
                       tmp / USER_INDEX_FILE)
        pq.write_table(pa.table({"anime_id": anime_ids, "anime_index": np.arange(len(anime_ids), dtype=np.int32)}),
                       tmp / ANIME_INDEX_FILE)
        pq.write_table(validated.unrated, tmp / UNRATED_FILE)
        pq.write_table(validated.quarantine, tmp / "quarantine.parquet")
        pq.write_table(validated.anime_quarantine, tmp / "anime_quarantine.parquet")
        pq.write_table(validated.anime, tmp / ANIME_METADATA_FILE)
        metadata = {
            "data_version": data_version, "split_id": split_id, "split": split_params, "split_sizes": split_sizes,
            "n_users": len(user_ids), "n_anime": len(anime_ids), "scale": asdict(scale),
            "train_mean_rating": train_mean_rating,
            "counts": asdict(validated.counts), "source_sha256": source_sha256 or {},
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return UtilityMatrix.open(target)


def lookup_indices(ids: np.ndarray, id_map: pa.Table, id_column: str, index_column: str) -> np.ndarray:
    """Map raw ids to a model's contiguous indices; ids the map does not know become -1."""
    known_ids = id_map[id_column].to_numpy()
    known_index = id_map[index_column].to_numpy()
    order = np.argsort(known_ids)
    sorted_ids = known_ids[order]
    position = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
    found = sorted_ids[position] == ids if len(sorted_ids) else np.zeros(len(ids), dtype=bool)
    return np.where(found, known_index[order][position], -1).astype(np.int64)
