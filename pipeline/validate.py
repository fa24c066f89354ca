"""Validate: run the Great Expectations suites in `expectations/` and split rows into
accepted ratings, interactions without a rating (−1 rows; the Kaggle 2020 list entries with their
watching status) and quarantine (each quarantined row with its reason).

The suites are evaluated by Arrow compute (pipeline/arrow_expectations.py, results in GX's form) or, with
`validation_engine = "gx"` or for a suite that engine does not evaluate, by GX's own pandas engine.

Every expectation in a suite says what its failure means (`meta.on_failure`): `stop` fails the run
with one line naming file and column; `quarantine` moves the failing rows aside with `meta.reason`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.arrow_expectations import boolean_mask, chunks_of, evaluates, validate_table
from pipeline.errors import PipelineInputError
from pipeline.hashing import multiset_digest
from pipeline.ingest import ANIME_FILE, WATCHING_STATUSES, RawData
from pipeline.settings import Settings

RATING_COLUMNS = ["user_id", "anime_id", "rating"]
SUITE_RATING_COLUMNS = ["source_rank", *RATING_COLUMNS]


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str
    success: bool
    unexpected_count: int
    on_failure: str


@dataclass(frozen=True)
class SuiteReport:
    suite: str
    source: str
    rows_in: int
    quarantined: int
    outcomes: list[ExpectationOutcome]
    gx_result: dict[str, Any] = field(repr=False)

    def summary_lines(self) -> list[str]:
        passed = sum(o.success for o in self.outcomes)
        lines = [f"suite '{self.suite}' on {self.source}: {passed}/{len(self.outcomes)} expectations passed, "
                 f"{self.quarantined:,} of {self.rows_in:,} rows quarantined"]
        lines += [f"  FAILED {o.expectation}({o.column}): {o.unexpected_count:,} rows -> {o.on_failure}"
                  for o in self.outcomes if not o.success]
        return lines


@dataclass(frozen=True)
class ValidationCounts:
    rows_in: int
    accepted: int
    unrated: int  # interactions without a rating: −1 rows, Kaggle 2020 list entries that are not ratings
    quarantined: int
    superseded: int  # valid rows replaced by a newer rating of the same (user, anime) in a later file
    anime_rows_in: int
    anime_accepted: int
    anime_quarantined: int
    ratings_without_metadata: int  # accepted ratings whose anime is not in anime.csv (kept)
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)  # the same four counts, file by file
    unrated_by_status: dict[str, int] = field(default_factory=dict)  # watched / watching / dropped / …

    def __post_init__(self) -> None:
        for name, c in [("all files", asdict(self)), *self.per_source.items()]:
            if c["rows_in"] != c["accepted"] + c["unrated"] + c["quarantined"] + c["superseded"]:
                raise AssertionError(f"counts of {name} do not reconcile: {c}")


@dataclass(frozen=True)
class ScaleCheck:
    """The declared rating scale against the accepted ratings."""

    minimum: int
    maximum: int
    observed_min: int | None
    observed_max: int | None

    @property
    def warning(self) -> str | None:
        """Set when the data use only part of the scale (a 1–5 data set read as 1–10, say)."""
        if self.observed_min is None or (self.observed_min, self.observed_max) == (self.minimum, self.maximum):
            return None
        return (f"the ratings use only {self.observed_min}-{self.observed_max} of the declared {self.minimum}-"
                f"{self.maximum} scale; if their scale is {self.observed_min}-{self.observed_max}, say so with "
                f"RATING_SCALE={self.observed_min}-{self.observed_max} (make pipeline) or rating_scale = "
                f"\"{self.observed_min}-{self.observed_max}\" in dataset.toml beside the data")


@dataclass(frozen=True)
class ValidatedData:
    ratings: pa.Table  # accepted ratings: user_id, anime_id, rating
    unrated: pa.Table  # interactions without a rating: user_id, anime_id, watching_status (0 = not given)
    quarantine: pa.Table  # rating rows left out: source, row_number, user_id, anime_id, rating, reason
    anime: pa.Table  # accepted anime metadata
    anime_quarantine: pa.Table  # anime.csv rows left out, with reason
    counts: ValidationCounts
    reports: list[SuiteReport]
    scale: ScaleCheck

    def summary(self) -> str:
        lines = [line for report in self.reports for line in report.summary_lines()]
        return "\n".join(lines + ([f"warning: {self.scale.warning}"] if self.scale.warning else []))

    @functools.cached_property
    def data_version(self) -> str:
        """Names the matrix folder and tells whether the data changed since the last trained run."""
        return data_version_of(self.ratings, self.unrated)


def data_version_of(ratings: pa.Table, unrated: pa.Table | None = None) -> str:
    """Content hash of the accepted ratings and of the interactions without a rating (the ranking model learns
    from both), independent of row order in the source files."""
    digest = multiset_digest(*(ratings[name] for name in RATING_COLUMNS))
    if unrated is None or unrated.num_rows == 0:
        return digest[:16]
    listed = multiset_digest(*(unrated[name] for name in ("user_id", "anime_id", "watching_status")))
    return hashlib.sha256(f"{digest}:{listed}".encode()).hexdigest()[:16]


def _load_suite(path: Path):
    import great_expectations as gx

    with path.open() as handle:
        return gx.ExpectationSuite(**json.load(handle))


def _column_of(kwargs: dict[str, Any]) -> str:
    return kwargs.get("column") or ",".join(kwargs.get("column_list", []))


@functools.cache
def _gx_context():
    """One ephemeral GX context per process (each new one makes a temp docs folder)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)  # temp-dir notices
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _as_pandas(table: pa.Table) -> pd.DataFrame:
    """numpy int64 columns where a column has no nulls (GX is ~3x faster on them); nullable Int64 where a
    column has nulls (say, cells that did not parse), so that its type still reads as an integer."""
    nullable = {field.name for field in table.schema if field.type == pa.int64() and table[field.name].null_count}
    frame = table.to_pandas()
    for name in nullable:
        frame[name] = table[name].to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return frame


def _batches(table: pa.Table, key_column: str | None, batch_rows: int) -> list[np.ndarray | None]:
    """Row numbers of each batch (None: one batch, the whole table). Rows are split by their key's hash, so that
    every row of one key lands in the same batch and a uniqueness expectation over the key stays exact batch by
    batch."""
    n_batches = -(-table.num_rows // batch_rows)
    if n_batches <= 1 or key_column is None:
        return [None]
    keys = pc.fill_null(table[key_column], 0).to_numpy()
    labels = keys % n_batches
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.searchsorted(labels[order], np.arange(1, n_batches)))


@dataclass(frozen=True)
class SuiteBatch:
    """One batch of a suite's validation, self-contained so that it can run in another process (a Dask worker)."""

    suite_path: Path
    source: str
    parameters: dict[str, Any]
    table: pa.Table  # the batch's rows
    rows: np.ndarray | None  # their row numbers in the whole table (None: the batch is the whole table)
    label: str  # which batch, for logs and task names: "rating.csv, batch 3 of 15"
    engine: str  # Settings.validation_engine


@dataclass(frozen=True)
class BatchOutcome:
    """Per expectation, in the order of GX's results (the same for every batch of a suite): what it is, the
    failing row numbers (of the whole table), GX's unexpected count and success; and GX's own result for the batch
    (per-row lists dropped)."""

    expectations: list[tuple[str, str, str, str | None]]  # type, column, on_failure, quarantine reason
    failing: list[np.ndarray]
    unexpected: list[int]
    success: list[bool]
    gx_result: dict[str, Any]


BatchMap = Callable[[Iterator[SuiteBatch]], list[BatchOutcome]]  # runs validate_batch on each, results in order


def _validate_with_gx(suite, batch: SuiteBatch):
    """GX's pandas engine on the batch: its suite result and, per expectation, the failing positions."""
    batch_definition = (_gx_context().data_sources.add_or_update_pandas(f"{suite.name}-source")
                        .add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all"))
    gx_batch = batch_definition.get_batch(batch_parameters={"dataframe": _as_pandas(batch.table)})
    result = gx_batch.validate(suite, expectation_parameters=batch.parameters, result_format="COMPLETE")
    return result, [np.asarray(item.result.get("unexpected_index_list") or [], dtype=np.int64)
                    for item in result.results]


def validate_batch(batch: SuiteBatch) -> BatchOutcome:
    """Run the suite on one batch; a failing `stop` expectation (or one that could not be evaluated) raises the
    one-line PipelineInputError naming the source and column."""
    suite = _load_suite(batch.suite_path)
    if batch.engine == "arrow" and evaluates(suite):
        result, positions = validate_table(suite, batch.table, batch.parameters)
    else:
        result, positions = _validate_with_gx(suite, batch)
    expectations, failing, unexpected, success = [], [], [], []
    for item, failing_positions in zip(result.results, positions, strict=True):
        config = item.expectation_config
        meta = config.meta or {}
        expectations.append((config.type, _column_of(config.kwargs), meta.get("on_failure", "stop"),
                             meta.get("reason")))
        raised = (item.exception_info or {}).get("raised_exception")
        if raised or (not item.success and (config.meta or {}).get("on_failure", "stop") == "stop"):
            detail = item.exception_info.get("exception_message") if raised else item.result.get("observed_value")
            raise PipelineInputError(f"{batch.source}: column '{_column_of(config.kwargs)}' failed {config.type} "
                                     f"({detail})")
        failing.append(failing_positions if batch.rows is None else batch.rows[failing_positions])
        unexpected.append(int(item.result.get("unexpected_count") or 0))
        success.append(bool(item.success))
    return BatchOutcome(expectations, failing, unexpected, success, _compact(result.to_json_dict()))


def validate_batches_here(batches: Iterator[SuiteBatch]) -> list[BatchOutcome]:
    """One batch after another in this process (one batch's dataframe in memory at a time)."""
    return [validate_batch(batch) for batch in batches]


def run_suite(table: pa.Table, suite_path: Path, source: str, parameters: dict[str, Any] | None = None,
              batch_rows: int | None = None, map_batches: BatchMap = validate_batches_here, engine: str = "arrow",
              ) -> tuple[SuiteReport, pa.Array]:
    """Validate `table` against a JSON suite; return the report and a per-row quarantine reason (null = ok).

    Tables larger than `batch_rows` (None: no limit) are validated in batches (split by the suite's
    `meta.batch_key` column) so that GX's memory follows the batch, not the table, or so that Dask workers share
    them; `map_batches` runs them (here, one after another, or as tasks on a Dask cluster: flows/cluster.py).
    Batches are split by key, so the result does not depend on how many.
    """
    suite = _load_suite(suite_path)
    split = _batches(table, (suite.meta or {}).get("batch_key"), batch_rows or max(table.num_rows, 1))
    batches = (SuiteBatch(suite_path, source, parameters or {}, table if rows is None else table.take(rows), rows,
                          f"{source}, batch {number} of {len(split)}", engine) for number, rows in enumerate(split, 1))
    results = map_batches(batches)
    failures, outcomes = [], []
    for number, (kind, column, on_failure, why) in enumerate(results[0].expectations):
        failing = np.concatenate([result.failing[number] for result in results])
        if failing.size:
            failures.append((why, failing))
        outcomes.append(ExpectationOutcome(kind, column, all(result.success[number] for result in results),
                                           sum(result.unexpected[number] for result in results), on_failure))
    reason = _reasons(table.num_rows, failures)
    quarantined = len(reason) - reason.null_count
    gx_results = [result.gx_result for result in results]
    gx_result = gx_results[0] if len(gx_results) == 1 else {"success": all(r["success"] for r in gx_results),
                                                            "batches": gx_results}
    report = SuiteReport(suite.name, source, table.num_rows, quarantined, outcomes, gx_result)
    return report, reason


def _reasons(n_rows: int, failures: list[tuple[str, np.ndarray]]) -> pa.Array:
    """Each row's reasons joined by "; " in the suite's order, null where none (null-typed when no row failed: no
    buffer per row). Joined on the failing rows only, then placed: a reason per row of a 57M-row table would pass
    Arrow's 2 GB limit of one string array."""
    if not failures:
        return pa.nulls(n_rows)
    rows = np.unique(np.concatenate([failing for _, failing in failures]))
    joined = pa.nulls(len(rows), pa.string())
    for why, failing in failures:
        mask = np.zeros(len(rows), dtype=bool)
        mask[np.searchsorted(rows, failing)] = True
        joined = pc.if_else(mask, pc.binary_join_element_wise(joined, why, "; ", null_handling="skip"), joined)
    position = np.full(n_rows, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    return joined.take(pa.array(position, mask=position < 0))


def _compact(gx_result: dict[str, Any]) -> dict[str, Any]:
    """Drop the full per-row lists (they can be millions long); keep GX's partial samples."""
    for item in gx_result.get("results", []):
        for key in ("unexpected_index_list", "unexpected_list", "unexpected_index_query"):
            item.get("result", {}).pop(key, None)
    return gx_result


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


def validate(raw: RawData, settings: Settings, map_batches: BatchMap | None = None) -> ValidatedData:
    """Apply the suites; quarantine failing rows; fail if too large a share of rows is quarantined.
    `map_batches` runs the batches of every suite elsewhere (a Dask cluster; None: here, see run_suite).

    Every row ends in exactly one of: accepted rating, interaction without a rating, quarantine, or
    superseded (a newer file has the same pair), and the counts reconcile file by file.
    """
    allowed = [settings.unrated_value, *range(settings.rating_min, settings.rating_max + 1)]
    run = _suite_runner(settings, map_batches)
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
    reason, reports, sources = rating_reason, [rating_report, anime_report], raw.sources
    if watch_list is not None:
        watch_rows, watch_reason, watch_report = watch_list
        _check_quarantine_share(raw.layout.watch_list_file, watch_reason, settings)
        rows = pa.concat_tables([watch_rows, rows], promote_options="permissive")
        parts = [*chunks_of(watch_reason), *chunks_of(rating_reason)]
        same_type = watch_reason.type == rating_reason.type  # else one side is null-typed: no row failed there
        reason = pa.chunked_array(parts if same_type else [part.cast(pa.string()) for part in parts])
        reports.insert(1, watch_report)
        sources = (raw.layout.watch_list_file, *raw.sources)

    ok = pc.is_null(reason)
    valid = ok.to_numpy(zero_copy_only=False)
    # With one source, pairs are already unique (a repeat within a file is quarantined by the suite).
    current = _newest_per_pair(rows, valid) if len(sources) > 1 else valid
    unrated_mask = current & boolean_mask(pc.equal(rows["rating"], settings.unrated_value))
    if offset:  # the watch list is source 0: its entries that are current are interactions
        unrated_mask |= current & boolean_mask(pc.less(rows["source_rank"], offset))
    rated_mask = current & ~unrated_mask
    ratings = _where(rows.select(RATING_COLUMNS), rated_mask)
    unrated = _where(rows.select(["user_id", "anime_id", "watching_status"]), unrated_mask)
    left_out = rows.select(["source_rank", "row_number", *RATING_COLUMNS]).append_column("reason", reason).filter(
        pc.invert(ok))
    quarantine = _with_text_reason(left_out.drop_columns(["source_rank"]).add_column(
        0, "source", pa.array(sources).take(left_out["source_rank"])))
    anime_ok = pc.is_null(anime_reason)
    anime = raw.anime.drop_columns(["row_number", "parse_error"]).filter(anime_ok)
    anime_quarantine = _with_text_reason(raw.anime.select(["row_number", "anime_id", "name"]).append_column(
        "reason", anime_reason).filter(pc.invert(anime_ok)))

    known_anime = pc.is_in(ratings["anime_id"], value_set=anime["anime_id"])
    # Each count from its own rows (never one as the remainder of the others), so that the reconciliation in
    # ValidationCounts fails if a row lands in two places or in none.
    starts = _runs(rows["source_rank"], len(sources))
    superseded_mask = valid & ~current  # valid, but a later file has the same pair

    def per_file(mask: np.ndarray) -> list[int]:
        return [np.count_nonzero(mask[start:end]) for start, end in zip(starts[:-1], starts[1:], strict=True)]

    per_source = {"rows_in": np.diff(starts), "accepted": per_file(rated_mask), "unrated": per_file(unrated_mask),
                  "quarantined": per_file(~valid), "superseded": per_file(superseded_mask)}
    statuses = np.bincount(unrated["watching_status"].to_numpy().astype(np.int64), minlength=7)
    counts = ValidationCounts(
        rows_in=raw.rows_in, accepted=ratings.num_rows, unrated=unrated.num_rows, quarantined=quarantine.num_rows,
        superseded=int(superseded_mask.sum()),
        anime_rows_in=raw.anime.num_rows, anime_accepted=anime.num_rows, anime_quarantined=anime_quarantine.num_rows,
        ratings_without_metadata=int(pc.sum(pc.invert(known_anime)).as_py() or 0),
        per_source={name: {key: int(column[i]) for key, column in per_source.items()}
                    for i, name in enumerate(sources)},
        unrated_by_status={WATCHING_STATUSES[code]: int(statuses[code]) for code in WATCHING_STATUSES
                           if statuses[code]},
    )
    observed = pc.min_max(ratings["rating"]).as_py() if ratings.num_rows else {"min": None, "max": None}
    scale = ScaleCheck(settings.rating_min, settings.rating_max, observed["min"], observed["max"])
    return ValidatedData(ratings, unrated, quarantine, anime, anime_quarantine, counts, reports, scale)
