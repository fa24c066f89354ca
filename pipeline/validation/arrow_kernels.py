"""Compiled kernels of the Arrow engine: repeated keys (radix sort), membership, bounds, on Arrow columns without
copies."""

from __future__ import annotations

import math

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
    passes, where numpy's comparison sort is O(n log n) comparisons."""
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
