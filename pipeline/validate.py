"""Validate: run the Great Expectations suites in `expectations/` and split rows into
accepted ratings, unrated watch history and quarantine (each quarantined row with its reason).

Every expectation in a suite says what its failure means (`meta.on_failure`): `stop` fails the run
with one line naming file and column; `quarantine` moves the failing rows aside with `meta.reason`.
"""

from __future__ import annotations

import functools
import hashlib
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
    ordered = ratings.select(["user_id", "anime_id", "rating"]).sort_by([("user_id", "ascending"),
                                                                          ("anime_id", "ascending")])
    digest = hashlib.sha256()
    for name in ordered.column_names:
        digest.update(ordered[name].to_numpy().astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


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


def run_suite(table: pa.Table, suite_path: Path, source: str,
              parameters: dict[str, Any] | None = None) -> tuple[SuiteReport, pa.Array]:
    """Validate `table` against a JSON suite; return the report and a per-row quarantine reason (null = ok)."""
    suite = _load_suite(suite_path)
    data_source = _gx_context().data_sources.add_or_update_pandas(f"{suite.name}-source")
    batch_definition = data_source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
    frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, expectation_parameters=parameters or {}, result_format="COMPLETE")

    reason = pa.nulls(table.num_rows, pa.string())
    outcomes = []
    for item in result.results:
        config = item.expectation_config
        on_failure = (config.meta or {}).get("on_failure", "stop")
        column = _column_of(config.kwargs)
        raised = (item.exception_info or {}).get("raised_exception")
        if raised or (not item.success and on_failure == "stop"):
            detail = item.exception_info.get("exception_message") if raised else item.result.get("observed_value")
            raise PipelineInputError(f"{source}: column '{column}' failed {config.type} ({detail})")
        unexpected = np.asarray(item.result.get("unexpected_index_list") or [], dtype=np.int64)
        if unexpected.size:
            mask = np.zeros(table.num_rows, dtype=bool)
            mask[unexpected] = True
            reason = pc.if_else(mask, pc.binary_join_element_wise(
                reason, config.meta["reason"], "; ", null_handling="skip"), reason)
        outcomes.append(ExpectationOutcome(config.type, column, bool(item.success),
                                           int(item.result.get("unexpected_count") or 0), on_failure))
    quarantined = int(pc.sum(pc.is_valid(reason)).as_py() or 0)
    report = SuiteReport(suite.name, source, table.num_rows, quarantined, outcomes, _compact(result.to_json_dict()))
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
        " + ".join(raw.sources), {"allowed_ratings": allowed})
    rating_reason = pc.coalesce(raw.ratings["parse_error"], rating_reason)
    anime_report, anime_reason = run_suite(
        raw.anime.drop_columns(["row_number", "parse_error"]), settings.expectations_dir / "anime.json", ANIME_FILE)
    anime_reason = pc.coalesce(raw.anime["parse_error"], anime_reason)

    rating_ok = pc.is_null(rating_reason)
    current = _newest_per_pair(raw.ratings, rating_ok.to_numpy(zero_copy_only=False))
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
