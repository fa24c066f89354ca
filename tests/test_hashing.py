"""The compiled hashing against splitmix64 written out in plain Python: data versions and splits of data already
registered must not change with the implementation."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from pipeline.hashing import multiset_digest, row_hash

MASK = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _row_hash(values: tuple[int, ...], seed: int) -> int:
    h = _splitmix64(seed & MASK)
    for value in values:
        h = _splitmix64((h + (value & MASK)) & MASK)  # a negative value wraps modulo 2**64
    return h


def test_row_hash_and_digest_are_splitmix64_of_each_row_for_every_integer_width():
    rng = np.random.default_rng(7)
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dtype)
        columns = [rng.integers(info.min, info.max, 50, dtype=dtype, endpoint=True) for _ in range(3)]
        rows = [tuple(int(column[i]) for column in columns) for i in range(50)]
        expected = [_row_hash(row, 42) for row in rows]
        assert row_hash(*columns, seed=42).tolist() == expected
        unseeded = [_row_hash(row, 0) for row in rows]
        sums = (sum(unseeded) & MASK, sum(_splitmix64(h) for h in unseeded) & MASK)
        assert multiset_digest(*columns) == hashlib.sha256(f"50:{sums[0]}:{sums[1]}".encode()).hexdigest()
        shuffled = rng.permutation(50)
        assert multiset_digest(*(column[shuffled] for column in columns)) == multiset_digest(*columns)


def test_arrow_columns_in_differently_chunked_pieces_hash_as_their_numpy_values():
    rng = np.random.default_rng(8)
    users, anime = rng.integers(0, 1000, 700), rng.integers(-5, 50, 700)
    chunked_users = pa.chunked_array([users[:100], users[100:450], users[450:]])
    chunked_anime = pa.chunked_array([anime[:300], anime[300:]])  # other boundaries than the users'
    assert row_hash(chunked_users, chunked_anime, seed=3).tolist() == row_hash(users, anime, seed=3).tolist()
    assert multiset_digest(chunked_users, chunked_anime) == multiset_digest(users, anime)
