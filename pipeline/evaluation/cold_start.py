"""Cold start, judged so that it cannot be gamed: a seeded share of the anime that have ratings is held out (all their
train and validation ratings, and their watched-but-unrated rows, leave the matrix), a model is fitted on the rest,
and the held-out anime's test ratings judge it: RMSE, and NDCG@10 of lists ranked among the held-out anime only.
The other anime's test ratings give the warm RMSE beside it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from pipeline.matrix.utility_matrix import METADATA_FILE, UNRATED_FILE, UtilityMatrix
from pipeline.metrics import RankingReport, Scores, ranking_report, relevant_pairs
from pipeline.top_n import K, top_n_lists


def _of_anime(rows: pa.Table, anime: np.ndarray) -> pa.ChunkedArray:
    """Which rows rate one of `anime` (matrix indices)."""
    return pc.is_in(rows["anime_index"], pa.array(anime, pa.int32()))


@dataclass(frozen=True)
class ColdStartSplit:
    """The matrix without the held-out anime's train and validation rows, and which anime those are."""

    matrix: UtilityMatrix  # same ids and test split as the full matrix
    held_out: np.ndarray  # anime indices, sorted
    judged: str = "test"  # the split whose ratings of the held-out anime judge: test, or validation to choose

    def cold_rows(self) -> pa.Table:
        """The judged split's ratings of the held-out anime."""
        rows = self.matrix.split(self.judged)
        return rows.filter(_of_anime(rows, self.held_out))

    def warm_rows(self) -> pa.Table:
        """The judged split's ratings of the other anime."""
        rows = self.matrix.split(self.judged)
        return rows.filter(pc.invert(_of_anime(rows, self.held_out)))


def hold_out_anime(matrix: UtilityMatrix, share: float, seed: int, target: Path,
                   judged: str = "test") -> ColdStartSplit:
    """A copy of `matrix` in `target` where a seeded `share` of its anime have no train or unrated rows, nor
    validation rows unless validation is what judges them (`judged`: choosing a setting on validation); their test
    rows stay. The train mean is recomputed from what is left."""
    held_out = np.sort(np.random.default_rng(seed).choice(matrix.n_anime, round(share * matrix.n_anime),
                                                          replace=False)).astype(np.int32)
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(matrix.path, target)
    sizes = dict(matrix.split_sizes)
    for name in ("train", "validation") if judged == "test" else ("train",):
        split = matrix.split(name)
        kept = split.filter(pc.invert(_of_anime(split, held_out)))
        pq.write_table(kept, target / f"{name}.parquet")
        sizes[name] = kept.num_rows
        if name == "train":
            train_mean = float(np.mean(kept["rating"].to_numpy()))
    unrated = matrix.unrated()
    held_ids = pa.array(matrix.anime_ids()[held_out])
    pq.write_table(unrated.filter(pc.invert(pc.is_in(unrated["anime_id"], held_ids))), target / UNRATED_FILE)
    meta = json.loads((matrix.path / METADATA_FILE).read_text())
    meta |= {"split_sizes": sizes, "train_mean_rating": train_mean,
             "split_id": hashlib.sha256(f"{meta['split_id']}:cold:{share}:{seed}".encode()).hexdigest()[:16]}
    (target / METADATA_FILE).write_text(json.dumps(meta, indent=2))
    return ColdStartSplit(UtilityMatrix.open(target), held_out, judged)


@dataclass(frozen=True)
class ColdStartScores:
    cold: Scores | None  # the held-out anime's test ratings (None: the method predicts no rating)
    warm: Scores | None  # the other anime's test ratings
    lists: RankingReport | None  # top-10 among the held-out anime (None: the method makes no list)


PairPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (user indices, anime indices) → ratings
BlockScores = Callable[[np.ndarray], np.ndarray]  # user indices → (users, anime) scores


def judge_cold_start(split: ColdStartSplit, predict: PairPredictor | None, scores_for: BlockScores | None,
                     relevance_threshold: float, unrated_value: int) -> ColdStartScores:
    """A method's predicted ratings (RMSE on the judged split's cold and warm rows) and its lists: each user's
    top-10 among the held-out anime, by `scores_for`, against their relevant ratings of them in the judged split."""
    cold, warm = split.cold_rows(), split.warm_rows()

    def scored(rows: pa.Table) -> Scores | None:
        if predict is None:
            return None
        return Scores.of(rows["rating"].to_numpy(), predict(rows["user_index"].to_numpy(),
                                                            rows["anime_index"].to_numpy()))

    lists = None
    if scores_for is not None:
        relevant = relevant_pairs(cold, relevance_threshold)
        users = np.unique(relevant["user_index"].to_numpy())
        allowed = np.full(split.matrix.n_anime, -np.inf, np.float32)
        allowed[split.held_out] = 0.0
        before = ("train",) if split.judged == "validation" else ("train", "validation")
        seen = _seen(split.matrix, unrated_value, before)
        top = top_n_lists(lambda block: np.asarray(scores_for(block), np.float32) + allowed, users, seen, K)
        lists = ranking_report(top, users, relevant, split.matrix.n_anime)
    return ColdStartScores(scored(cold), scored(warm), lists)


def _seen(matrix: UtilityMatrix, unrated_value: int, splits: tuple[str, ...]) -> sp.csr_matrix:
    """What each user rated or watched in the matrix before the judged split (never listed)."""
    known = matrix.interactions(splits, unrated_value)
    return sp.csr_matrix((np.ones(known.num_rows, np.int8), (known["user_index"].to_numpy(),
                                                              known["anime_index"].to_numpy())),
                         shape=(matrix.n_users, matrix.n_anime))
