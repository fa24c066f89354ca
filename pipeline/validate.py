"""Validate: run the Great Expectations suites in `expectations/` and split rows into
accepted ratings, unrated watch history and quarantine (each quarantined row with its reason).

Every expectation in a suite says what its failure means (`meta.on_failure`): `stop` fails the run
with one line naming file and column; `quarantine` moves the failing rows aside with `meta.reason`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import PipelineInputError
from pipeline.hashing import multiset_digest
from pipeline.ingest import ANIME_FILE, RawData
from pipeline.settings import Settings

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

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
    unrated: int
    quarantined: int
    superseded: int  # valid rows replaced by a newer rating of the same (user, anime) in a later file
    anime_rows_in: int
    anime_accepted: int
    anime_quarantined: int
    ratings_without_metadata: int  # accepted ratings whose anime is not in anime.csv (kept)

    def __post_init__(self) -> None:
        if self.rows_in != self.accepted + self.unrated + self.quarantined + self.superseded:
            raise AssertionError(f"counts do not reconcile: {self}")


@dataclass(frozen=True)
class ValidatedData:
    ratings: pa.Table  # accepted ratings: user_id, anime_id, rating
    unrated: pa.Table  # watched but unrated: user_id, anime_id
    quarantine: pa.Table  # rating rows left out: source, row_number, user_id, anime_id, rating, reason
    anime: pa.Table  # accepted anime metadata
    anime_quarantine: pa.Table  # anime.csv rows left out, with reason
    counts: ValidationCounts
    reports: list[SuiteReport]

    def summary(self) -> str:
        return "\n".join(line for report in self.reports for line in report.summary_lines())

    @functools.cached_property
    def data_version(self) -> str:
        """Names the matrix folder and tells whether the data changed since the last trained run."""
        return data_version_of(self.ratings)


def data_version_of(ratings: pa.Table) -> str:
    """Content hash of the accepted ratings, independent of row order in the source files."""
    return multiset_digest(*(ratings[name].to_numpy() for name in RATING_COLUMNS))[:16]


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


def _batches(table: pa.Table, key_column: str | None, batch_rows: int) -> list[np.ndarray]:
    """Row numbers of each batch. Rows are split by their key's hash, so that every row of one key
    lands in the same batch and a uniqueness expectation over the key stays exact batch by batch."""
    n_batches = -(-table.num_rows // batch_rows)
    if n_batches <= 1 or key_column is None:
        return [np.arange(table.num_rows)]
    keys = pc.fill_null(table[key_column], 0).to_numpy()
    labels = keys % n_batches
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.searchsorted(labels[order], np.arange(1, n_batches)))


def run_suite(table: pa.Table, suite_path: Path, source: str, parameters: dict[str, Any] | None = None,
              batch_rows: int = 4_000_000) -> tuple[SuiteReport, pa.Array]:
    """Validate `table` against a JSON suite; return the report and a per-row quarantine reason (null = ok).

    Large tables are validated in batches of about `batch_rows` (split by the suite's `meta.batch_key`
    column) so that memory follows the batch, not the table.
    """
    suite = _load_suite(suite_path)
    batch_definition = (_gx_context().data_sources.add_or_update_pandas(f"{suite.name}-source")
                        .add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all"))
    failing_rows: dict[int, list[np.ndarray]] = {}
    unexpected: dict[int, int] = {}
    success: dict[int, bool] = {}
    gx_results = []
    for rows in _batches(table, (suite.meta or {}).get("batch_key"), batch_rows):
        batch = batch_definition.get_batch(batch_parameters={"dataframe": _as_pandas(table.take(rows))})
        result = batch.validate(suite, expectation_parameters=parameters or {}, result_format="COMPLETE")
        gx_results.append(_compact(result.to_json_dict()))
        for number, item in enumerate(result.results):
            config = item.expectation_config
            raised = (item.exception_info or {}).get("raised_exception")
            if raised or (not item.success and (config.meta or {}).get("on_failure", "stop") == "stop"):
                detail = item.exception_info.get("exception_message") if raised else item.result.get("observed_value")
                raise PipelineInputError(f"{source}: column '{_column_of(config.kwargs)}' failed {config.type} "
                                         f"({detail})")
            batch_failing = np.asarray(item.result.get("unexpected_index_list") or [], dtype=np.int64)
            failing_rows.setdefault(number, []).append(rows[batch_failing])
            unexpected[number] = unexpected.get(number, 0) + int(item.result.get("unexpected_count") or 0)
            success[number] = success.get(number, True) and bool(item.success)

    reason = pa.nulls(table.num_rows, pa.string())
    outcomes = []
    for number, item in enumerate(result.results):
        config = item.expectation_config
        failing = np.concatenate(failing_rows[number])
        if failing.size:
            mask = np.zeros(table.num_rows, dtype=bool)
            mask[failing] = True
            reason = pc.if_else(mask, pc.binary_join_element_wise(
                reason, config.meta["reason"], "; ", null_handling="skip"), reason)
        outcomes.append(ExpectationOutcome(config.type, _column_of(config.kwargs), success[number],
                                           unexpected[number], (config.meta or {}).get("on_failure", "stop")))
    quarantined = int(pc.sum(pc.is_valid(reason)).as_py() or 0)
    gx_result = gx_results[0] if len(gx_results) == 1 else {"success": all(r["success"] for r in gx_results),
                                                            "batches": gx_results}
    report = SuiteReport(suite.name, source, table.num_rows, quarantined, outcomes, gx_result)
    return report, reason


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


def validate(raw: RawData, settings: Settings) -> ValidatedData:
    """Apply both suites; quarantine failing rows; fail if too large a share of ratings is quarantined."""
    allowed = [settings.unrated_value, *range(settings.rating_min, settings.rating_max + 1)]
    rating_report, rating_reason = run_suite(
        raw.ratings.select(SUITE_RATING_COLUMNS), settings.expectations_dir / "ratings.json",
        " + ".join(raw.sources), {"allowed_ratings": allowed}, settings.validation_batch_rows)
    rating_reason = pc.coalesce(raw.ratings["parse_error"], rating_reason)
    anime_report, anime_reason = run_suite(
        raw.anime.drop_columns(["row_number", "parse_error"]), settings.expectations_dir / "anime.json", ANIME_FILE)
    anime_reason = pc.coalesce(raw.anime["parse_error"], anime_reason)

    rating_ok = pc.is_null(rating_reason)
    valid = rating_ok.to_numpy(zero_copy_only=False)
    # With one source, pairs are already unique (a repeat within a file is quarantined by the suite).
    current = _newest_per_pair(raw.ratings, valid) if len(raw.sources) > 1 else valid
    unrated_mask = pc.and_(current, pc.equal(raw.ratings["rating"], settings.unrated_value))
    rated_mask = pc.and_(current, pc.invert(unrated_mask))
    ratings = raw.ratings.select(RATING_COLUMNS).filter(rated_mask)
    unrated = raw.ratings.select(["user_id", "anime_id"]).filter(unrated_mask)
    source_names = pa.array(raw.sources).take(raw.ratings["source_rank"])
    quarantine = (raw.ratings.select(["row_number", *RATING_COLUMNS]).add_column(0, "source", source_names)
                  .append_column("reason", rating_reason).filter(pc.invert(rating_ok)))
    anime_ok = pc.is_null(anime_reason)
    anime = raw.anime.drop_columns(["row_number", "parse_error"]).filter(anime_ok)
    anime_quarantine = (raw.anime.select(["row_number", "anime_id", "name"]).append_column("reason", anime_reason)
                        .filter(pc.invert(anime_ok)))

    share = quarantine.num_rows / max(raw.rows_in, 1)
    if share > settings.max_quarantine_share:
        top = pc.value_counts(quarantine["reason"]).to_pylist()
        top = sorted(top, key=lambda item: -item["counts"])[:3]
        reasons = "; ".join(f"{item['values']} ({item['counts']:,})" for item in top)
        limit = settings.max_quarantine_share
        raise PipelineInputError(f"{' + '.join(raw.sources)}: {share:.1%} of rows failed validation, above the "
                                 f"{limit:.0%} limit (max_quarantine_share); most common: {reasons}")

    known_anime = pc.is_in(ratings["anime_id"], value_set=anime["anime_id"])
    counts = ValidationCounts(
        rows_in=raw.rows_in, accepted=ratings.num_rows, unrated=unrated.num_rows, quarantined=quarantine.num_rows,
        superseded=raw.rows_in - ratings.num_rows - unrated.num_rows - quarantine.num_rows,
        anime_rows_in=raw.anime.num_rows, anime_accepted=anime.num_rows, anime_quarantined=anime_quarantine.num_rows,
        ratings_without_metadata=int(pc.sum(pc.invert(known_anime)).as_py() or 0),
    )
    return ValidatedData(ratings, unrated, quarantine, anime, anime_quarantine, counts,
                         [rating_report, anime_report])
