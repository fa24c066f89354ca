"""Part `ranking`: top-10 lists on the anime sample, one split for all: the served ranking model against the rating
model ranked alone, most popular, a reference EASE and implicit's ALS; and the ranking model's in-place inverse
against TensorFlow's."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from benchmarks.reference_ease import fit_reference_ease, reference_scores
from benchmarks.report import Table
from benchmarks.runs import BenchContext, SampleRuns
from pipeline.evaluation.evaluate import SEEN_SPLITS, evaluate_ranking
from pipeline.metrics import RankingReport, ranking_report, relevant_pairs
from pipeline.serving.recommend import Recommender
from pipeline.top_n import top_n_lists


@dataclass(frozen=True)
class ListsProtocol:
    """One judging of top-10 lists: fit on `seen` splits (+ watched rows), judge on `target`'s relevant rows."""

    seen: tuple[str, ...]
    target: str


VALIDATION, TEST = ListsProtocol(("train",), "validation"), ListsProtocol(SEEN_SPLITS, "test")


def judge_lists(runs: SampleRuns, protocol: ListsProtocol, fit_scorer) -> tuple[RankingReport, float]:
    """Fit a method on the protocol's known pairs (`fit_scorer(known, n_users, n_anime)` returns a function of
    user indices → dense scores), judge its top-10 unseen lists; return the report and the fit seconds."""
    matrix, settings = runs.matrix, runs.settings
    known = matrix.interactions(protocol.seen, settings.unrated_value)
    relevant = relevant_pairs(matrix.split(protocol.target), settings.relevance_threshold)
    users = np.unique(relevant["user_index"].to_numpy())
    started = time.perf_counter()
    scores_for = fit_scorer(known, matrix.n_users, matrix.n_anime)
    seconds = time.perf_counter() - started
    top = top_n_lists(scores_for, users, binary_history(known, matrix.n_users, matrix.n_anime))
    return ranking_report(top, users, relevant, matrix.n_anime), seconds


def binary_history(known: pa.Table, n_users: int, n_anime: int) -> sp.csr_matrix:
    return sp.csr_matrix((np.ones(known.num_rows, np.float32), (known["user_index"].to_numpy(),
                                                                 known["anime_index"].to_numpy())),
                         shape=(n_users, n_anime))


def popularity_scorer(runs: SampleRuns):
    def fit(known: pa.Table, n_users: int, n_anime: int):
        rated = np.bincount(runs.matrix.split("train")["anime_index"].to_numpy(), minlength=n_anime)
        return lambda block: np.broadcast_to(rated, (len(block), n_anime))
    return fit


def reference_ease_scorer(l2: float):
    def fit(known: pa.Table, n_users: int, n_anime: int):
        history = binary_history(known, n_users, n_anime)
        return reference_scores(history, fit_reference_ease(history, l2))
    return fit


def implicit_als_scorer(factors: int = 128, alpha: float = 10.0, regularization: float = 0.05, iterations: int = 15):
    def fit(known: pa.Table, n_users: int, n_anime: int):
        from implicit.als import AlternatingLeastSquares

        model = AlternatingLeastSquares(factors=factors, alpha=alpha, regularization=regularization,
                                        iterations=iterations, random_state=0)
        model.fit(binary_history(known, n_users, n_anime), show_progress=False)
        user_factors, item_factors = np.asarray(model.user_factors), np.asarray(model.item_factors)
        return lambda block: user_factors[block] @ item_factors.T
    return fit


def inverse_part(runs: SampleRuns) -> Table:
    """The ranking model's solve on the sample's XᵀX + λI: the in-place LAPACK inverse against `tf.linalg.inv`, both
    judged against numpy's float64 inverse."""
    import tensorflow as tf

    from pipeline.models.ranking.ease import InteractionWeights, gram_matrix, invert_spd_in_place

    settings, matrix = runs.settings, runs.matrix
    weights = InteractionWeights.of_config(settings.ranking, matrix.scale.minimum, matrix.scale.maximum,
                                           settings.unrated_value)
    gram = gram_matrix(weights.matrix(matrix.interactions(SEEN_SPLITS, settings.unrated_value), matrix.n_users,
                                      matrix.n_anime))
    gram[np.diag_indices_from(gram)] += runs.ranking.model.l2
    exact = np.linalg.inv(gram.astype(np.float64))
    started = time.perf_counter()
    reference = tf.linalg.inv(gram).numpy()
    reference_seconds = time.perf_counter() - started
    in_place = gram.copy()
    started = time.perf_counter()
    invert_spd_in_place(in_place)
    seconds = time.perf_counter() - started

    def error(inverse: np.ndarray) -> str:
        return f"{np.abs(inverse - exact).max() / np.abs(exact).max():.1e}"

    return Table(f"Inverse of XᵀX + λI on the anime sample ({matrix.n_anime:,}², float32)",
                 ["method", "seconds", "vs tf.linalg.inv", "largest error (of the largest entry; numpy float64)"],
                 [["`tf.linalg.inv`", f"{reference_seconds:.1f}", "1.00", error(reference)],
                  ["in-place Cholesky inverse (LAPACK potrf + potri; the ranking model's)", f"{seconds:.1f}",
                   f"{seconds / reference_seconds:.2f}", error(in_place)]])


def ranking_part(runs: SampleRuns) -> Table:
    """Top-10 lists on the anime sample, one split for all: the served recommender, the rating model ranked
    alone, popularity, a reference EASE and implicit's ALS; validation (fit on train) and test (fit on train +
    validation), every method also seeing the watched-but-unrated rows."""
    served = evaluate_ranking(Recommender.from_matrix(runs.default.model, runs.ranking.model, runs.matrix,
                                                      runs.settings.unrated_value, splits=SEEN_SPLITS),
                              runs.matrix, runs.settings.relevance_threshold)
    chosen = runs.ranking.chosen
    rows = [("served: ranking model (EASE, rating-weighted, pruned; λ walked on validation)",
             chosen.validation.ndcg, served.served, runs.ranking.fit_seconds),
            ("rating model alone (biased MF, ranked by predicted rating)", None, served.rating_model,
             runs.default_seconds)]
    for name, scorer in (("popularity (most rated in train)", popularity_scorer(runs)),
                         ("reference EASE (numpy, binary, λ = 200, dense)", reference_ease_scorer(200.0)),
                         ("implicit ALS (128 factors, α 10, reg 0.05, 15 it.)", implicit_als_scorer())):
        validation, _ = judge_lists(runs, VALIDATION, scorer)
        test, seconds = judge_lists(runs, TEST, scorer)
        rows.append((name, validation.ndcg, test, seconds if "popularity" not in name else 0.0))
    reference = rows[3][2].ndcg
    table = Table(f"Top-10 lists on the anime sample (test split: {served.served.n_users:,} users with a rating ≥ 8)",
                  ["model", "val NDCG@10", "P@10", "R@10", "NDCG@10", "coverage", "personalization",
                   "NDCG / ref. EASE", "fit s"])
    for name, val_ndcg, r, seconds in rows:
        table.rows.append([name, "–" if val_ndcg is None else f"{val_ndcg:.4f}", f"{r.precision:.4f}",
                           f"{r.recall:.4f}", f"{r.ndcg:.4f}", f"{r.coverage:.3f}", f"{r.personalization:.3f}",
                           f"{r.ndcg / reference:.3f}", f"{seconds:.1f}"])
    table.notes += [
        "Relevant = a held-out rating ≥ 8; candidates = anime the user has not rated or watched in the splits the "
        "model saw. val NDCG@10: fitted on train (+ watched rows), judged on validation; the other columns: "
        "fitted on train + validation (+ watched rows), judged on test.",
        f"Served ranking model: relative λ tried {', '.join(f'{t.relative_l2:g}' for t in runs.ranking.trials)} → "
        f"{chosen.relative_l2:g} (λ {runs.ranking.model.l2:.4g} in the final fit); "
        f"its fit time includes the λ walk ({len(runs.ranking.trials)} fits + the final one). Rating model: fit "
        "time of its training."]
    return table


def run(context: BenchContext) -> list[Table]:
    return [ranking_part(context.runs), inverse_part(context.runs)]
