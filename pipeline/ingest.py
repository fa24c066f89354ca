"""Ingest: read `rating.csv` and `anime.csv` (Kaggle CooperUnion layout) into typed Arrow tables,
plus rating files that arrived later: those already applied (the archive) and new ones (the inbox).

Reading is typed and vectorized (pyarrow). A value that does not parse (say rating `7.5`) does not
stop the run: the fast typed read falls back to a string read, the bad cell becomes null and the row
carries a `parse_error` that validation turns into a quarantine reason.
"""

from __future__ import annotations

import csv
import hashlib
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
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

    ratings: pa.Table  # user_id, anime_id, rating (int64), row_number, parse_error, source_rank
    anime: pa.Table  # ANIME_SCHEMA with episodes as int64, row_number, parse_error
    source_sha256: dict[str, str]
    sources: tuple[str, ...] = (RATING_FILE,)  # rating sources, oldest first; source_rank indexes this
    incoming: tuple[Path, ...] = ()  # inbox files read by this run: archived once the run has committed

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
    if path.is_symlink():  # reading or later moving it would touch whatever it points to
        raise PipelineInputError(f"{path}: is a symbolic link; put the file itself there")
    if not path.is_file():
        raise PipelineInputError(f"{path}: file not found (expected columns {','.join(required)})")
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as handle:
        header = next(csv.reader([handle.readline()]), [])
    header = [name.strip() for name in header]
    if not header:
        raise PipelineInputError(f"{path}: empty file, expected a header {','.join(required)}")
    missing = [name for name in required if name not in header]
    if missing:
        hint = ": the delimiter must be a comma" if len(header) == 1 and re.search(r"[;\t|]", header[0]) else ""
        raise PipelineInputError(
            f"{path}: missing column {', '.join(repr(m) for m in missing)} (header has {','.join(header)}){hint}"
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


@dataclass
class _InvalidRows:
    """Rows with the wrong number of fields (say, a truncated last line), skipped by the parser."""

    rows: list[tuple[int | None, int, int]] = field(default_factory=list)  # (line number, fields, expected)

    def skip(self, row) -> str:
        self.rows.append((row.number, row.actual_columns, row.expected_columns))
        return "skip"


def _read(path: Path, column_types: dict[str, pa.DataType], threads: bool) -> tuple[pa.Table, _InvalidRows]:
    """Stream the file in 16 MB blocks, keeping only the schema's columns."""
    invalid = _InvalidRows()
    table = pacsv.read_csv(
        path, read_options=pacsv.ReadOptions(block_size=1 << 24, use_threads=threads),
        parse_options=pacsv.ParseOptions(invalid_row_handler=invalid.skip),
        convert_options=pacsv.ConvertOptions(column_types=column_types, include_columns=list(column_types),
                                             include_missing_columns=True, strings_can_be_null=True))
    return table, invalid


def _decoded(values: pa.ChunkedArray, name: str) -> tuple[pa.ChunkedArray, pa.Array]:
    """Bytes → text; values that are not UTF-8 are decoded with replacement characters and flagged."""
    try:
        return pc.cast(values, pa.string()), pa.nulls(len(values), pa.string())
    except pa.ArrowInvalid:
        raw = values.to_pylist()
        text = [None if v is None else v.decode("utf-8", errors="replace") for v in raw]
        bad = [v is not None and t.encode("utf-8", errors="surrogatepass") != v for v, t in zip(raw, text, strict=True)]
        message = f"column '{name}' is not valid UTF-8"
        return pa.chunked_array([pa.array(text, pa.string())]), pa.array([message if b else None for b in bad],
                                                                        pa.string())


def _read_typed_csv(path: Path, schema: dict[str, pa.DataType], required: list[str]) -> pa.Table:
    """Read the schema's columns (optional ones missing from the file come back null); extra
    columns are ignored; unparseable cells and rows with the wrong number of fields are flagged per
    row in `parse_error` (validation quarantines them)."""
    _check_header(path, required)
    try:
        table, invalid = _read(path, schema, threads=True)
        errors = pa.nulls(table.num_rows, pa.string())
    except pa.ArrowInvalid as exc:
        if "conversion error" not in str(exc).lower():
            raise PipelineInputError(f"{path}: unparseable CSV ({str(exc).splitlines()[0]})") from exc
        table, invalid = _read(path, {name: pa.binary() for name in schema}, threads=True)
        errors = pa.nulls(table.num_rows, pa.string())
        for name, target in schema.items():
            text, column_errors = _decoded(table[name], name)
            if target != pa.string():
                text, column_errors = _parse_column(text, name, target)  # bad bytes fail as "not an integer"
            table = table.set_column(table.schema.get_field_index(name), name, text)
            errors = pc.coalesce(errors, column_errors)
    if invalid.rows and any(number is None for number, _, _ in invalid.rows):
        invalid = _read(path, {name: pa.binary() for name in schema}, threads=False)[1]  # numbers need one thread
    return _with_row_numbers(table, errors, invalid, schema)


def _with_row_numbers(table: pa.Table, errors: pa.Array, invalid: _InvalidRows,
                      schema: dict[str, pa.DataType]) -> pa.Table:
    """Number data rows from 1 (the header is line 1) and append the skipped rows, all fields null."""
    skipped = [number - 1 for number, _, _ in invalid.rows]
    numbers = np.arange(1, table.num_rows + len(skipped) + 1, dtype=np.int64)
    if skipped:  # a mask, not setdiff1d: that one sorts all 57M numbers
        kept = np.ones(len(numbers), dtype=bool)
        kept[np.asarray(skipped) - 1] = False
        numbers = numbers[kept]
    table = table.append_column("row_number", pa.array(numbers)).append_column("parse_error", errors)
    if not skipped:
        return table
    broken = pa.table({
        **{name: pa.nulls(len(skipped), table.schema.field(name).type) for name in schema},
        "row_number": pa.array(skipped, pa.int64()),
        "parse_error": pa.array([f"row has {fields} fields, expected {expected}"
                                 for _, fields, expected in invalid.rows], pa.string()),
    })
    return pa.concat_tables([table, broken.cast(table.schema)])


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


def _csv_files(folder: Path | None) -> list[Path]:
    return sorted(folder.glob("*.csv")) if folder is not None and folder.is_dir() else []


def ingest(data_dir: Path, inbox_dir: Path | None = None, archive_dir: Path | None = None) -> RawData:
    """Read a CooperUnion-layout folder plus archived and inbox rating files, typed, with their sha256.

    Rating sources are ranked oldest first — base `rating.csv`, then the archive in the order it was
    applied, then the inbox by file name — so that validation can let the newest rating of a pair win.
    """
    rating_paths = {RATING_FILE: data_dir / RATING_FILE}
    rating_paths |= {f"archive/{path.name}": path for path in _csv_files(archive_dir)}
    incoming = _csv_files(inbox_dir)
    rating_paths |= {f"incoming/{path.name}": path for path in incoming}
    tables = []
    for rank, path in enumerate(rating_paths.values()):
        table = read_ratings(path)
        tables.append(table.append_column("source_rank", pa.array(np.full(table.num_rows, rank, np.int32))))
    anime_path = data_dir / ANIME_FILE
    anime = read_anime(anime_path)
    for path, table in ((rating_paths[RATING_FILE], tables[0]), (anime_path, anime)):
        if table.num_rows == 0:  # an inbox file may be an empty increment; the base data may not be empty
            raise PipelineInputError(f"{path}: no rows after the header")
    return RawData(
        ratings=pa.concat_tables(tables),
        anime=anime,
        source_sha256={name: file_sha256(path) for name, path in (*rating_paths.items(), (ANIME_FILE, anime_path))},
        sources=tuple(rating_paths),
        incoming=tuple(incoming),
    )


def archive_incoming(files: Sequence[Path], archive_dir: Path) -> list[Path]:
    """Move applied inbox files into the archive, numbered so later runs read them in the same order.

    Each move is one atomic rename: a crash leaves every file either in the inbox (read again next run)
    or in the archive (already part of the data), never in both.
    """
    archive_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(path.name.split("-", 1)[0]) for path in _csv_files(archive_dir) if path.name[:6].isdigit()]
    moved = []
    for number, path in enumerate(files, start=max(numbers, default=0) + 1):
        target = archive_dir / f"{number:06d}-{path.name}"
        os.replace(path, target)
        moved.append(target)
    return moved
