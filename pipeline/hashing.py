"""Vectorized 64-bit hashing (splitmix64) for order-independent data versions and per-pair splits.

Sorting 57M ratings to hash them in a canonical order, or to split them reproducibly, costs more than
the rest of the matrix build; hashing each row and combining with a commutative sum does not depend
on row order at all.
"""

from __future__ import annotations

import hashlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijection of uint64 that spreads every input bit over the output.

    In place on a fresh copy: at 57M rows each temporary array costs as much as the arithmetic.
    """
    z = np.asarray(values).astype(np.uint64)  # a copy, worked on in place
    with np.errstate(over="ignore"):
        z += _GOLDEN
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def row_hash(*columns: np.ndarray, seed: int = 0) -> np.ndarray:
    """One uint64 per row from integer columns: h = mix64(h + column), column by column, from the seed."""
    h = np.full(len(columns[0]), np.uint64(mix64(np.array([seed]))[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in columns:
            h += np.asarray(column).astype(np.uint64)
            h = mix64(h)
    return h


def unit_interval(hashes: np.ndarray) -> np.ndarray:
    """Map uint64 hashes to floats uniform on [0, 1)."""
    return (hashes >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def multiset_digest(*columns: np.ndarray) -> str:
    """Hex digest of a set of rows that does not depend on their order (two independent row sums)."""
    hashes = row_hash(*columns)
    with np.errstate(over="ignore"):
        first = int(hashes.sum(dtype=np.uint64))
        second = int(mix64(hashes).sum(dtype=np.uint64))
    return hashlib.sha256(f"{len(hashes)}:{first}:{second}".encode()).hexdigest()
