"""What an anime is, as numbers the rating model's feature tower reads: multi-hot genres and studios, one-hot type,
source and premiere season, log episodes and log members (standardized), and an indicator per number that is
missing.

Built from the accepted rows of anime.csv. Only what is known before anyone rates an anime: its MAL score
(`rating` / `Score`) is never a feature. A value that is missing (an empty cell, `Unknown`, a column the layout
lacks, a value validation made neutral) becomes the neutral one (no category, the mean number) and is counted;
an anime missing from anime.csv gets the neutral row. A category needs `min_anime` anime to become a feature
(rarer ones are neutral: too few to learn from).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline.matrix.id_map import IdMap

LISTS = ("genre", "studios")  # comma-separated lists: multi-hot
CATEGORIES = ("type", "source")  # one value: one-hot
NUMBERS = ("episodes", "members")  # counts: log1p, standardized; missing: 0 and an indicator
SEASON = "premiered"  # "Spring 1998": one-hot season and the year, standardized
SEASON_PATTERN = re.compile(r"^(spring|summer|fall|winter)\s+(\d{4})$", re.IGNORECASE)
FAMILIES = (*LISTS, *CATEGORIES, *NUMBERS, SEASON)


def split_list(text: str | None) -> list[str]:
    """The items of a comma-separated cell, trimmed, empty ones dropped."""
    return [item for item in (part.strip() for part in (text or "").split(",")) if item]


@dataclass(frozen=True)
class AnimeFeatures:
    """One row of features per anime of the catalog, and how many anime got the neutral value of each family."""

    ids: IdMap  # row → anime id (the accepted rows of anime.csv)
    values: np.ndarray  # (anime, features) float32
    names: list[str]  # what each column is: "genre=Action", "episodes (log, standardized)", …
    neutral: dict[str, int]  # family → anime whose value was missing (or made neutral by validation)
    absent: tuple[str, ...] = field(default=())  # families the file has no values of at all

    @property
    def width(self) -> int:
        return self.values.shape[1]

    def rows(self, anime_ids: np.ndarray) -> np.ndarray:
        """Features of these anime, in order; the neutral row (zeros) for an anime missing from the catalog."""
        position = self.ids.indices(np.asarray(anime_ids))
        out = np.zeros((len(position), self.width), np.float32)
        out[position >= 0] = self.values[position[position >= 0]]
        missing = self.neutral_row()
        out[position < 0] = missing
        return out

    def not_in(self, anime: IdMap) -> tuple[np.ndarray, np.ndarray]:
        """The catalog's anime that `anime` (a model's) does not hold: their ids and feature rows."""
        new = np.flatnonzero(anime.indices(self.ids.ids) < 0)
        return self.ids.ids[new], self.values[new]

    def neutral_row(self) -> np.ndarray:
        """An anime nothing is known of: no category, mean numbers, every 'missing' indicator set."""
        row = np.zeros(self.width, np.float32)
        row[[i for i, name in enumerate(self.names) if name.endswith(" missing")]] = 1.0
        return row

    def summary(self) -> str:
        """One line for the run's summary."""
        counted = ", ".join(f"{family} {self.neutral[family]:,}" for family in FAMILIES if family in self.neutral)
        line = f"{len(self.ids):,} anime, {self.width} features; neutral values: {counted or 'none'}"
        return line + (f"; not in anime.csv: {', '.join(self.absent)}" if self.absent else "")

    @classmethod
    def of(cls, anime: pa.Table, min_anime: int = 3) -> AnimeFeatures:
        """The features of the catalog's anime (columns the table lacks count as absent)."""
        columns = {name: anime[name].to_pylist() if name in anime.column_names else [None] * anime.num_rows
                   for name in FAMILIES}
        blocks, names, neutral, absent = [], [], {}, []
        for family in FAMILIES:
            cells = columns[family]
            if all(cell is None or cell == "" for cell in cells):
                absent.append(family)
                continue
            encode = {**dict.fromkeys(LISTS, _multi_hot), **dict.fromkeys(CATEGORIES, _one_hot),
                      **dict.fromkeys(NUMBERS, _number), SEASON: _season}[family]
            block, block_names, missing = encode(family, cells, min_anime)
            blocks.append(block)
            names += block_names
            neutral[family] = int(missing.sum())
        values = np.hstack(blocks) if blocks else np.zeros((anime.num_rows, 0), np.float32)
        return cls(IdMap(anime["anime_id"].to_numpy(), "anime"), values.astype(np.float32), names, neutral,
                   tuple(absent))


def _vocabulary(items: list[list[str]], min_anime: int) -> list[str]:
    """Values named by at least `min_anime` anime (compared case-insensitively; spelled as first seen), sorted."""
    counts: dict[str, int] = {}
    spelling: dict[str, str] = {}
    for values in items:
        for value in {v.casefold(): v for v in values}.values():
            key = value.casefold()
            counts[key] = counts.get(key, 0) + 1
            spelling.setdefault(key, value)
    return sorted(spelling[key] for key, count in counts.items() if count >= min_anime)


def _indicator_block(family: str, items: list[list[str]], min_anime: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    vocabulary = _vocabulary(items, min_anime)
    column = {value.casefold(): i for i, value in enumerate(vocabulary)}
    block = np.zeros((len(items), len(vocabulary)), np.float32)
    for row, values in enumerate(items):
        for value in values:
            if value.casefold() in column:
                block[row, column[value.casefold()]] = 1.0
    return block, [f"{family}={value}" for value in vocabulary], block.sum(axis=1) == 0


def _multi_hot(family: str, cells: list, min_anime: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    return _indicator_block(family, [split_list(cell) for cell in cells], min_anime)


def _one_hot(family: str, cells: list, min_anime: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    return _indicator_block(family, [[cell.strip()] if cell and cell.strip() else [] for cell in cells], min_anime)


def _standardized(values: np.ndarray, family: str, kind: str) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Known values standardized, missing ones at the mean (0) with an indicator column."""
    missing = np.isnan(values)
    known = values[~missing]
    mean, spread = (float(known.mean()), float(known.std()) or 1.0) if len(known) else (0.0, 1.0)
    scaled = np.where(missing, 0.0, (values - mean) / spread)
    block = np.column_stack([scaled, missing]).astype(np.float32)
    return block, [f"{family} ({kind}standardized)", f"{family} missing"], missing


def _number(family: str, cells: list, min_anime: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    values = np.array([np.nan if cell is None or cell < 0 else np.log1p(cell) for cell in cells], np.float64)
    return _standardized(values, family, "log, ")


def _season(family: str, cells: list, min_anime: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    found = [SEASON_PATTERN.match(cell.strip()) if cell else None for cell in cells]
    seasons, season_names, _ = _indicator_block(
        family, [[match.group(1).capitalize()] if match else [] for match in found], min_anime)
    years = np.array([float(match.group(2)) if match else np.nan for match in found])
    year_block, year_names, missing = _standardized(years, "premiere year", "")
    return np.hstack([seasons, year_block]), season_names + year_names, missing
