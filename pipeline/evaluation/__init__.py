"""Evaluation: test RMSE and top-10 metrics beside baselines on the same split, and a registered version re-scored on
the current split."""
