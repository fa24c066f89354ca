"""Child process of the bench's `scale` part: the ranking model fitted at Kaggle-2020 size, as JSON.

Run alone so that its peak RSS (VmHWM) is the ranking fit's own: it opens the utility matrix the data path
built, fits the ranking model as the pipeline does (λ walked on validation, then the fit on train +
validation), and saves the serving bundle with the rating model the data-path child trained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.children.data_path import memory_gb
from pipeline.environment import use_local_defaults
from pipeline.matrix.utility_matrix import UtilityMatrix
from pipeline.models.ranking.fit import train_ranking_model
from pipeline.serving.bundle import save_bundle
from pipeline.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--matrix", type=Path, required=True)
    parser.add_argument("--rating-model", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    args = parser.parse_args()
    import keras

    settings = Settings()
    matrix = UtilityMatrix.open(args.matrix)
    started = time.perf_counter()
    fit = train_ranking_model(matrix, settings.ranking, settings.unrated_value, settings.relevance_threshold)
    fit_seconds = time.perf_counter() - started
    peak = memory_gb("VmHWM")
    model = keras.models.load_model(args.rating_model, compile=False)
    save_bundle(model, fit.model, matrix, settings.unrated_value, settings.training.l2, args.bundle)
    print(json.dumps({
        "fit_seconds": fit_seconds, "peak_rss_gb": peak,
        "trials": [[trial.relative_l2, trial.l2, trial.validation.ndcg] for trial in fit.trials],
        "chosen_relative_l2": fit.chosen.relative_l2, "fitted_l2": fit.model.l2,
        "weights_kept": int(fit.model.weights.nnz), "bundle": str(args.bundle),
    }))


if __name__ == "__main__":
    use_local_defaults()
    main()
