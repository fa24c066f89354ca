"""The suites' expectations evaluated with Arrow compute, results in Great Expectations' own form.

GX's pandas engine costs ~0.7 s per million rating rows (`make bench PARTS=data-path`: a pandas copy of each
batch, a fingerprint hash of it, uniqueness by `duplicated`); these column rules are one vectorized pass each.
The suite is still loaded and checked by GX (its expectation classes parse the JSON, so `expectations/` stays the
one statement of the rules), the results are GX `ExpectationValidationResult`s with GX's counts, and a suite that
uses anything this module does not evaluate exactly as GX does (another expectation type, `row_condition`, …) is
left to GX (`evaluates`). tests/reliability checks that both give the same quarantine on every bad-input case.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from typing import Any

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def _repeated(columns: list[pa.ChunkedArray | pa.Array], rows: np.ndarray | None = None) -> np.ndarray:
    """Rows whose combination of values occurs more than once (among `rows`, None: all; a null equals a null).
    Each combination becomes one 64-bit key (mixed radix of the columns' codes). Files sorted by user, then anime,
    have increasing keys: that is checked a run of rows at a time, without a key per row or a sort."""
    n = len(columns[0])
    coded = [_codes(column) for column in columns]
    repeated = np.zeros(n, dtype=bool)
    fits = math.prod(size for _, _, size in coded) < 2 ** 63
    if rows is None and fits and _keys_increase(coded):
        return repeated
    key, span = np.zeros(n, dtype=np.uint64), 1
    for values, low, size in coded:
        if span * size >= 2 ** 63:  # would overflow one 64-bit key: rank the combinations so far first
            distinct, inverse = np.unique(key, return_inverse=True)
            key, span = inverse.astype(np.uint64), len(distinct)
        offset = 0
        for chunk in chunks_of(values):
            _fold(key[offset:offset + len(chunk)], *_values(chunk), low, size)
            offset += len(chunk)
        span *= size
    candidates = None if rows is None else np.flatnonzero(rows)
    keys = key if candidates is None else key[candidates]
    if keys.size < 2 or _increasing(keys):
        return repeated
    twice = _repeated_values(_radix_sorted(keys, max(int(span - 1).bit_length(), 1)))
    if len(twice):
        found = np.flatnonzero(_members(keys, twice))
        repeated[found if candidates is None else candidates[found]] = True
    return repeated


@numba.njit(cache=True)
def _radix_sorted(keys: np.ndarray, bits: int) -> np.ndarray:
    """The keys sorted (least significant digit first, 11 bits a pass over the `bits` the keys use): a few linear
    passes where numpy's comparison sort took 9 s for 57M keys."""
    digits, width = 1 << 11, 11
    source, target = keys.copy(), np.empty_like(keys)
    for shift in range(0, bits, width):
        starts = np.zeros(digits + 1, np.int64)
        for value in source:
            starts[((value >> np.uint64(shift)) & np.uint64(digits - 1)) + 1] += 1
        for digit in range(digits):
            starts[digit + 1] += starts[digit]
        for value in source:
            digit = (value >> np.uint64(shift)) & np.uint64(digits - 1)
            target[starts[digit]] = value
            starts[digit] += 1
        source, target = target, source
    return source


@numba.njit(parallel=True, cache=True)
def _members(keys: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """Whether each key is one of the sorted `ordered` values (binary search; numpy's isin sorts both sides)."""
    member = np.zeros(len(keys), dtype=np.bool_)
    for i in numba.prange(len(keys)):
        j = np.searchsorted(ordered, keys[i])
        member[i] = j < len(ordered) and ordered[j] == keys[i]
    return member


@numba.njit(cache=True)
def _repeated_values(ordered: np.ndarray) -> np.ndarray:
    """The values that occur more than once in a sorted array, once each."""
    found = []
    for i in range(1, len(ordered)):
        if ordered[i] == ordered[i - 1] and (not found or found[-1] != ordered[i]):
            found.append(ordered[i])
    return np.array(found, dtype=ordered.dtype) if found else np.zeros(0, dtype=ordered.dtype)


def _keys_increase(coded: list[tuple[pa.ChunkedArray | pa.Array, int, int]]) -> bool:
    """Whether the rows' keys strictly increase (then no combination repeats), one run of rows at a time."""
    previous = None
    for batch in pa.table({str(i): values for i, (values, _, _) in enumerate(coded)}).to_batches():
        key = np.zeros(batch.num_rows, dtype=np.uint64)
        for column, (_, low, size) in zip(batch.columns, coded, strict=True):
            _fold(key, *_values(column), low, size)
        if not _increasing(key) or (previous is not None and len(key) and key[0] <= previous):
            return False
        previous = key[-1] if len(key) else previous
    return True


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[pa.ChunkedArray | pa.Array, int, int]:
    """(values, low, size): each value's code is value − low in [0, size − 1), a missing one size − 1. Integers
    spanning less than 2**32 are their own codes; other values are coded by position among the distinct values."""
    if pa.types.is_integer(column.type) and column.null_count < len(column):
        bounds = pc.min_max(column).as_py()
        if bounds["max"] - bounds["min"] < 2 ** 32:
            return column, bounds["min"], bounds["max"] - bounds["min"] + 2
    encoded = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    return encoded.indices.cast(pa.int64()), 0, len(encoded.dictionary) + 1


def chunks_of(values: pa.ChunkedArray | pa.Array) -> list[pa.Array]:
    """An Arrow column's arrays (itself when it is one)."""
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def _values(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's values as numpy (no copy without nulls) and its present mask (empty without nulls)."""
    if not chunk.null_count:
        return chunk.to_numpy(), np.zeros(0, dtype=bool)
    return pc.fill_null(chunk, 0).to_numpy(), boolean_mask(pc.is_valid(chunk))


def _like(values: pa.ChunkedArray | pa.Array, bound: float) -> pa.Scalar:
    """The bound in the column's type where that is exact (GX reads `min_value: 0` as 0.0, and comparing an integer
    column with a float casts every value), else as it is."""
    if pa.types.is_integer(values.type) and float(bound).is_integer():
        return pa.scalar(int(bound), values.type)
    return pa.scalar(bound)


def _rows(test: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Row numbers where a boolean Arrow result is true."""
    return np.flatnonzero(boolean_mask(test))


@numba.njit(parallel=True, cache=True)
def _fold(key: np.ndarray, values: np.ndarray, present: np.ndarray, low: int, size: int) -> None:
    """key ← key·size + code, in place (code: value − low; size − 1 where the value is missing)."""
    masked = len(present) > 0
    for i in numba.prange(len(key)):
        code = np.uint64(size - 1) if masked and not present[i] else np.uint64(values[i] - low)
        key[i] = key[i] * np.uint64(size) + code


@numba.njit(cache=True)
def _increasing(keys: np.ndarray) -> bool:
    for i in range(1, len(keys)):
        if keys[i] <= keys[i - 1]:
            return False
    return True


def boolean_mask(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow result as a numpy mask; null counts as False."""
    return (pc.fill_null(values, False) if values.null_count else values).to_numpy(zero_copy_only=False)


def _resolved(value, parameters: dict[str, Any]):
    """A kwarg's value, with `{"$PARAMETER": name}` looked up as GX does."""
    if isinstance(value, dict) and "$PARAMETER" in value:
        return parameters[value["$PARAMETER"]]
    return value


COLUMN_VALUE_KINDS = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
                      "expect_column_values_to_be_in_set", "expect_column_values_to_be_unique")  # _column_values


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
    if count:  # a filter, not a take: Arrow's take of a chunked column first joins its chunks (456 MB at 57M rows)
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
