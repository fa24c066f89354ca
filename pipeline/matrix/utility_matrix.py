"""Build the utility matrix: accepted ratings in long (COO) Parquet form, never dense.

Output folder `data/matrix/<data_version>-<settings>/` (written atomically; `<settings>` hashes the split and
rating-scale settings, so a run with other settings never overwrites it) holds contiguous id maps, the
train/validation/test split with ratings min–max scaled to [0, 1], the interactions without a rating (with
their watching status), the quarantine tables, the anime metadata and `metadata.json`.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.hashing import Column, aligned_chunks, fractions_above
from pipeline.matrix.id_map import IdMap
from pipeline.settings import Settings
from pipeline.storage import atomic_dir
from pipeline.validation.results import ValidatedData

SPLITS = ("train", "validation", "test")
# The files of a matrix folder (read through UtilityMatrix, not by name elsewhere).
USER_INDEX_FILE = "user_index.parquet"
ANIME_INDEX_FILE = "anime_index.parquet"
ANIME_METADATA_FILE = "anime.parquet"  # the accepted rows of anime.csv
UNRATED_FILE = "unrated.parquet"
METADATA_FILE = "metadata.json"
DICTIONARY_MAX_VALUES = 1 << 16  # split columns with at most this many distinct values are dictionary-encoded


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

    def check(self, anime_ids: np.ndarray, ratings: np.ndarray, unrated_value: int) -> None:
        """Someone's ratings of `anime_ids`: a ValueError names the first one off the scale (`unrated_value` marks
        watched, not rated)."""
        ratings = np.asarray(ratings)
        off = np.flatnonzero((ratings != unrated_value) & ((ratings < self.minimum) | (ratings > self.maximum)))
        if len(off):
            raise ValueError(f"the rating {ratings[off[0]]:g} of anime {anime_ids[off[0]]} is off the "
                             f"{self.minimum}–{self.maximum} scale")


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

    def split(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path / f"{name}.parquet", columns=columns)

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

    @cached_property
    def user_map(self) -> IdMap:
        """Raw user ids ↔ matrix rows, read once per handle (the folder never changes once built)."""
        return IdMap(self.user_ids(), "user")

    @cached_property
    def anime_map(self) -> IdMap:
        """Raw anime ids ↔ matrix columns, read once per handle."""
        return IdMap(self.anime_ids(), "anime")

    def anime_metadata(self) -> pa.Table:
        return pq.read_table(self.path / ANIME_METADATA_FILE)

    def unrated(self) -> pa.Table:
        """Watched-but-unrated pairs (and Kaggle 2020 list entries) by raw id, with their watching status."""
        return pq.read_table(self.path / UNRATED_FILE)

    def interactions(self, splits: tuple[str, ...], unrated_value: int) -> pa.Table:
        """Every (user_index, anime_index, rating, watching_status) a user rated in `splits` or has without a
        rating (rating = `unrated_value`, with its watching status; 0 = not given). Pairs of users or anime
        with no accepted rating are left out, as the models have no row for them."""
        parts = [self.split(name, ["user_index", "anime_index", "rating"]).append_column(
            "watching_status", pa.array(np.zeros(self.split_sizes[name], np.int8))) for name in splits]
        unrated = self.unrated()
        users = self.user_map.indices(unrated["user_id"].to_numpy())
        anime = self.anime_map.indices(unrated["anime_id"].to_numpy())
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


def split_assignment(user_ids: Column, anime_ids: Column, test_fraction: float,
                     validation_fraction: float, seed: int) -> np.ndarray:
    """Labels 0=train, 1=validation, 2=test from a seeded hash of each (user, anime) pair.

    A pair's label depends only on the pair and the seed: not on row order, and not on other rows,
    so a rating keeps its split when new data arrive (a test pair never leaks into training later).
    """
    # A draw below test_fraction is below both bounds (2, test); between them, below one (1, validation).
    return fractions_above([user_ids, anime_ids], [test_fraction + (1 - test_fraction) * validation_fraction,
                                                   test_fraction], seed)


def _contiguous_index(ids: Column) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids and each row's position among them: by a lookup table when ids are small
    (linear time, like MyAnimeList's), by sorting otherwise. Arrow columns are read in place, chunk by chunk."""
    bounds = pc.min_max(ids).as_py() if len(ids) else {"min": -1, "max": -1}
    if len(ids) and 0 <= bounds["min"] and bounds["max"] < 4 * len(ids) + 1_000_000:
        present = np.zeros(bounds["max"] + 1, dtype=bool)
        for _, (values,) in aligned_chunks([ids]):
            _mark(present, values)
        position = (np.cumsum(present, dtype=np.int64) - 1).astype(np.int32)
        index = np.empty(len(ids), dtype=np.int32)
        for offset, (values,) in aligned_chunks([ids]):
            _gather(position, values, index[offset:offset + len(values)])
        return np.flatnonzero(present), index
    distinct, index = np.unique(np.asarray(ids), return_inverse=True)
    return distinct, index.astype(np.int32)


@numba.njit(parallel=True, cache=True)
def _mark(present: np.ndarray, keys: np.ndarray) -> None:
    for i in numba.prange(len(keys)):
        present[keys[i]] = True


@numba.njit(parallel=True, cache=True)
def _gather(table: np.ndarray, keys: np.ndarray, out: np.ndarray) -> None:
    """out ← table[keys], in parallel and into `out` (numpy's take would make an int64 copy of every key first)."""
    for i in numba.prange(len(keys)):
        out[i] = table[keys[i]]


def _write_split(coo: pa.Table, labels: np.ndarray, code: int, path: Path, dictionary: list[str],
                 slice_rows: int = 1 << 22) -> int:
    """Write the rows labelled `code` to `path`, a slice of rows at a time (a split is never held whole, so memory
    follows the slice, not the data); the number of rows written. Only the `dictionary` columns are
    dictionary-encoded."""
    written = 0
    with pq.ParquetWriter(path, coo.schema, use_dictionary=dictionary) as writer:
        for start in range(0, coo.num_rows, slice_rows):
            part = coo.slice(start, slice_rows).filter(pa.array(labels[start:start + slice_rows] == code))
            writer.write_table(part)
            written += part.num_rows
    return written


@numba.njit(cache=True)
def _counts_and_sums(labels: np.ndarray, values: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and the sum of `values` per label."""
    counts, sums = np.zeros(n_labels, np.int64), np.zeros(n_labels, np.int64)
    for i in range(len(labels)):
        counts[labels[i]] += 1
        sums[labels[i]] += values[i]
    return counts, sums


def _ratings_and_scaled(ratings: Column, scale: RatingScale) -> tuple[np.ndarray, np.ndarray]:
    """The ratings as int16 and scaled to [0, 1] as float32, chunk by chunk (temporaries the size of a chunk)."""
    stored, scaled = np.empty(len(ratings), dtype=np.int16), np.empty(len(ratings), dtype=np.float32)
    for offset, (values,) in aligned_chunks([ratings]):
        stored[offset:offset + len(values)] = values
        scaled[offset:offset + len(values)] = scale.scale(values)
    return stored, scaled


def _dictionary_columns(n_users: int, n_anime: int, scale: RatingScale) -> list[str]:
    """Dictionary encoding pays for columns of few values (anime, ratings); for user columns (300k values at full
    scale) it only costs time when writing."""
    distinct = {"user_index": n_users, "user_id": n_users, "anime_index": n_anime, "anime_id": n_anime,
                "rating": scale.maximum - scale.minimum + 1, "scaled_rating": scale.maximum - scale.minimum + 1}
    return [name for name, count in distinct.items() if count <= DICTIONARY_MAX_VALUES]


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

    user_ids, user_index = _contiguous_index(ratings["user_id"])
    anime_ids, anime_index = _contiguous_index(ratings["anime_id"])
    stored, scaled = _ratings_and_scaled(ratings["rating"], scale)
    coo = pa.table({"user_index": user_index, "anime_index": anime_index, "user_id": ratings["user_id"],
                    "anime_id": ratings["anime_id"], "rating": stored, "scaled_rating": scaled})
    labels = split_assignment(ratings["user_id"], ratings["anime_id"], settings.test_fraction,
                              settings.validation_fraction, settings.split_seed)
    dictionary = _dictionary_columns(len(user_ids), len(anime_ids), scale)
    sizes, sums = _counts_and_sums(labels, stored, len(SPLITS))
    split_sizes = {name: int(sizes[code]) for code, name in enumerate(SPLITS)}
    train_mean_rating = float(sums[0]) / max(int(sizes[0]), 1)  # an exact integer sum, so numpy's mean to the bit
    tables = {
        USER_INDEX_FILE: pa.table({"user_id": user_ids, "user_index": np.arange(len(user_ids), dtype=np.int32)}),
        ANIME_INDEX_FILE: pa.table({"anime_id": anime_ids, "anime_index": np.arange(len(anime_ids), dtype=np.int32)}),
        UNRATED_FILE: validated.unrated, "quarantine.parquet": validated.quarantine,
        "anime_quarantine.parquet": validated.anime_quarantine, ANIME_METADATA_FILE: validated.anime}

    target = settings.matrix_root / f"{data_version}-{split_id[:8]}"
    with atomic_dir(target) as tmp:
        # Parquet encodes one file on one thread and releases the GIL: the splits are written side by side.
        with ThreadPoolExecutor(max_workers=len(SPLITS)) as pool:
            written = [pool.submit(_write_split, coo, labels, code, tmp / f"{name}.parquet", dictionary)
                       for code, name in enumerate(SPLITS)]
            for name, table in tables.items():
                pq.write_table(table, tmp / name)
            if [future.result() for future in written] != list(split_sizes.values()):
                raise AssertionError("split files do not hold the split's rows")
        metadata = {
            "data_version": data_version, "split_id": split_id, "split": split_params, "split_sizes": split_sizes,
            "n_users": len(user_ids), "n_anime": len(anime_ids), "scale": asdict(scale),
            "train_mean_rating": train_mean_rating,
            "counts": asdict(validated.counts), "source_sha256": source_sha256 or {},
        }
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return UtilityMatrix.open(target)
