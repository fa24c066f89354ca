"""Demo data in the Kaggle CooperUnion layout (or the Kaggle 2020 one), so the pipeline runs with no download.

Ratings come from a known low-rank structure (user/anime biases plus a rank-k interaction plus noise),
mapped onto a MyAnimeList-like skewed 1..10 distribution by rank, so a model that learns the
interaction clearly beats a user+item bias model on it. Which anime a user watches follows the same
taste (popularity × exp(taste_strength · interaction)), as people mostly watch what they expect to like,
so a ranking model can learn what to recommend beyond what is popular.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.storage import atomic_file

# Raised whenever the same spec generates other data: data kept from an older generator is then made again.
DEMO_GENERATOR = 2
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
# The most watched demo anime carry titles people know, so that the README's examples (`make similar
# ANIME="Cowboy Bebop"`, the RATINGS= file of docs/recommendations.md) run on the demo data as written.
WELL_KNOWN_TITLES = [
    "Cowboy Bebop", "Naruto", "Samurai Champloo", "Fullmetal Alchemist: Brotherhood", "Steins;Gate", "Death Note",
    "Neon Genesis Evangelion", "Code Geass: Hangyaku no Lelouch", "Sen to Chihiro no Kamikakushi",
    "Clannad: After Story", "Shingeki no Kyojin", "One Punch Man", "Mushishi", "Trigun", "Ghost in the Shell",
    "Tengen Toppa Gurren Lagann", "Haikyuu!!", "Monster", "Baccano!",
    "Ano Hi Mita Hana no Namae wo Bokutachi wa Mada Shiranai.",
]


@dataclass(frozen=True)
class DemoSpec:
    n_users: int = 3_000
    n_anime: int = 3_000
    n_ratings: int = 200_000
    unrated_share: float = 0.19  # share of all rows that are −1 (watched, not rated)
    rank: int = 8
    taste_strength: float = 1.0  # how much taste, beside popularity, decides what a user watches (0: not at all)
    new_anime: int = 12  # anime in anime.csv that no rating names yet (this season's), after the rated ones
    seed: int = 7
    users_per_block: int = 20_000  # users are generated and written a block at a time: memory stays bounded


# The size of the Kaggle 2020 MyAnimeList data (rating_complete.csv: rated rows only), for benchmarks.
KAGGLE_2020_SPEC = DemoSpec(n_users=310_000, n_anime=17_500, n_ratings=57_000_000, unrated_share=0.0)
# The same in that data set's own layout: ~110M list entries (animelist.csv), of which ~57M completed and scored
# (rating_complete.csv; 85% of the 67M scored entries are completed).
KAGGLE_2020_LIST_SPEC = DemoSpec(n_users=325_000, n_anime=17_500, n_ratings=67_000_000, unrated_share=0.39)
CALIBRATION_PAIRS = 1_000_000  # latent values drawn to place the rating cut points
CSV_OPTIONS = pacsv.WriteOptions(quoting_style="needed", quoting_header="none")  # header bare, as in Kaggle
RATING_SCHEMA = pa.schema([("user_id", pa.int64()), ("anime_id", pa.int64()), ("rating", pa.int64())])
WATCH_LIST_SCHEMA = pa.schema([*RATING_SCHEMA, ("watching_status", pa.int64()), ("watched_episodes", pa.int64())])
# Kaggle 2020: how list entries are spread over watching statuses (1 watching, 2 completed, 3 on hold,
# 4 dropped, 6 plan to watch), for scored entries and for unscored ones.
SCORED_STATUSES = (np.array([1, 2, 3, 4]), np.array([0.06, 0.85, 0.03, 0.06]))
UNSCORED_STATUSES = (np.array([1, 2, 3, 4, 6]), np.array([0.15, 0.25, 0.1, 0.1, 0.4]))
KAGGLE_2020_ANIME_HEADER = (
    "MAL_ID,Name,Score,Genres,English name,Japanese name,Type,Episodes,Aired,Premiered,Producers,Licensors,Studios,"
    "Source,Duration,Rating,Ranked,Popularity,Members,Favorites,Watching,Completed,On-Hold,Dropped,Plan to Watch,"
    "Score-10,Score-9,Score-8,Score-7,Score-6,Score-5,Score-4,Score-3,Score-2,Score-1").split(",")
Layout = Literal["cooperunion", "kaggle2020"]


@dataclass(frozen=True)
class _World:
    """The hidden truth the ratings come from: activity, popularity, biases and factors."""

    activity: np.ndarray  # share of all rows per user
    popularity: np.ndarray  # share of all rows per anime
    user_bias: np.ndarray
    anime_bias: np.ndarray
    user_factors: np.ndarray
    anime_factors: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, spec: DemoSpec) -> _World:
        activity = rng.lognormal(mean=0.0, sigma=1.0, size=spec.n_users)
        popularity = 1.0 / np.arange(1, spec.n_anime + 1) ** 0.9
        rng.shuffle(popularity)
        return cls(activity=activity / activity.sum(), popularity=popularity / popularity.sum(),
                   user_bias=rng.normal(0, 0.5, spec.n_users), anime_bias=rng.normal(0, 0.5, spec.n_anime),
                   user_factors=rng.normal(0, 1, (spec.n_users, spec.rank)) / np.sqrt(spec.rank),
                   anime_factors=rng.normal(0, 1, (spec.n_anime, spec.rank)))

    def watched_anime(self, rng: np.random.Generator, users: np.ndarray, taste_strength: float,
                      users_per_chunk: int = 1024) -> np.ndarray:
        """One anime per row, drawn from that row's user's distribution: popularity × exp(strength ·
        interaction). Users are taken a chunk at a time (a chunk × anime table of cumulative
        probabilities), so memory follows the chunk."""
        anime = np.empty(len(users), dtype=np.int64)
        order = np.argsort(users, kind="stable")
        distinct, starts = np.unique(users[order], return_index=True)
        bounds = np.append(starts, len(users))
        log_popularity = np.log(self.popularity)
        for first in range(0, len(distinct), users_per_chunk):
            chunk = distinct[first:first + users_per_chunk]
            logits = log_popularity + taste_strength * (self.user_factors[chunk] @ self.anime_factors.T)
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            cdf = np.cumsum(weights, axis=1)
            cdf /= cdf[:, -1:]
            rows = order[bounds[first]:bounds[first + len(chunk)]]
            row_in_chunk = np.repeat(np.arange(len(chunk)), np.diff(bounds[first:first + len(chunk) + 1]))
            # rows' cumulative tables laid end to end (row r's values in r..r+1): one searchsorted for all
            position = np.searchsorted((cdf + np.arange(len(chunk))[:, None]).ravel(),
                                       row_in_chunk + rng.random(len(rows)) * (1 - 1e-12))
            anime[rows] = position - row_in_chunk * len(self.popularity)
        return anime

    def latent(self, rng: np.random.Generator, users: np.ndarray, anime: np.ndarray) -> np.ndarray:
        """Biases + rank-k interaction + noise (ratings are this, cut into the skewed 1..10 scale)."""
        interaction = np.einsum("ij,ij->i", self.user_factors[users], self.anime_factors[anime])
        return self.user_bias[users] + self.anime_bias[anime] + 1.2 * interaction + rng.normal(0, 0.4, users.size)


def _distinct_pairs(rng: np.random.Generator, world: _World, users: np.ndarray, n_pairs: int,
                    n_anime: int, taste_strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw distinct (user, anime) pairs among `users`, long-tailed on both sides, sorted by user."""
    weights = world.activity[users] / world.activity[users].sum()
    codes = np.empty(0, dtype=np.int64)
    while codes.size < n_pairs:
        draw = 2 * (n_pairs - codes.size) + 1_000
        drawn_users = users[rng.choice(len(users), size=draw, p=weights)]
        new = drawn_users.astype(np.int64) * n_anime + world.watched_anime(rng, drawn_users, taste_strength)
        merged = np.concatenate([codes, new])
        _, first = np.unique(merged, return_index=True)
        codes = merged[np.sort(first)]
    codes = np.sort(codes[:n_pairs])
    return codes // n_anime, codes % n_anime


def _genres(rng: np.random.Generator, traits: np.ndarray) -> list[str]:
    """1–4 genres per anime, the ones whose direction in taste space its traits (factors and appeal) point to most:
    as in the real catalog, an anime's genres say something of who likes it."""
    directions = rng.normal(0, 1, (len(GENRES), traits.shape[1]))
    affinity = traits @ directions.T
    affinity += rng.normal(0, affinity.std(), affinity.shape)  # genres are a rough guide, not the truth
    sizes = rng.integers(1, 5, len(traits))
    return [", ".join(sorted(GENRES[g] for g in np.argsort(-row)[:size])) for row, size in zip(affinity, sizes,
                                                                                               strict=True)]


def _anime_table(rng: np.random.Generator, spec: DemoSpec, world: _World, anime_ids: np.ndarray, counts: np.ndarray,
                 sums: np.ndarray, members: np.ndarray) -> pa.Table:
    """anime.csv: the rated anime, then `spec.new_anime` of this season that nobody has rated yet (their traits
    drawn as the others', from a generator of their own so that the ratings stay as they were)."""
    fresh = np.random.default_rng(spec.seed + 1)
    traits = np.vstack([np.column_stack([world.anime_factors, world.anime_bias]),
                        np.column_stack([fresh.normal(0, 1, (spec.new_anime, spec.rank)),
                                         fresh.normal(0, 0.5, spec.new_anime)])])
    n = len(traits)
    anime_ids = np.concatenate([anime_ids, anime_ids.max() + 1 + np.arange(spec.new_anime)])
    names = [
        f"{NAME_WORDS_A[i % len(NAME_WORDS_A)]} {NAME_WORDS_B[(i // 7) % len(NAME_WORDS_B)]}"
        f"{NAME_SUFFIXES[(i // 3) % len(NAME_SUFFIXES)]} {i + 1}"
        for i in range(n)
    ]
    for title, index in zip(WELL_KNOWN_TITLES, np.argsort(-counts, kind="stable"), strict=False):
        names[index] = title
    names = [name.replace("'", "&#039;") for name in names]  # as in the Kaggle file
    genres = _genres(rng, traits)
    types = rng.choice(TYPES, size=n, p=TYPE_SHARES)
    episodes = np.where(types == "TV", rng.choice([12, 13, 24, 26, 50], n), 1).astype(str)
    episodes[rng.random(n) < 0.02] = "Unknown"
    episodes[spec.n_anime:][types[spec.n_anime:] == "TV"] = "Unknown"  # airing: the count is not known yet
    counts, sums, members = (np.concatenate([v, np.zeros(spec.new_anime, v.dtype)]) for v in (counts, sums, members))
    mean_score = np.where(counts > 0, np.round(sums / np.maximum(counts, 1), 2), np.nan)
    members = members * 37 + rng.integers(0, 500, n)
    return pa.table({
        "anime_id": anime_ids,
        "name": names,
        "genre": genres,
        "type": types,
        "episodes": episodes,
        "rating": pa.array(mean_score, from_pandas=True),
        "members": members,
    })


def _kaggle_2020_anime(table: pa.Table) -> pa.Table:
    """The CooperUnion anime columns under the Kaggle 2020 names, the rest of that file's columns filled in
    (`Rating` there is the age rating; the mean score is `Score`, `Unknown` when nobody scored it)."""
    n = table.num_rows
    score = pc.if_else(pc.is_null(table["rating"]), "Unknown", pc.cast(table["rating"], pa.string()))
    given = {"MAL_ID": table["anime_id"], "Name": table["name"], "Score": score, "Genres": table["genre"],
             "Type": table["type"], "Episodes": table["episodes"], "Members": table["members"],
             "Rating": pa.array(["PG-13 - Teens 13 or older"] * n)}
    return pa.table({name: given.get(name, pa.array(["Unknown"] * n)) for name in KAGGLE_2020_ANIME_HEADER})


def _blocks(spec: DemoSpec, activity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each block's first user, its rows and its rated rows: in proportion to its users' activity."""
    n_rows = round(spec.n_ratings / (1 - spec.unrated_share))
    block_starts = np.arange(0, spec.n_users, spec.users_per_block)
    row_bounds = np.round(np.cumsum(np.append(0.0, np.add.reduceat(activity, block_starts))) * n_rows)
    row_bounds[-1] = n_rows
    rated_rows = np.diff(np.round(row_bounds * spec.n_ratings / n_rows).astype(np.int64))
    return block_starts, np.diff(row_bounds.astype(np.int64)), rated_rows


def _write_list_entries(rng: np.random.Generator, users: np.ndarray, anime_ids: np.ndarray, ratings: np.ndarray,
                        ratings_out: pacsv.CSVWriter, watch_list_out: pacsv.CSVWriter) -> None:
    """A block in the Kaggle 2020 layout: every entry in the watch list with a watching status (rating 0 = not
    scored), the completed and scored ones in the ratings file too."""
    is_rated = ratings > 0
    status = np.where(is_rated, rng.choice(SCORED_STATUSES[0], len(users), p=SCORED_STATUSES[1]),
                      rng.choice(UNSCORED_STATUSES[0], len(users), p=UNSCORED_STATUSES[1]))
    complete = is_rated & (status == 2)
    ratings_out.write_table(pa.table({"user_id": users[complete], "anime_id": anime_ids[complete],
                                      "rating": ratings[complete]}, schema=RATING_SCHEMA))
    watch_list_out.write_table(pa.table({
        "user_id": users, "anime_id": anime_ids, "rating": np.where(is_rated, ratings, 0),
        "watching_status": status, "watched_episodes": np.where(status == 6, 0, rng.integers(1, 26, len(users))),
    }, schema=WATCH_LIST_SCHEMA))


def generate_demo_dataset(out_dir: Path, spec: DemoSpec = DemoSpec(), layout: Layout = "cooperunion") -> Path:
    """Write `rating.csv` and `anime.csv` to `out_dir` (deterministic for a given spec); with layout
    "kaggle2020", that data set's files instead: `rating_complete.csv` (completed, scored entries), `animelist.csv`
    (every entry with its watching status; rating 0 = not scored), `watching_status.csv` and its `anime.csv`,
    user ids from 0.

    Users are generated a block at a time and appended to the CSV, so memory follows the block, not
    the data set: the Kaggle-2020-sized spec (57M ratings) writes in bounded memory.
    """
    rng = np.random.default_rng(spec.seed)
    world = _World.draw(rng, spec)
    calibration_users = rng.choice(spec.n_users, CALIBRATION_PAIRS, p=world.activity)
    calibration = world.latent(rng, calibration_users,
                               world.watched_anime(rng, calibration_users, spec.taste_strength))
    cut_points = np.quantile(calibration, np.cumsum(RATING_SHARES)[:-1])
    # MyAnimeList-like sparse anime ids, so nothing downstream may assume ids are contiguous.
    anime_ids = np.sort(rng.choice(np.arange(1, 6 * spec.n_anime), size=spec.n_anime, replace=False))
    block_starts, block_rows, rated_rows = _blocks(spec, world.activity)
    counts, sums, members = (np.zeros(spec.n_anime, dtype=np.int64) for _ in range(3))
    out_dir.mkdir(parents=True, exist_ok=True)
    kaggle_2020 = layout == "kaggle2020"
    with ExitStack() as files:
        def writer(name: str, schema: pa.Schema) -> pacsv.CSVWriter:
            return files.enter_context(pacsv.CSVWriter(files.enter_context(atomic_file(out_dir / name)), schema,
                                                       write_options=CSV_OPTIONS))

        ratings_out = writer("rating_complete.csv" if kaggle_2020 else "rating.csv", RATING_SCHEMA)
        watch_list_out = writer("animelist.csv", WATCH_LIST_SCHEMA) if kaggle_2020 else None
        for first_user, rows, rated in zip(block_starts, block_rows, rated_rows, strict=True):
            block_users = np.arange(first_user, min(first_user + spec.users_per_block, spec.n_users))
            users, anime = _distinct_pairs(rng, world, block_users, int(rows), spec.n_anime, spec.taste_strength)
            ratings = (np.searchsorted(cut_points, world.latent(rng, users, anime)) + 1).astype(np.int64)
            ratings[rng.permutation(len(ratings))[: len(ratings) - rated]] = -1
            is_rated = ratings > 0
            counts += np.bincount(anime[is_rated], minlength=spec.n_anime)
            sums += np.bincount(anime[is_rated], weights=ratings[is_rated], minlength=spec.n_anime).astype(np.int64)
            members += np.bincount(anime, minlength=spec.n_anime)
            if watch_list_out is None:
                ratings_out.write_table(pa.table({"user_id": users + 1, "anime_id": anime_ids[anime],
                                                  "rating": ratings}, schema=RATING_SCHEMA))
                continue
            _write_list_entries(rng, users, anime_ids[anime], ratings, ratings_out, watch_list_out)
    anime_table = _anime_table(rng, spec, world, anime_ids, counts, sums, members)
    with atomic_file(out_dir / "anime.csv") as tmp:
        pacsv.write_csv(_kaggle_2020_anime(anime_table) if kaggle_2020 else anime_table, tmp, CSV_OPTIONS)
    if kaggle_2020:
        (out_dir / "watching_status.csv").write_text("status, description\n1,Currently Watching\n2,Completed\n"
                                                     "3,On Hold\n4,Dropped\n6,Plan to Watch\n")
    return out_dir
