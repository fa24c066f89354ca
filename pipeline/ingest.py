"""Ingest: find the rating files of a data folder (or a downloaded .zip), read them into typed Arrow tables,
plus rating files that arrived later: those already applied (the archive) and new ones (the inbox).

Two layouts are recognised from the file names:

- Kaggle CooperUnion ("Anime Recommendations Database"): `rating.csv` (user_id, anime_id, rating; −1 =
  watched but not rated) and `anime.csv`.
- Kaggle 2020 ("Anime Recommendation Database 2020"): `rating_complete.csv` (the ratings), `animelist.csv`
  (every list entry, with its `watching_status`; its rows that are not ratings become interactions) and an
  `anime.csv` whose columns (`MAL_ID`, `Name`, `Score`, `Genres`, …) are mapped to the CooperUnion ones.

Each file may be plain, compressed (`.gz`, `.bz2`, `.zst`) or inside a `.zip`, as downloaded. Header names are
matched ignoring case and surrounding spaces. Reading is typed and vectorized (pyarrow). A value that does not
parse (say rating `7.5`) does not stop the run: the fast typed read falls back to a string read, the bad cell
becomes null and the row carries a `parse_error` that validation turns into a quarantine reason.
"""

from __future__ import annotations

import csv
import hashlib
import html
import os
import re
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.errors import PipelineInputError

ANIME_FILE = "anime.csv"
COMPRESSED_SUFFIXES = ("", ".gz", ".bz2", ".zst")  # read as they are (pyarrow decompresses by extension)
INBOX_SUFFIXES = tuple(f".csv{suffix}" for suffix in COMPRESSED_SUFFIXES)

# MyAnimeList list statuses (Kaggle 2020 `watching_status.csv`); 0 = watched, status not given (a −1 row).
WATCHING_STATUSES = {0: "watched", 1: "watching", 2: "completed", 3: "on hold", 4: "dropped", 6: "plan to watch"}


@dataclass(frozen=True)
class Columns:
    """The columns read from one kind of file: canonical name → type, and the header names accepted for each
    (compared by `header_key`; the canonical name itself when not listed)."""

    types: dict[str, pa.DataType]
    required: tuple[str, ...]
    accepted: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def header_names(self, name: str) -> tuple[str, ...]:
        return self.accepted.get(name, (name,))


# Rating files from other domains name the item `item_id` (or `itemId`, `Item ID`): read as the anime id.
RATING_COLUMNS = Columns({"user_id": pa.int64(), "anime_id": pa.int64(), "rating": pa.int64()},
                         required=("user_id", "anime_id", "rating"), accepted={"anime_id": ("anime_id", "item_id")})
WATCH_LIST_COLUMNS = Columns({"user_id": pa.int64(), "anime_id": pa.int64(), "rating": pa.int64(),
                              "watching_status": pa.int64()},
                             required=("user_id", "anime_id", "rating", "watching_status"))
# The Kaggle 2020 anime.csv is read through the same names: `MAL_ID`, `Genres` (`Genders` in older copies) and
# `Score` (its mean score; its `Rating` is the age rating, so `score` is looked for first). Only anime_id and name
# are required; the rest is null when absent.
ANIME_COLUMNS = Columns({
    "anime_id": pa.int64(), "name": pa.string(), "genre": pa.string(), "type": pa.string(),
    "episodes": pa.string(),  # "Unknown" for airing shows; cast after reading
    "rating": pa.string(),  # mean score; "Unknown" in the Kaggle 2020 file; cast after reading
    "members": pa.int64(),
}, required=("anime_id", "name"), accepted={
    "anime_id": ("anime_id", "mal_id"), "genre": ("genre", "genres", "genders"), "rating": ("score", "rating")})


@dataclass(frozen=True)
class Layout:
    """How a downloaded data set names its files."""

    name: str
    rating_file: str
    watch_list_file: str | None = None  # list entries with a watching status (interactions), if the layout has one


COOPERUNION = Layout("Kaggle CooperUnion", "rating.csv")
KAGGLE_2020 = Layout("Kaggle 2020", "rating_complete.csv", watch_list_file="animelist.csv")
LAYOUTS = (KAGGLE_2020, COOPERUNION)  # first match wins: a 2020 folder has no rating.csv, but check it first

_INTEGER = r"^\s*[+-]?\d{1,18}(\.0*)?\s*$"  # "8.0" (spreadsheets, pandas) is the integer 8
_TOO_LONG = r"^\s*[+-]?\d{19,}(\.0*)?\s*$"  # beyond int64 (and beyond any real id)
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


@dataclass(frozen=True)
class DataFile:
    """A CSV as found on disk: plain, compressed, or a member of a .zip (read in place, never unpacked)."""

    path: Path  # the file on disk (the .zip for a member)
    member: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path}/{self.member}" if self.member else str(self.path)

    def open(self):
        """A fresh binary stream over the (decompressed) CSV text."""
        if self.member is not None:
            return zipfile.ZipFile(self.path).open(self.member)
        return pa.input_stream(str(self.path), compression="detect")

    def readable(self):
        """What pyarrow's reader takes: the path itself when it can (parallel, memory-mapped), else a stream."""
        return str(self.path) if self.member is None else self.open()

    def sha256(self) -> str:
        """Of the file on disk (for a member: of its whole .zip)."""
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def find_file(location: Path, name: str) -> DataFile | None:
    """`name` in a folder (plain or compressed), or inside a .zip there (or `location` itself being a .zip)."""
    if location.is_dir():
        for suffix in COMPRESSED_SUFFIXES:
            if (location / f"{name}{suffix}").exists() or (location / f"{name}{suffix}").is_symlink():
                return DataFile(location / f"{name}{suffix}")
        archives = sorted(location.glob("*.zip"))
    else:
        archives = [location] if location.suffix.lower() == ".zip" and location.is_file() else []
    for archive in archives:
        try:
            members = zipfile.ZipFile(archive).namelist()
        except zipfile.BadZipFile as exc:
            raise PipelineInputError(f"{archive}: not a readable zip file ({exc})") from exc
        found = [m for m in members if PurePosixPath(m).name.lower() == name and not m.startswith("__MACOSX/")]
        if found:
            return DataFile(archive, min(found, key=len))
    return None


def detect_layout(location: Path) -> tuple[Layout, DataFile]:
    """The layout of a data folder or .zip, from the rating file it holds."""
    if location.is_file() and location.suffix.lower() != ".zip":
        raise PipelineInputError(f"{location}: is a file; give the folder that holds it (or a .zip of the data)")
    for layout in LAYOUTS:
        found = find_file(location, layout.rating_file)
        if found is not None:
            return layout, found
    missing = location / COOPERUNION.rating_file if location.is_dir() else location
    raise PipelineInputError(
        f"{missing}: file not found (expected columns "
        f"{','.join(RATING_COLUMNS.required)}; or {KAGGLE_2020.rating_file} of the Kaggle 2020 layout; plain, "
        f"{', '.join(s for s in COMPRESSED_SUFFIXES if s)} or inside a .zip)")


def _header(source: DataFile) -> list[str]:
    """The first line's field names, as written (a BOM dropped)."""
    if source.member is None and source.path.is_symlink():  # reading or moving it would touch what it points to
        raise PipelineInputError(f"{source.name}: is a symbolic link; put the file itself there")
    try:
        with source.open() as stream:
            head = stream.read(1 << 16)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PipelineInputError(f"{source.name}: cannot be read ({str(exc).splitlines()[0]})") from exc
    line = head.decode("utf-8-sig", errors="replace").splitlines()[0] if head.strip() else ""
    return [name.strip() for name in next(csv.reader([line]), [])] if line.strip() else []


def header_key(name: str) -> str:
    """What a header name is matched by: letters and digits, lower-cased (`User ID`, `userId`, `user_id` alike)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _column_names(source: DataFile, columns: Columns) -> list[str]:
    """Canonical names for the file's header fields (unused fields get names no schema has)."""
    header = _header(source)
    if not header:
        raise PipelineInputError(f"{source.name}: empty file, expected a header {','.join(columns.required)}")
    keys = [header_key(name) for name in header]
    names = [f"\0unused{i}" for i in range(len(header))]
    for canonical in columns.types:
        for accepted in map(header_key, columns.header_names(canonical)):
            if accepted in keys and names[keys.index(accepted)].startswith("\0"):
                names[keys.index(accepted)] = canonical
                break
    missing = [name for name in columns.required if name not in names]
    if missing:
        hint = ": the delimiter must be a comma" if len(header) == 1 and any(c in header[0] for c in ";\t|") else ""
        raise PipelineInputError(f"{source.name}: missing column {', '.join(repr(m) for m in missing)} "
                                 f"(header has {','.join(header)}){hint}")
    return names


def _as_numbers(strings: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Text → `target` (int64: `8.0` is 8) where it is a number of that kind, null elsewhere; and which parsed."""
    valid = pc.fill_null(pc.match_substring_regex(strings, _INTEGER if target == pa.int64() else _NUMBER), False)
    text = pc.utf8_trim_whitespace(strings)
    if target == pa.int64():
        text = pc.replace_substring_regex(text, r"\.0*$", "")
    return pc.cast(pc.if_else(valid, text, None), target), valid


def _parse_column(strings: pa.ChunkedArray, name: str, target: pa.DataType) -> tuple[pa.ChunkedArray, pa.Array]:
    """Cast a string column to `target`; cells that don't parse become null plus an error message."""
    present = pc.invert(pc.is_null(strings))
    values, valid = _as_numbers(strings, target)
    too_long = pc.fill_null(pc.match_substring_regex(strings, _TOO_LONG), False) if target == pa.int64() else None
    kind = "an integer" if target == pa.int64() else "a number"

    def message(what: str) -> pa.ChunkedArray:
        return pc.binary_join_element_wise(f"column '{name}' value '", strings, f"' {what}", "",
                                           null_handling="replace")

    error = pc.if_else(pc.and_(present, pc.invert(valid)), message(f"is not {kind}"), pa.scalar(None, pa.string()))
    if too_long is not None:
        error = pc.if_else(too_long, message("is out of range (more than 18 digits)"), error)
    return values, error


@dataclass
class _InvalidRows:
    """Rows with the wrong number of fields (say, a truncated last line), skipped by the parser."""

    rows: list[tuple[int | None, int, int]] = field(default_factory=list)  # (line number, fields, expected)

    def skip(self, row) -> str:
        self.rows.append((row.number, row.actual_columns, row.expected_columns))
        return "skip"


def _read(source: DataFile, names: list[str], column_types: dict[str, pa.DataType],
          threads: bool) -> tuple[pa.Table, _InvalidRows]:
    """Stream the file in 16 MB blocks under canonical column names, keeping only the schema's columns."""
    invalid = _InvalidRows()
    table = pacsv.read_csv(
        source.readable(),
        read_options=pacsv.ReadOptions(block_size=1 << 24, use_threads=threads, column_names=names, skip_rows=1),
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


def read_csv_file(source: DataFile, columns: Columns) -> pa.Table:
    """Read the columns' fields (optional ones missing from the file come back null; extra ones are ignored);
    unparseable cells and rows with the wrong number of fields are flagged per row in `parse_error`
    (validation quarantines them). Text fields are trimmed of surrounding spaces."""
    names = _column_names(source, columns)
    schema = columns.types
    try:
        try:
            table, invalid = _read(source, names, schema, threads=True)
            errors = pa.nulls(table.num_rows)  # null-typed: no buffer per row while no value failed
        except pa.ArrowInvalid as exc:
            if "conversion error" not in str(exc).lower():
                raise PipelineInputError(f"{source.name}: unparseable CSV ({str(exc).splitlines()[0]})") from exc
            table, invalid = _read(source, names, {name: pa.binary() for name in schema}, threads=True)
            errors = pa.nulls(table.num_rows, pa.string())
            for name, target in schema.items():
                text, column_errors = _decoded(table[name], name)
                if target != pa.string():
                    text, column_errors = _parse_column(text, name, target)  # bad bytes fail as "not an integer"
                table = table.set_column(table.schema.get_field_index(name), name, text)
                errors = pc.coalesce(errors, column_errors)
        if invalid.rows and any(number is None for number, _, _ in invalid.rows):
            invalid = _read(source, names, {name: pa.binary() for name in schema}, threads=False)[1]  # one thread
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # a damaged .gz/.zip: name it, don't trace back
        raise PipelineInputError(f"{source.name}: cannot be read ({str(exc).splitlines()[0]})") from exc
    for name, target in schema.items():
        if target == pa.string():
            table = table.set_column(table.schema.get_field_index(name), name, pc.utf8_trim_whitespace(table[name]))
    return _with_row_numbers(table, errors, invalid, schema)


def _with_row_numbers(table: pa.Table, errors: pa.Array, invalid: _InvalidRows,
                      schema: dict[str, pa.DataType]) -> pa.Table:
    """Number data rows from 1 (the header is line 1; int32 below 2**31 rows) and append the skipped rows, all
    fields null."""
    skipped = [number - 1 for number, _, _ in invalid.rows]
    n = table.num_rows + len(skipped)
    numbers = np.arange(1, n + 1, dtype=np.int32 if n < 2 ** 31 - 1 else np.int64)
    if skipped:  # a mask, not setdiff1d: that one sorts all 57M numbers
        kept = np.ones(len(numbers), dtype=bool)
        kept[np.asarray(skipped) - 1] = False
        numbers = numbers[kept]
        errors = errors.cast(pa.string())  # the skipped rows get a text reason below
    table = table.append_column("row_number", pa.array(numbers)).append_column("parse_error", errors)
    if not skipped:
        return table
    broken = pa.table({
        **{name: pa.nulls(len(skipped), table.schema.field(name).type) for name in schema},
        "row_number": pa.array(skipped, table.schema.field("row_number").type),
        "parse_error": pa.array([f"row has {fields} fields, expected {expected}"
                                 for _, fields, expected in invalid.rows], pa.string()),
    })
    return pa.concat_tables([table, broken.cast(table.schema)])


def _as_source(path: Path | DataFile) -> DataFile:
    return path if isinstance(path, DataFile) else DataFile(Path(path))


def read_ratings(path: Path | DataFile) -> pa.Table:
    return read_csv_file(_as_source(path), RATING_COLUMNS)


def read_watch_list(path: Path | DataFile) -> pa.Table:
    return read_csv_file(_as_source(path), WATCH_LIST_COLUMNS)


def read_anime(path: Path | DataFile) -> pa.Table:
    """Anime metadata in the CooperUnion columns (a Kaggle 2020 `anime.csv` is mapped by ANIME_COLUMNS), HTML
    entities decoded (`&#039;` → `'`); metadata numbers that don't parse (`Unknown`, blank) are null, never a
    quarantine."""
    table = read_csv_file(_as_source(path), ANIME_COLUMNS)
    names = pa.array([None if n is None else html.unescape(n) for n in table["name"].to_pylist()], pa.string())
    table = table.set_column(table.schema.get_field_index("name"), "name", names)
    for name, target in (("episodes", pa.int64()), ("rating", pa.float64())):
        table = table.set_column(table.schema.get_field_index(name), name, _as_numbers(table[name], target)[0])
    return table


def inbox_files(folder: Path | None) -> list[Path]:
    """The rating files directly in `folder`, by name."""
    if folder is None or not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.name.lower().endswith(INBOX_SUFFIXES))


@dataclass(frozen=True)
class RawData:
    """Typed source tables plus what is needed to trace them back to the files."""

    # user_id, anime_id, rating (int64), row_number (int32, int64 past 2**31 rows), parse_error (null-typed when no row
    # has one), source_rank
    ratings: pa.Table
    anime: pa.Table  # anime_id, name, genre, type, episodes, rating, members, row_number, parse_error
    source_sha256: dict[str, str]
    sources: tuple[str, ...] = ("rating.csv",)  # rating sources, oldest first; source_rank indexes this
    incoming: tuple[Path, ...] = ()  # inbox files read by this run: archived once the run has committed
    layout: Layout = COOPERUNION
    watch_list: pa.Table | None = None  # Kaggle 2020 animelist.csv: user_id, anime_id, rating, watching_status, …

    @property
    def rows_in(self) -> int:
        return self.ratings.num_rows + (0 if self.watch_list is None else self.watch_list.num_rows)


def ingest(data_dir: Path, inbox_dir: Path | None = None, archive_dir: Path | None = None) -> RawData:
    """Read a data folder (or .zip) in either layout plus archived and inbox rating files, typed, with their sha256.

    Rating sources are ranked oldest first — the layout's rating file, then the archive in the order it was
    applied, then the inbox by file name — so that validation can let the newest rating of a pair win.
    """
    data_dir = Path(data_dir)
    layout, rating_file = detect_layout(data_dir)
    rating_sources = {layout.rating_file: rating_file}
    rating_sources |= {f"archive/{path.name}": DataFile(path) for path in inbox_files(archive_dir)}
    incoming = inbox_files(inbox_dir)
    rating_sources |= {f"incoming/{path.name}": DataFile(path) for path in incoming}
    anime_file = find_file(data_dir, ANIME_FILE)
    if anime_file is None:
        folder = data_dir if data_dir.is_dir() else data_dir.parent
        raise PipelineInputError(f"{folder / ANIME_FILE}: file not found (expected columns "
                                 f"{','.join(ANIME_COLUMNS.required)}, or MAL_ID,Name of the Kaggle 2020 layout)")
    files = {**rating_sources, ANIME_FILE: anime_file}
    watch_file = None if layout.watch_list_file is None else find_file(data_dir, layout.watch_list_file)
    if watch_file is not None:
        files[layout.watch_list_file] = watch_file
    # The files' sha256 (hashlib releases the GIL) is computed beside the CSV parsing; once per file on disk (a .zip
    # holds several); never through a symbolic link (reading one stops the run first).
    with ThreadPoolExecutor(max_workers=1) as hashing:
        digests = {path: hashing.submit(DataFile(path).sha256) for path in {source.path for source in files.values()}
                   if not path.is_symlink()}
        tables = []
        for rank, source in enumerate(rating_sources.values()):
            table = read_ratings(source)
            tables.append(table.append_column("source_rank", pa.array(np.full(table.num_rows, rank, np.int32))))
        anime = read_anime(anime_file)
        watch_list = None if watch_file is None else read_watch_list(watch_file)
        for source, table in ((rating_file, tables[0]), (anime_file, anime)):
            if table.num_rows == 0:  # an inbox file may be an empty increment; the base data may not be empty
                raise PipelineInputError(f"{source.name}: no rows after the header")
        source_sha256 = {name: digests[source.path].result() for name, source in files.items()}
    return RawData(
        ratings=pa.concat_tables(tables, promote_options="permissive"),  # files with and without read errors
        anime=anime,
        source_sha256=source_sha256,
        sources=tuple(rating_sources),
        incoming=tuple(incoming),
        layout=layout,
        watch_list=watch_list,
    )


def archive_incoming(files: Sequence[Path], archive_dir: Path) -> list[Path]:
    """Move applied inbox files into the archive, numbered so later runs read them in the same order.

    Each move is one atomic rename: a crash leaves every file either in the inbox (read again next run)
    or in the archive (already part of the data), never in both.
    """
    archive_dir.mkdir(parents=True, exist_ok=True)
    numbers = [int(path.name.split("-", 1)[0]) for path in inbox_files(archive_dir) if path.name[:6].isdigit()]
    moved = []
    for number, path in enumerate(files, start=max(numbers, default=0) + 1):
        target = archive_dir / f"{number:06d}-{path.name}"
        os.replace(path, target)
        moved.append(target)
    return moved
