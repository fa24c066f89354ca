"""The suites' expectations evaluated with Arrow compute, results in Great Expectations' own form.

GX's pandas engine makes a pandas copy of each batch, a fingerprint hash of it and checks uniqueness by
`duplicated` (its cost per million rows: `make bench PARTS=data-path`, BENCHMARKS.md); these column rules are one
vectorized pass each.
The suite is still loaded and checked by GX (its expectation classes parse the JSON, so `expectations/` stays the
one statement of the rules), the results are GX `ExpectationValidationResult`s with GX's counts, and a suite that
uses anything this module does not evaluate exactly as GX does (another expectation type, `row_condition`, …) is
left to GX (`evaluates`). tests/reliability checks that both give the same quarantine on every bad-input case.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.validation.arrow_kernels import _like, _repeated, _rows, boolean_mask

PARTIAL = 20  # GX's partial_unexpected_* lists hold the first 20 failing rows


def _column_values(expectation, table: pa.Table, parameters: dict[str, Any]) -> tuple[np.ndarray, int]:
    """(failing rows, missing count) of a column-values expectation: nulls are missing, never unexpected (but for
    not_be_null, where they are the unexpected ones and none is missing)."""
    values = table[expectation.column]
    kind = expectation.expectation_type
    if kind == "expect_column_values_to_not_be_null":
        return (_rows(pc.is_null(values)) if values.null_count else np.zeros(0, np.int64)), 0
    if kind == "expect_column_values_to_be_between":
        bounds = [(pc.less_equal if expectation.strict_min else pc.less, expectation.min_value),
                  (pc.greater_equal if expectation.strict_max else pc.greater, expectation.max_value)]
        tests = [compare(values, _like(values, _resolved(bound, parameters))) for compare, bound in bounds
                 if bound is not None]
        return (_rows(functools.reduce(pc.or_, tests)) if tests else np.zeros(0, np.int64)), values.null_count
    if kind == "expect_column_values_to_be_in_set":
        allowed = pa.array(_resolved(expectation.value_set, parameters)).cast(values.type)
        outside = pc.invert(pc.is_in(values, value_set=allowed))
        return _rows(pc.and_(outside, pc.is_valid(values)) if values.null_count else outside), values.null_count
    if kind == "expect_column_values_to_match_regex":  # searched anywhere in the value, as GX's pandas engine does
        unmatched = pc.invert(pc.fill_null(pc.match_substring_regex(values, expectation.regex), True))
        return _rows(unmatched), values.null_count
    if kind == "expect_column_values_to_be_unique":
        present = boolean_mask(pc.is_valid(values)) if values.null_count else None
        return np.flatnonzero(_repeated([values], present)), values.null_count
    raise AssertionError(f"{kind} is not evaluated here (see evaluates)")


def _compound_unique(expectation, table: pa.Table) -> tuple[np.ndarray, int]:
    """GX's compound uniqueness: every copy of a repeated combination fails; missing values equal each other
    (pandas `duplicated`); rows are skipped (and counted missing) as `ignore_row_if` says."""
    columns = [table[name] for name in expectation.column_list]
    kept = None
    if any(column.null_count for column in columns) and expectation.ignore_row_if != "never":
        valid = [pc.is_valid(column) for column in columns]
        any_valid = functools.reduce(pc.or_ if expectation.ignore_row_if == "all_values_are_missing" else pc.and_,
                                     valid)
        kept = boolean_mask(any_valid)
    return np.flatnonzero(_repeated(columns, kept)), 0 if kept is None else int(len(kept) - kept.sum())


def _resolved(value, parameters: dict[str, Any]):
    """A kwarg's value, with `{"$PARAMETER": name}` looked up as GX does."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        return parameters[value["$PARAMETER"]]
    return value


COLUMN_VALUE_KINDS = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
                      "expect_column_values_to_be_in_set", "expect_column_values_to_match_regex",
                      "expect_column_values_to_be_unique")  # _column_values


def evaluates(suite) -> bool:
    """Whether every expectation of the (GX-parsed) suite is one this module evaluates as GX does."""
    for expectation in suite.expectations:
        kind = expectation.expectation_type
        if kind == "expect_column_to_exist":
            if getattr(expectation, "column_index", None) is not None:
                return False
        elif kind == "expect_column_values_to_be_of_type":
            if _arrow_type(expectation.type_) is None:
                return False
        elif kind not in (*COLUMN_VALUE_KINDS, "expect_compound_columns_to_be_unique"):
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
                rows, missing = _compound_unique(expectation, table)
                values = table.select(names)
            else:
                rows, missing = _column_values(expectation, table, parameters)
                values = table[expectation.column]
            success, outcome = _counts(expectation, kind, values, rows, missing, table.num_rows)
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
    if count:  # a filter, not a take: Arrow's take of a chunked column first joins its chunks into one copy
        selected = np.zeros(total, dtype=bool)
        selected[rows] = True
        unexpected = values.filter(selected).to_pylist()
    else:
        unexpected = []
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
