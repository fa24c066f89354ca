"""The suites' expectations evaluated with Arrow compute, results in Great Expectations' own form.

GX's pandas engine costs ~1 s per million rating rows (a pandas copy of each batch, a fingerprint hash of it,
uniqueness by `duplicated`); these column rules are one vectorized pass each. The suite is still loaded and
checked by GX (its expectation classes parse the JSON, so `expectations/` stays the one statement of the rules),
the results are GX `ExpectationValidationResult`s with GX's counts, and a suite that uses anything this module does
not evaluate exactly as GX does (another expectation type, `row_condition`, …) is left to GX (`evaluates`).
tests/reliability checks that both give the same quarantine on every bad-input case.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PARTIAL = 20  # GX's partial_unexpected_* lists hold the first 20 failing rows


def _column_values(expectation, table: pa.Table, parameters: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(unexpected, missing) masks of a column-values expectation; nulls are missing, never unexpected."""
    values = table[expectation.column]
    missing = pc.is_null(values)
    kind = expectation.expectation_type
    if kind == "expect_column_values_to_not_be_null":
        return _mask(missing), np.zeros(len(values), dtype=bool)
    if kind == "expect_column_values_to_be_between":
        outside = pa.scalar(False)
        if expectation.min_value is not None:
            outside = pc.or_(outside, (pc.less_equal if expectation.strict_min else pc.less)(
                values, _resolved(expectation.min_value, parameters)))
        if expectation.max_value is not None:
            outside = pc.or_(outside, (pc.greater_equal if expectation.strict_max else pc.greater)(
                values, _resolved(expectation.max_value, parameters)))
        return _mask(outside, len(values)), _mask(missing)
    if kind == "expect_column_values_to_be_in_set":
        allowed = pa.array(_resolved(expectation.value_set, parameters)).cast(values.type)
        return _mask(pc.invert(pc.is_in(values, value_set=allowed))) & ~_mask(missing), _mask(missing)
    if kind == "expect_column_values_to_be_unique":
        return _repeated([values]) & ~_mask(missing), _mask(missing)
    raise AssertionError(f"{kind} is not evaluated here (see evaluates)")


def _compound_unique(expectation, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """GX's compound uniqueness: every copy of a repeated combination fails; missing values equal each other
    (pandas `duplicated`); rows are skipped as `ignore_row_if` says."""
    columns = [table[name] for name in expectation.column_list]
    nulls = [_mask(pc.is_null(column)) for column in columns]
    skip = {"all_values_are_missing": np.logical_and.reduce(nulls),
            "any_value_is_missing": np.logical_or.reduce(nulls),
            "never": np.zeros(table.num_rows, dtype=bool)}[expectation.ignore_row_if]
    repeated = _repeated(columns, ~skip)
    return repeated, skip


def _repeated(columns: list[pa.ChunkedArray | pa.Array], rows: np.ndarray | None = None) -> np.ndarray:
    """Rows whose combination of values occurs more than once (among `rows`; a null equals a null)."""
    n = len(columns[0])
    rows = np.ones(n, dtype=bool) if rows is None else rows
    key, span = np.zeros(n, dtype=np.uint64), 1
    for column in columns:
        codes, size = _codes(column)
        if span * size >= 2 ** 63:  # would overflow one 64-bit key: rank the combinations so far first
            distinct, inverse = np.unique(key, return_inverse=True)
            key, span = inverse.astype(np.uint64), len(distinct)
        key = key * np.uint64(size) + codes
        span *= size
    candidates = np.flatnonzero(rows)
    keys = key[candidates]
    if keys.size < 2 or bool(np.all(keys[1:] > keys[:-1])):  # files sorted by user, then anime: no sort needed
        return np.zeros(n, dtype=bool)
    order = np.argsort(keys)
    ordered = keys[order]
    same = ordered[1:] == ordered[:-1]
    repeated = np.zeros(len(ordered), dtype=bool)
    repeated[1:] |= same
    repeated[:-1] |= same
    result = np.zeros(n, dtype=bool)
    result[candidates[order[repeated]]] = True
    return result


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, int]:
    """Each value as a code in [0, size), null as the largest: integers offset by their minimum when they span
    less than 2**32, other values by their position among the distinct values."""
    if pa.types.is_integer(column.type) and column.null_count < len(column):
        bounds = pc.min_max(column).as_py()
        if bounds["max"] - bounds["min"] < 2 ** 32:
            values = pc.fill_null(column, bounds["max"] + 1).to_numpy()
            return (values - bounds["min"]).astype(np.uint64), bounds["max"] - bounds["min"] + 2
    whole = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(whole)
    size = len(encoded.dictionary)
    return pc.fill_null(encoded.indices, size).to_numpy().astype(np.uint64), size + 1


def _mask(values, length: int | None = None) -> np.ndarray:
    """A boolean Arrow result (or scalar) as a numpy mask; null counts as False."""
    if isinstance(values, pa.Scalar):
        return np.full(length, bool(values.as_py()), dtype=bool)
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _resolved(value, parameters: dict[str, Any]):
    """A kwarg's value, with `{"$PARAMETER": name}` looked up as GX does."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        return parameters[value["$PARAMETER"]]
    return value


_EVALUATORS: dict[str, Callable] = {
    "expect_column_values_to_not_be_null": _column_values,
    "expect_column_values_to_be_between": _column_values,
    "expect_column_values_to_be_in_set": _column_values,
    "expect_column_values_to_be_unique": _column_values,
}


def evaluates(suite) -> bool:
    """Whether every expectation of the (GX-parsed) suite is one this module evaluates as GX does."""
    for expectation in suite.expectations:
        kind = expectation.expectation_type
        if kind in ("expect_column_to_exist",):
            if getattr(expectation, "column_index", None) is not None:
                return False
        elif kind == "expect_column_values_to_be_of_type":
            if _arrow_type(expectation.type_) is None:
                return False
        elif kind not in (*_EVALUATORS, "expect_compound_columns_to_be_unique"):
            return False
        if getattr(expectation, "row_condition", None) or getattr(expectation, "condition_parser", None):
            return False
    return True


def _arrow_type(name: str) -> pa.DataType | None:
    try:
        return pa.type_for_alias(name)
    except ValueError:
        return None


def _in_gx_order(expectations: list) -> list:
    """The order GX evaluates a suite in (Validator.process_expectations_for_validation): grouped by column, in
    order of first appearance; expectations without one column form one group."""
    groups: dict[str, list] = {}
    for expectation in expectations:
        groups.setdefault(getattr(expectation, "column", None) or "\0", []).append(expectation)
    return [expectation for group in groups.values() for expectation in group]


def validate_table(suite, table: pa.Table, parameters: dict[str, Any]):
    """Evaluate the suite on `table`: (GX's suite result, and per expectation the failing row numbers)."""
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult

    results, failing = [], []
    for expectation in _in_gx_order(suite.expectations):
        config = expectation.configuration
        config.kwargs = {"batch_id": f"{suite.name}-arrow",
                         **{key: _resolved(value, parameters) for key, value in config.kwargs.items()}}
        kind = expectation.expectation_type
        outcome: dict[str, Any] = {}
        rows = np.zeros(0, dtype=np.int64)
        names = getattr(expectation, "column_list", None) or [expectation.column]
        absent = [name for name in names if name not in table.column_names]
        if kind == "expect_column_to_exist":
            success = not absent
        elif absent:
            results.append(ExpectationValidationResult(
                success=False, expectation_config=config, result={}, exception_info={
                    "raised_exception": True, "exception_traceback": None,
                    "exception_message": f'The column "{absent[0]}" in BatchData does not exist.'}))
            failing.append(rows)
            continue
        elif kind == "expect_column_values_to_be_of_type":
            observed = table.schema.field(expectation.column).type
            success, outcome = observed == _arrow_type(expectation.type_), {"observed_value": str(observed)}
        else:
            if kind == "expect_compound_columns_to_be_unique":
                unexpected, missing = _compound_unique(expectation, table)
                values = table.select(names)
            else:
                unexpected, missing = _EVALUATORS[kind](expectation, table, parameters)
                values = table[expectation.column]
            rows = np.flatnonzero(unexpected)
            success, outcome = _counts(expectation, kind, values, rows, int(missing.sum()), table.num_rows)
        results.append(ExpectationValidationResult(success=success, expectation_config=config, result=outcome,
                                                   exception_info={"raised_exception": False,
                                                                   "exception_traceback": None,
                                                                   "exception_message": None}))
        failing.append(rows)
    evaluated = sum(1 for r in results if not r.exception_info["raised_exception"])
    passed = sum(1 for r in results if r.success)
    statistics = {"evaluated_expectations": evaluated, "successful_expectations": passed,
                  "unsuccessful_expectations": evaluated - passed,
                  "success_percent": 100.0 * passed / evaluated if evaluated else None}
    suite_result = ExpectationSuiteValidationResult(success=all(r.success for r in results), results=results,
                                                    suite_name=suite.name, statistics=statistics,
                                                    meta={"engine": "arrow"})
    return suite_result, failing


def _counts(expectation, kind: str, values, rows: np.ndarray, missing: int, total: int) -> tuple[bool, dict]:
    """GX's success (`mostly` of the non-missing values) and its summary, computed as GX computes it
    (great_expectations.expectations.expectation._format_map_output) so that the numbers compare equal."""
    count = len(rows)
    nonmissing = total - missing
    success = count == 0 if expectation.mostly >= 1 else (nonmissing == 0 or
                                                          (nonmissing - count) / nonmissing >= expectation.mostly)
    unexpected = values.take(pa.array(rows)).to_pylist()
    total_percent = count / total * 100 if total else None
    if kind == "expect_column_values_to_not_be_null":  # GX counts no missing values for it
        percent = total_percent
    else:
        percent = count / nonmissing * 100 if total and nonmissing else None
    outcome = {"element_count": total, "unexpected_count": count, "unexpected_percent": percent,
               "partial_unexpected_list": unexpected[:PARTIAL]}
    if kind != "expect_column_values_to_not_be_null":
        outcome |= {"missing_count": missing, "missing_percent": missing / total * 100 if total else None,
                    "unexpected_percent_total": total_percent, "unexpected_percent_nonmissing": percent}
    hashable = [tuple(row.values()) for row in unexpected] if isinstance(values, pa.Table) else unexpected
    try:
        outcome["partial_unexpected_counts"] = [
            {"value": value, "count": n}
            for value, n in sorted(Counter(hashable).most_common(PARTIAL), key=lambda item: (-item[1], item[0]))]
    except TypeError:
        outcome["partial_unexpected_counts"] = [{"error": "partial_exception_counts requires a hashable type"}]
    outcome["partial_unexpected_index_list"] = [int(row) for row in rows[:PARTIAL]]
    return success, outcome
