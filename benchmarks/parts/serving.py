"""Part `serving`: latency of one user's top-10 and of `recommend()`, and batch throughput, in process."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.report import Table
from benchmarks.runs import BenchContext, SampleRuns
from pipeline.serving.presentation import recommend
from pipeline.serving.recommend import Recommender


def latency_rows(recommender: Recommender, label: str, n_requests: int = 500,
                 batch_users: int = 20_000) -> list[list[str]]:
    """p50/p99 of top-10 for one user (the full `recommend` call and the bare scoring), and batch users/s."""
    rng = np.random.default_rng(0)
    users = rng.choice(len(recommender.users.ids), size=n_requests)
    full, bare = [], []
    recommend(recommender, int(recommender.users.ids[users[0]]), 10)  # warm caches (known-pairs index)
    for index in users:
        started = time.perf_counter()
        recommend(recommender, int(recommender.users.ids[index]), 10)
        full.append(time.perf_counter() - started)
        started = time.perf_counter()
        recommender.top_n_batch(np.array([index]), 10)
        bare.append(time.perf_counter() - started)
    block = rng.choice(len(recommender.users.ids), size=min(batch_users, len(recommender.users.ids)), replace=False)
    started = time.perf_counter()
    recommender.top_n_batch(block, 10)
    rate = len(block) / (time.perf_counter() - started)

    def ms(values: list[float], q: int) -> str:
        return f"{np.percentile(values, q) * 1000:.2f}"

    return [[label, f"{len(recommender.users.ids):,} × {len(recommender.anime.ids):,}", ms(bare, 50), ms(bare, 99),
             ms(full, 50), ms(full, 99), f"{rate:,.0f}"]]


SERVING_COLUMNS = ["model", "users × anime", "top-10 p50 ms", "top-10 p99 ms", "recommend() p50 ms",
                   "recommend() p99 ms", "batch users/s"]


def serving_part(runs: SampleRuns) -> Table:
    return Table("Serving latency in process (one user, all anime scored, seen anime excluded)", SERVING_COLUMNS,
                 latency_rows(runs.served(), "served (ranking model + predicted ratings), anime sample"),
                 ["top-10 = `Recommender.top_n_batch([user], 10)` (ranking model scores); recommend() adds id "
                  "lookup, the predicted ratings, the reasons and the DataFrame with names and genres; batch = "
                  "`top_n_batch` over 20,000 users in chunks of 1,024."])


def run(context: BenchContext) -> list[Table]:
    return [serving_part(context.runs)]
