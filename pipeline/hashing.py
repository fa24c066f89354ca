"""64-bit hashing (splitmix64) for order-independent data versions and per-pair splits.

Sorting every rating to hash them in a canonical order, or to split them reproducibly, costs more than the rest
of the matrix build; hashing each row and combining with a commutative sum does not depend on row order at all.
Compiled (numba, rows in parallel), one pass per column, and read chunk by chunk from Arrow in place: a numpy copy
of a column would be fresh memory the size of the column.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence

import numba
import numpy as np
import pyarrow as pa

Column = np.ndarray | pa.Array | pa.ChunkedArray  # integer values without nulls


@numba.njit(inline="always")
def _mix(z):
    """splitmix64's finalizer: a bijection of uint64 that spreads every input bit over the output."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(parallel=True, cache=True)
def _mix_in(hashes: np.ndarray, column: np.ndarray) -> None:
    """hashes ← mix(hashes + column), in place; a signed value wraps to uint64 as numpy's astype does."""
    for i in numba.prange(len(hashes)):
        hashes[i] = _mix(hashes[i] + np.uint64(column[i]))


@numba.njit(parallel=True, cache=True)
def _mix_first(hashes: np.ndarray, column: np.ndarray, start: np.uint64) -> None:
    """hashes ← mix(start + column): _mix_in from a constant, without filling an array with it first."""
    for i in numba.prange(len(hashes)):
        hashes[i] = _mix(start + np.uint64(column[i]))


@numba.njit(parallel=True, cache=True)
def _sums(hashes: np.ndarray) -> tuple[np.uint64, np.uint64]:
    first, second = np.uint64(0), np.uint64(0)
    for i in numba.prange(len(hashes)):
        first += hashes[i]
        second += _mix(hashes[i])
    return first, second


@numba.njit(parallel=True, cache=True)
def _count_below(hashes: np.ndarray, bounds: np.ndarray, counts: np.ndarray) -> None:
    for i in numba.prange(len(hashes)):
        draw = hashes[i] >> np.uint64(11)
        below = 0
        for bound in bounds:
            below += draw < bound
        counts[i] = below


def aligned_chunks(columns: Sequence[Column]) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(offset, the columns' values there) over runs of rows that are contiguous in every column, as numpy views
    of the Arrow buffers (no copy)."""
    if all(isinstance(column, np.ndarray) for column in columns):
        yield 0, list(columns)
        return
    table = pa.table({str(i): column for i, column in enumerate(columns)})
    offset = 0
    for batch in table.to_batches():
        yield offset, [column.to_numpy() for column in batch.columns]
        offset += batch.num_rows


def row_hash(*columns: Column, seed: int = 0) -> np.ndarray:
    """One uint64 per row from integer columns: h = mix64(h + column), column by column, from the seed."""
    start = mix64(np.array([seed], dtype=np.int64))[0]
    hashes = np.empty(len(columns[0]), dtype=np.uint64)
    for offset, values in aligned_chunks(columns):
        part = hashes[offset:offset + len(values[0])]
        _mix_first(part, values[0], start)
        for column in values[1:]:
            _mix_in(part, column)
    return hashes


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on each value (a new array)."""
    hashes = np.zeros(len(values), dtype=np.uint64)
    _mix_in(hashes, np.ascontiguousarray(values))
    return hashes


def fractions_above(columns: Sequence[Column], fractions: list[float], seed: int) -> np.ndarray:
    """For each row, how many of `fractions` the uniform draw on [0, 1) of its seeded row_hash falls below. The draw
    is the hash's top 53 bits over 2**53, compared as an integer with ⌈fraction·2**53⌉ (exactly the float
    comparison); rows are hashed a run at a time (no 57M-row array of hashes)."""
    bounds = np.array([math.ceil(fraction * (1 << 53)) for fraction in fractions], dtype=np.uint64)
    counts = np.empty(len(columns[0]), dtype=np.int8)
    for offset, values in aligned_chunks(columns):
        _count_below(row_hash(*values, seed=seed), bounds, counts[offset:offset + len(values[0])])
    return counts


def multiset_digest(*columns: Column) -> str:
    """Hex digest of a set of rows that does not depend on their order (two independent row sums), hashed a run
    of rows at a time (one run's hashes in memory)."""
    first = second = 0
    rows = 0
    for _, values in aligned_chunks(columns):
        hashes = row_hash(*values)
        sums = _sums(hashes)
        first, second, rows = (first + int(sums[0])) % 2 ** 64, (second + int(sums[1])) % 2 ** 64, rows + len(hashes)
    return hashlib.sha256(f"{rows}:{first}:{second}".encode()).hexdigest()
