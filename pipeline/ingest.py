"""Ingest: read `rating.csv` and `anime.csv` (Kaggle CooperUnion layout) into typed Arrow tables.

Reading is typed and vectorized (pyarrow). A value that does not parse (say rating `7.5`) does not
stop the run: the fast typed read falls back to a string read, the bad cell becomes null and the row
carries a `parse_error` that validation turns into a quarantine reason.
"""

from __future__ import annotations

import csv
import hashlib
import html
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.errors import PipelineInputError

RATING_FILE = "rating.csv"
ANIME_FILE = "anime.csv"

RATING_SCHEMA: dict[str, pa.DataType] = {"user_id": pa.int64(), "anime_id": pa.int64(), "rating": pa.int64()}
ANIME_SCHEMA: dict[str, pa.DataType] = {
    "anime_id": pa.int64(),
    "name": pa.string(),
    "genre": pa.string(),
    "type": pa.string(),
    "episodes": pa.string(),  # "Unknown" for airing shows; cast after reading
    "rating": pa.float64(),
    "members": pa.int64(),
}
ANIME_REQUIRED = ["anime_id", "name"]  # the rest is optional metadata, null when the file lacks it
_PATTERNS = {pa.int64(): r"^\s*[+-]?\d+\s*$", pa.float64(): r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"}
_KIND = {pa.int64(): "an integer", pa.float64(): "a number"}


@dataclass(frozen=True)
class RawData:
    """Typed source tables plus what is needed to trace them back to the files."""

    ratings: pa.Table  # user_id, anime_id, rating (int64), row_number, parse_error
    anime: pa.Table  # ANIME_SCHEMA with episodes as int64, row_number, parse_error
    source_sha256: dict[str, str]

    @property
    def rows_in(self) -> int:
        return self.ratings.num_rows


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_header(path: Path, required: list[str]) -> None:
    if not path.is_file():
        raise PipelineInputError(f"{path}: file not found (expected columns {','.join(required)})")
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = next(csv.reader([handle.readline()]), [])
    header = [name.strip() for name in header]
    if not header:
        raise PipelineInputError(f"{path}: empty file, expected a header {','.join(required)}")
    missing = [name for name in required if name not in header]
    if missing:
        raise PipelineInputError(
            f"{path}: missing column {', '.join(repr(m) for m in missing)} (header has {','.join(header)})"
        )


def _parse_column(strings: pa.ChunkedArray, name: str, target: pa.DataType) -> tuple[pa.ChunkedArray, pa.Array]:
    """Cast a string column to `target`; cells that don't parse become null plus an error message."""
    present = pc.invert(pc.is_null(strings))
    valid = pc.fill_null(pc.match_substring_regex(strings, _PATTERNS[target]), False)
    bad = pc.and_(present, pc.invert(valid))
    values = pc.cast(pc.if_else(valid, pc.utf8_trim_whitespace(strings), None), target)
    message = pc.binary_join_element_wise(
        f"column '{name}' value '", strings, f"' is not {_KIND[target]}", "", null_handling="replace")
    return values, pc.if_else(bad, message, pa.scalar(None, pa.string()))


def _read_typed_csv(path: Path, schema: dict[str, pa.DataType], required: list[str]) -> pa.Table:
    """Read the schema's columns (optional ones missing from the file come back null); extra
    columns are ignored; unparseable cells are flagged per row in `parse_error`."""
    _check_header(path, required)
    read = pacsv.ReadOptions(block_size=1 << 24)
    try:
        table = pacsv.read_csv(path, read_options=read, convert_options=pacsv.ConvertOptions(
            column_types=schema, include_columns=list(schema), include_missing_columns=True,
            strings_can_be_null=True))
        errors = pa.nulls(table.num_rows, pa.string())
    except pa.ArrowInvalid as exc:
        if "conversion error" not in str(exc).lower():
            raise PipelineInputError(f"{path}: unparseable CSV ({str(exc).splitlines()[0]})") from exc
        table = pacsv.read_csv(path, read_options=read, convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in schema}, include_columns=list(schema),
            include_missing_columns=True, strings_can_be_null=True))
        errors = pa.nulls(table.num_rows, pa.string())
        for name, target in schema.items():
            if target == pa.string():
                continue
            values, column_errors = _parse_column(table[name], name, target)
            table = table.set_column(table.schema.get_field_index(name), name, values)
            errors = pc.coalesce(errors, column_errors)
    row_number = pa.array(range(1, table.num_rows + 1), pa.int64())
    return table.append_column("row_number", row_number).append_column("parse_error", errors)


def read_ratings(path: Path) -> pa.Table:
    return _read_typed_csv(path, RATING_SCHEMA, required=list(RATING_SCHEMA))


def read_anime(path: Path) -> pa.Table:
    """Anime metadata with HTML entities decoded (`&#039;` → `'`) and `Unknown` episodes as null."""
    table = _read_typed_csv(path, ANIME_SCHEMA, required=ANIME_REQUIRED)
    names = pa.array([None if n is None else html.unescape(n) for n in table["name"].to_pylist()], pa.string())
    episodes = table["episodes"]
    known = pc.fill_null(pc.match_substring_regex(episodes, _PATTERNS[pa.int64()]), False)
    table = table.set_column(table.schema.get_field_index("name"), "name", names)
    return table.set_column(
        table.schema.get_field_index("episodes"), "episodes", pc.cast(pc.if_else(known, episodes, None), pa.int64())
    )


def ingest(data_dir: Path) -> RawData:
    """Read both source files of a CooperUnion-layout folder, typed, with their sha256."""
    rating_path, anime_path = data_dir / RATING_FILE, data_dir / ANIME_FILE
    ratings = read_ratings(rating_path)
    anime = read_anime(anime_path)
    return RawData(
        ratings=ratings,
        anime=anime,
        source_sha256={RATING_FILE: file_sha256(rating_path), ANIME_FILE: file_sha256(anime_path)},
    )
