"""Great Expectations suites run on Arrow tables in batches (by GX's engine or the Arrow one), each failing row given
its reason."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import PipelineInputError
from pipeline.settings import Settings
from pipeline.validation.arrow_engine import evaluates, validate_table
from pipeline.validation.results import ExpectationOutcome, SuiteReport


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
    """numpy int64 columns where a column has no nulls (GX is faster on them); nullable Int64 where a
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


BatchMap = Callable[[Iterator[SuiteBatch]], list[BatchOutcome]]  # runs validate_batch on each, results in order
DEFAULT_ENGINE = Settings.model_fields["validation_engine"].default  # GX's own, as the settings say


def run_suite(table: pa.Table, suite_path: Path, source: str, parameters: dict[str, Any] | None = None,
              batch_rows: int | None = None, map_batches: BatchMap = validate_batches_here,
              engine: str = DEFAULT_ENGINE) -> tuple[SuiteReport, pa.Array]:
    """Validate `table` against a JSON suite; return the report and a per-row quarantine reason (null = ok). A
    failing `neutral` expectation quarantines nothing: the report names its column's failing rows, whose cells the
    caller leaves out.

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
    failures, outcomes, neutralized = [], [], {}
    for number, (kind, column, on_failure, why) in enumerate(results[0].expectations):
        failing = np.concatenate([result.failing[number] for result in results])
        if failing.size and on_failure == "neutral":  # the cell is left out (null), the row kept
            neutralized[column] = np.union1d(neutralized.get(column, np.empty(0, np.int64)), failing)
        elif failing.size:
            failures.append((why, failing))
        outcomes.append(ExpectationOutcome(kind, column, all(result.success[number] for result in results),
                                           sum(result.unexpected[number] for result in results), on_failure))
    reason = _reasons(table.num_rows, failures)
    quarantined = len(reason) - reason.null_count
    gx_results = [result.gx_result for result in results]
    gx_result = gx_results[0] if len(gx_results) == 1 else {"success": all(r["success"] for r in gx_results),
                                                            "batches": gx_results}
    report = SuiteReport(suite.name, source, table.num_rows, quarantined, outcomes, gx_result, neutralized)
    return report, reason


def _reasons(n_rows: int, failures: list[tuple[str, np.ndarray]]) -> pa.Array:
    """Each row's reasons joined by "; " in the suite's order, null where none (null-typed when no row failed: no
    buffer per row). Joined on the failing rows only, then placed: a reason string per row of a large table would
    pass Arrow's 2 GB limit of one string array."""
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
