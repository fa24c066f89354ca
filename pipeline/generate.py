"""Demo data in the Kaggle CooperUnion layout, so the pipeline runs with no download.

Ratings come from a known low-rank structure (user/anime biases plus a rank-k interaction plus noise),
mapped onto a MyAnimeList-like skewed 1..10 distribution by rank, so a model that learns the
interaction clearly beats a user+item bias model on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.storage import atomic_file

# Share of each rating 1..10: mode 8, long left tail, as MyAnimeList ratings are.
RATING_SHARES = np.array([0.004, 0.005, 0.008, 0.017, 0.045, 0.10, 0.21, 0.26, 0.20, 0.151])

GENRES = [
    "Action", "Adventure", "Comedy", "Drama", "Fantasy", "Horror", "Magic", "Mecha", "Military",
    "Music", "Mystery", "Psychological", "Romance", "School", "Sci-Fi", "Seinen", "Shoujo", "Shounen",
    "Slice of Life", "Space", "Sports", "Super Power", "Supernatural", "Thriller",
]
TYPES = np.array(["TV", "Movie", "OVA", "Special", "ONA", "Music"])
TYPE_SHARES = np.array([0.42, 0.18, 0.17, 0.13, 0.07, 0.03])
NAME_WORDS_A = [
    "Crimson", "Silent", "Eternal", "Hidden", "Starlit", "Iron", "Wandering", "Last", "Blue", "Golden",
    "Broken", "Spirit", "Midnight", "Sky", "Little", "Phantom", "Frozen", "Hero's", "Summer", "Moonlit",
]
NAME_WORDS_B = [
    "Academy", "Blade", "Chronicle", "Requiem", "Garden", "Kingdom", "Melody", "Frontier", "Alchemist",
    "Detective", "Pilot", "Festival", "Sanctuary", "Rebellion", "Journey", "Promise", "Horizon", "Shrine",
]
NAME_SUFFIXES = ["", "", "", "", " 2nd Season", " Movie", " OVA", ": Zero", " Recap", " Specials"]


@dataclass(frozen=True)
class DemoSpec:
    n_users: int = 5_000
    n_anime: int = 7_000
    n_ratings: int = 400_000
    unrated_share: float = 0.19  # share of all rows that are −1 (watched, not rated)
    rank: int = 8
    seed: int = 7


def _sample_distinct_pairs(rng: np.random.Generator, spec: DemoSpec, n_pairs: int) -> tuple[np.ndarray, ...]:
    """Draw distinct (user, anime) index pairs with long-tailed user activity and anime popularity."""
    activity = rng.lognormal(mean=0.0, sigma=1.0, size=spec.n_users)
    popularity = 1.0 / np.arange(1, spec.n_anime + 1) ** 0.9
    rng.shuffle(popularity)
    activity /= activity.sum()
    popularity /= popularity.sum()
    codes = np.empty(0, dtype=np.int64)
    while codes.size < n_pairs:
        draw = 2 * (n_pairs - codes.size) + 1_000
        users = rng.choice(spec.n_users, size=draw, p=activity)
        anime = rng.choice(spec.n_anime, size=draw, p=popularity)
        new = users.astype(np.int64) * spec.n_anime + anime
        merged = np.concatenate([codes, new])
        _, first = np.unique(merged, return_index=True)
        codes = merged[np.sort(first)]
    codes = codes[:n_pairs]
    return codes // spec.n_anime, codes % spec.n_anime


def _latent_ratings(rng: np.random.Generator, spec: DemoSpec, users: np.ndarray, anime: np.ndarray) -> np.ndarray:
    """Map biases + rank-k interaction + noise onto the skewed 1..10 scale by rank."""
    user_bias = rng.normal(0, 0.5, spec.n_users)
    anime_bias = rng.normal(0, 0.5, spec.n_anime)
    user_factors = rng.normal(0, 1, (spec.n_users, spec.rank)) / np.sqrt(spec.rank)
    anime_factors = rng.normal(0, 1, (spec.n_anime, spec.rank))
    interaction = np.einsum("ij,ij->i", user_factors[users], anime_factors[anime])
    latent = user_bias[users] + anime_bias[anime] + 1.2 * interaction + rng.normal(0, 0.4, users.size)
    cut_points = np.quantile(latent, np.cumsum(RATING_SHARES)[:-1])
    return (np.searchsorted(cut_points, latent) + 1).astype(np.int64)


def _anime_table(rng: np.random.Generator, spec: DemoSpec, anime_ids: np.ndarray,
                 anime: np.ndarray, ratings: np.ndarray) -> pa.Table:
    names = [
        f"{NAME_WORDS_A[i % len(NAME_WORDS_A)]} {NAME_WORDS_B[(i // 7) % len(NAME_WORDS_B)]}"
        f"{NAME_SUFFIXES[(i // 3) % len(NAME_SUFFIXES)]} {i + 1}"
        for i in range(spec.n_anime)
    ]
    names = [name.replace("'", "&#039;") for name in names]  # as in the Kaggle file
    genres = [", ".join(sorted(rng.choice(GENRES, size=rng.integers(1, 5), replace=False)))
              for _ in range(spec.n_anime)]
    types = rng.choice(TYPES, size=spec.n_anime, p=TYPE_SHARES)
    episodes = np.where(types == "TV", rng.choice([12, 13, 24, 26, 50], spec.n_anime), 1).astype(str)
    episodes[rng.random(spec.n_anime) < 0.02] = "Unknown"
    rated = ratings > 0
    counts = np.bincount(anime[rated], minlength=spec.n_anime)
    sums = np.bincount(anime[rated], weights=ratings[rated], minlength=spec.n_anime)
    mean_score = np.where(counts > 0, np.round(sums / np.maximum(counts, 1), 2), np.nan)
    members = np.bincount(anime, minlength=spec.n_anime) * 37 + rng.integers(0, 500, spec.n_anime)
    return pa.table({
        "anime_id": anime_ids,
        "name": names,
        "genre": genres,
        "type": types,
        "episodes": episodes,
        "rating": pa.array(mean_score, from_pandas=True),
        "members": members,
    })


def generate_demo_dataset(out_dir: Path, spec: DemoSpec = DemoSpec()) -> Path:
    """Write `rating.csv` and `anime.csv` to `out_dir` (deterministic for a given spec)."""
    rng = np.random.default_rng(spec.seed)
    n_rows = round(spec.n_ratings / (1 - spec.unrated_share))
    users, anime = _sample_distinct_pairs(rng, spec, n_rows)
    ratings = _latent_ratings(rng, spec, users, anime)
    unrated = rng.permutation(n_rows)[: n_rows - spec.n_ratings]
    ratings[unrated] = -1
    # MyAnimeList-like sparse anime ids, so nothing downstream may assume ids are contiguous.
    anime_ids = np.sort(rng.choice(np.arange(1, 6 * spec.n_anime), size=spec.n_anime, replace=False))
    order = np.lexsort((anime_ids[anime], users))
    rating_table = pa.table({
        "user_id": users[order] + 1,
        "anime_id": anime_ids[anime[order]],
        "rating": ratings[order],
    })
    anime_table = _anime_table(rng, spec, anime_ids, anime, ratings)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in (("rating.csv", rating_table), ("anime.csv", anime_table)):
        with atomic_file(out_dir / name) as tmp:
            pacsv.write_csv(table, tmp, pacsv.WriteOptions(quoting_style="needed"))
    return out_dir
