"""Validate: run the Great Expectations suites in `expectations/` and split rows into
accepted ratings, interactions without a rating (−1 rows; the Kaggle 2020 list entries with their
watching status) and quarantine (each quarantined row with its reason).

The suites are evaluated by GX's own pandas engine (the default) or, with `validation_engine = "arrow"`, by
Arrow compute (arrow_engine.py, results in GX's form; a suite it does not evaluate exactly goes to GX's engine).

Every expectation in a suite says what its failure means (`meta.on_failure`): `stop` fails the run
with one line naming file and column; `quarantine` moves the failing rows aside with `meta.reason`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.data.ingest import RawData
from pipeline.data.layouts import ANIME_FILE, WATCHING_STATUSES
from pipeline.errors import PipelineInputError
from pipeline.settings import Settings
from pipeline.validation.arrow_kernels import boolean_mask, chunks_of
from pipeline.validation.results import (
    RATING_COLUMNS,
    SUITE_RATING_COLUMNS,
    ScaleCheck,
    SuiteReport,
    ValidatedData,
    ValidationCounts,
)
from pipeline.validation.suites import BatchMap, run_suite, validate_batches_here


def _newest_per_pair(ratings: pa.Table, valid: np.ndarray) -> np.ndarray:
    """Among valid rows, keep for each (user, anime) only the row from the newest source."""
    rows = np.flatnonzero(valid)
    users = ratings["user_id"].to_numpy(zero_copy_only=False)[rows]
    anime = ratings["anime_id"].to_numpy(zero_copy_only=False)[rows]
    ranks = ratings["source_rank"].to_numpy()[rows]
    order = np.lexsort((ranks, anime, users))
    users, anime = users[order], anime[order]
    last_of_pair = np.ones(len(order), dtype=bool)
    last_of_pair[:-1] = (users[1:] != users[:-1]) | (anime[1:] != anime[:-1])
    keep = np.zeros(ratings.num_rows, dtype=bool)
    keep[rows[order[last_of_pair]]] = True
    return keep


def _suite_runner(settings: Settings, map_batches: BatchMap | None) -> Callable[..., tuple[SuiteReport, pa.Array]]:
    """run_suite with the settings' engine, in batches where they help: on Dask always (workers share them), here
    only with GX (its pandas copy of a batch is what memory follows; Arrow evaluates the table in place)."""
    batched = map_batches is not None or settings.validation_engine == "gx"
    return functools.partial(run_suite, batch_rows=settings.validation_batch_rows if batched else None,
                             map_batches=map_batches or validate_batches_here, engine=settings.validation_engine)


def _watch_list_rows(raw: RawData, settings: Settings,
                     run: Callable[..., tuple[SuiteReport, pa.Array]]) -> tuple[pa.Table, pa.Array, SuiteReport] | None:
    """The Kaggle 2020 list entries, validated, as source 0 (oldest): a rating of the same pair in any rating
    file supersedes them."""
    if raw.watch_list is None:
        return None
    table = raw.watch_list
    allowed = [0, *range(settings.rating_min, settings.rating_max + 1)]
    report, reason = run(table.select(["user_id", "anime_id", "rating", "watching_status"]),
                         settings.expectations_dir / "animelist.json", raw.layout.watch_list_file,
                         {"allowed_scores": allowed, "statuses": sorted(set(WATCHING_STATUSES) - {0})})
    rows = pa.table({"user_id": table["user_id"], "anime_id": table["anime_id"], "rating": table["rating"],
                     "watching_status": pc.cast(pc.fill_null(table["watching_status"], 0), pa.int8()),
                     "row_number": table["row_number"], "source_rank": pa.array(np.zeros(table.num_rows, np.int32))})
    return rows, _either(table["parse_error"], reason), report


def _runs(ranks: pa.ChunkedArray, n_sources: int) -> np.ndarray:
    """Where each source's rows start (and, last, the end): the rows are concatenated source by source."""
    values, counts = (array.to_pylist() for array in pc.value_counts(ranks).flatten())
    per_rank = dict(zip(values, counts, strict=True))
    starts = np.concatenate([[0], np.cumsum([per_rank.get(rank, 0) for rank in range(n_sources)])]).astype(np.int64)
    for rank in range(n_sources):
        if per_rank.get(rank) and pc.index(ranks, rank).as_py() != starts[rank]:
            raise AssertionError("rows are not in source order")
    return starts


def _where(table: pa.Table, mask: np.ndarray) -> pa.Table:
    """The rows where `mask` is set; the table itself when that is every row (a rating file without unrated or
    bad rows: no copy of 57M rows)."""
    return table if mask.all() else table.filter(mask)


def _either(first: pa.ChunkedArray, second: pa.Array) -> pa.ChunkedArray | pa.Array:
    """The first reason a row has (read errors come before rule failures); no pass over the rows when one side
    has none (the usual case)."""
    if first.null_count == len(first):
        return second
    return first if second.null_count == len(second) else pc.coalesce(first, second)


def _with_text_reason(quarantine: pa.Table) -> pa.Table:
    """Row numbers as int64 and reasons as text (both are narrower while no row has failed)."""
    return quarantine.cast(pa.schema([pa.field(name, {"reason": pa.string(), "row_number": pa.int64()}.get(name, kind))
                                      for name, kind in zip(quarantine.column_names, quarantine.schema.types,
                                                            strict=True)]))


def _check_quarantine_share(source: str, reasons: pa.Array | pa.ChunkedArray, settings: Settings) -> None:
    """Stop when more than `max_quarantine_share` of a source's rows have a quarantine reason."""
    share = (len(reasons) - reasons.null_count) / max(len(reasons), 1)
    if share > settings.max_quarantine_share:
        top = sorted(pc.value_counts(reasons.drop_null()).to_pylist(), key=lambda item: -item["counts"])[:3]
        listed = "; ".join(f"{item['values']} ({item['counts']:,})" for item in top)
        raise PipelineInputError(f"{source}: {share:.1%} of rows failed validation, above the "
                                 f"{settings.max_quarantine_share:.0%} limit (max_quarantine_share); most common: "
                                 f"{listed}")


@dataclass(frozen=True)
class _CheckedRows:
    """Every rating row of every file (the watch list first when there is one) with its reason, null if valid."""

    rows: pa.Table
    reason: pa.ChunkedArray | pa.Array
    sources: tuple[str, ...]
    reports: list[SuiteReport]
    anime_reason: pa.ChunkedArray | pa.Array
    watch_list_sources: int  # 1 when source 0 is the watch list, whose current entries are interactions

    @property
    def anime_report(self) -> SuiteReport:
        return self.reports[-1]  # the anime suite runs last


def _checked_rows(raw: RawData, settings: Settings, run: Callable[..., tuple[SuiteReport, pa.Array]]) -> _CheckedRows:
    """The suites run on every file; a file with too many bad rows stops the run."""
    allowed = [settings.unrated_value, *range(settings.rating_min, settings.rating_max + 1)]
    rating_report, rating_reason = run(raw.ratings.select(SUITE_RATING_COLUMNS),
                                       settings.expectations_dir / "ratings.json", " + ".join(raw.sources),
                                       {"allowed_ratings": allowed})
    rating_reason = _either(raw.ratings["parse_error"], rating_reason)
    anime_report, anime_reason = run(raw.anime.drop_columns(["row_number", "parse_error"]),
                                     settings.expectations_dir / "anime.json", ANIME_FILE)
    anime_reason = _either(raw.anime["parse_error"], anime_reason)
    _check_quarantine_share(" + ".join(raw.sources), rating_reason, settings)

    watch_list = _watch_list_rows(raw, settings, run)
    offset = 0 if watch_list is None else 1
    rows = pa.table({
        "user_id": raw.ratings["user_id"], "anime_id": raw.ratings["anime_id"], "rating": raw.ratings["rating"],
        "watching_status": pa.array(np.zeros(raw.ratings.num_rows, np.int8)), "row_number": raw.ratings["row_number"],
        "source_rank": pc.add(raw.ratings["source_rank"], np.int32(offset)) if offset else raw.ratings["source_rank"]})
    if watch_list is None:
        return _CheckedRows(rows, rating_reason, raw.sources, [rating_report, anime_report], anime_reason, 0)
    watch_rows, watch_reason, watch_report = watch_list
    _check_quarantine_share(raw.layout.watch_list_file, watch_reason, settings)
    parts = [*chunks_of(watch_reason), *chunks_of(rating_reason)]
    same_type = watch_reason.type == rating_reason.type  # else one side is null-typed: no row failed there
    return _CheckedRows(pa.concat_tables([watch_rows, rows], promote_options="permissive"),
                        pa.chunked_array(parts if same_type else [part.cast(pa.string()) for part in parts]),
                        (raw.layout.watch_list_file, *raw.sources), [rating_report, watch_report, anime_report],
                        anime_reason, 1)


@dataclass(frozen=True)
class _RowFates:
    """Where each row of `_CheckedRows.rows` goes: exactly one of accepted, unrated, quarantined, superseded."""

    valid: np.ndarray
    rated: np.ndarray
    unrated: np.ndarray
    superseded: np.ndarray


def _fates(checked: _CheckedRows, unrated_value: int) -> _RowFates:
    rows = checked.rows
    valid = pc.is_null(checked.reason).to_numpy(zero_copy_only=False)
    # With one source, pairs are already unique (a repeat within a file is quarantined by the suite).
    current = _newest_per_pair(rows, valid) if len(checked.sources) > 1 else valid
    unrated = current & boolean_mask(pc.equal(rows["rating"], unrated_value))
    if checked.watch_list_sources:  # the watch list's current entries are interactions
        unrated |= current & boolean_mask(pc.less(rows["source_rank"], checked.watch_list_sources))
    return _RowFates(valid, current & ~unrated, unrated, valid & ~current)


def _counts(raw: RawData, checked: _CheckedRows, fates: _RowFates, tables: dict[str, pa.Table]) -> ValidationCounts:
    """Each count from its own rows (never one as the remainder of the others), so that the reconciliation in
    ValidationCounts fails if a row lands in two places or in none."""
    starts = _runs(checked.rows["source_rank"], len(checked.sources))

    def per_file(mask: np.ndarray) -> list[int]:
        return [np.count_nonzero(mask[start:end]) for start, end in zip(starts[:-1], starts[1:], strict=True)]

    per_source = {"rows_in": np.diff(starts), "accepted": per_file(fates.rated), "unrated": per_file(fates.unrated),
                  "quarantined": per_file(~fates.valid), "superseded": per_file(fates.superseded)}
    statuses = np.bincount(tables["unrated"]["watching_status"].to_numpy().astype(np.int64), minlength=7)
    known_anime = pc.is_in(tables["ratings"]["anime_id"], value_set=tables["anime"]["anime_id"])
    return ValidationCounts(
        rows_in=raw.rows_in, accepted=tables["ratings"].num_rows, unrated=tables["unrated"].num_rows,
        quarantined=tables["quarantine"].num_rows, superseded=int(fates.superseded.sum()),
        anime_rows_in=raw.anime.num_rows, anime_accepted=tables["anime"].num_rows,
        anime_quarantined=tables["anime_quarantine"].num_rows,
        ratings_without_metadata=int(pc.sum(pc.invert(known_anime)).as_py() or 0),
        anime_neutralized={column: len(rows) for column, rows in checked.anime_report.neutralized.items()},
        per_source={name: {key: int(column[i]) for key, column in per_source.items()}
                    for i, name in enumerate(checked.sources)},
        unrated_by_status={WATCHING_STATUSES[code]: int(statuses[code]) for code in WATCHING_STATUSES
                           if statuses[code]},
    )


def _neutralized(anime: pa.Table, report: SuiteReport) -> pa.Table:
    """anime.csv with the cells of failing `neutral` expectations left out (null): the feature's neutral value."""
    for column, rows in report.neutralized.items():
        mask = np.zeros(anime.num_rows, dtype=bool)
        mask[rows] = True
        index = anime.schema.get_field_index(column)
        anime = anime.set_column(index, column, pc.if_else(mask, pa.scalar(None, anime[column].type), anime[column]))
    return anime


def validate(raw: RawData, settings: Settings, map_batches: BatchMap | None = None) -> ValidatedData:
    """Apply the suites; quarantine failing rows; fail if too large a share of rows is quarantined.
    `map_batches` runs the batches of every suite elsewhere (a Dask cluster; None: here, see run_suite).

    Every row ends in exactly one of: accepted rating, interaction without a rating, quarantine, or
    superseded (a newer file has the same pair), and the counts reconcile file by file.
    """
    checked = _checked_rows(raw, settings, _suite_runner(settings, map_batches))
    fates = _fates(checked, settings.unrated_value)
    rows = checked.rows
    left_out = rows.select(["source_rank", "row_number", *RATING_COLUMNS]).append_column(
        "reason", checked.reason).filter(pc.is_valid(checked.reason))
    anime_ok = pc.is_null(checked.anime_reason)
    tables = {
        "ratings": _where(rows.select(RATING_COLUMNS), fates.rated),
        "unrated": _where(rows.select(["user_id", "anime_id", "watching_status"]), fates.unrated),
        "quarantine": _with_text_reason(left_out.drop_columns(["source_rank"]).add_column(
            0, "source", pa.array(checked.sources).take(left_out["source_rank"]))),
        "anime": _neutralized(raw.anime.drop_columns(["row_number", "parse_error"]), checked.anime_report
                              ).filter(anime_ok),
        "anime_quarantine": _with_text_reason(raw.anime.select(["row_number", "anime_id", "name"]).append_column(
            "reason", checked.anime_reason).filter(pc.invert(anime_ok))),
    }
    ratings = tables["ratings"]
    observed = pc.min_max(ratings["rating"]).as_py() if ratings.num_rows else {"min": None, "max": None}
    return ValidatedData(**tables, counts=_counts(raw, checked, fates, tables), reports=checked.reports,
                         scale=ScaleCheck(settings.rating_min, settings.rating_max, observed["min"], observed["max"]))
