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

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.csv_reading import read_anime, read_ratings, read_watch_list
from pipeline.data.layouts import (
    ANIME_COLUMNS,
    ANIME_FILE,
    COOPERUNION,
    INBOX_SUFFIXES,
    DataFile,
    Layout,
    detect_layout,
    find_file,
)
from pipeline.data.ratings_db.export import APP_SOURCE, AppRatingsExport
from pipeline.data.ratings_db.schema import APP_USER_ID_BASE
from pipeline.errors import PipelineInputError


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
    app_ratings: AppRatingsExport | None = None  # the web app's ratings of this data set (the newest source)

    @property
    def rows_in(self) -> int:
        return self.ratings.num_rows + (0 if self.watch_list is None else self.watch_list.num_rows)


def ingest(data_dir: Path, inbox_dir: Path | None = None, archive_dir: Path | None = None,
           app_ratings: AppRatingsExport | None = None) -> RawData:
    """Read a data folder (or .zip) in either layout plus archived and inbox rating files, typed, with their sha256,
    and the web app's ratings of the data set when given.

    Rating sources are ranked oldest first — the layout's rating file, then the archive in the order it was
    applied, then the inbox by file name, then the app's ratings — so that validation can let the newest rating of a
    pair win.
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
        tables = [read_ratings(source) for source in rating_sources.values()]
        anime = read_anime(anime_file)
        watch_list = None if watch_file is None else read_watch_list(watch_file)
        for source, table in ((rating_file, tables[0]), (anime_file, anime)):
            if table.num_rows == 0:  # an inbox file may be an empty increment; the base data may not be empty
                raise PipelineInputError(f"{source.name}: no rows after the header")
        source_sha256 = {name: digests[source.path].result() for name, source in files.items()}
    for name, table in [*zip(rating_sources, tables, strict=True), (layout.watch_list_file, watch_list)]:
        if table is not None:
            _check_outside_app_ids(name, table)
    sources = tuple(rating_sources)
    if app_ratings is not None:
        sources += (APP_SOURCE,)
        tables.append(_as_rating_rows(app_ratings.ratings))
        source_sha256[APP_SOURCE] = table_sha256(app_ratings.ratings)
    tables = [table.append_column("source_rank", pa.array(np.full(table.num_rows, rank, np.int32)))
              for rank, table in enumerate(tables)]
    return RawData(
        ratings=pa.concat_tables(tables, promote_options="permissive"),  # files with and without read errors
        anime=anime,
        source_sha256=source_sha256,
        sources=sources,
        incoming=tuple(incoming),
        layout=layout,
        watch_list=watch_list,
        app_ratings=app_ratings,
    )


def _check_outside_app_ids(name: str, ratings: pa.Table) -> None:
    """A data set's own user ids stay below the app profiles' (APP_USER_ID_BASE), so that the two never mix."""
    highest = pc.max(ratings["user_id"]).as_py()
    if highest is not None and highest >= APP_USER_ID_BASE:
        raise PipelineInputError(f"{name}: column user_id: id {highest} is in the range kept for the web app's "
                                 f"profiles (from {APP_USER_ID_BASE}); renumber the data set's users below it")


def _as_rating_rows(ratings: pa.Table) -> pa.Table:
    """The app's ratings in the columns a rating file reads into (rows numbered from 1, no parse errors)."""
    return ratings.append_column("row_number", pa.array(np.arange(1, ratings.num_rows + 1, dtype=np.int32))
                                 ).append_column("parse_error", pa.nulls(ratings.num_rows))


def table_sha256(table: pa.Table) -> str:
    """A digest of a table's values (its Arrow IPC stream): the lineage of a source that is not a file."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue()).hexdigest()


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
