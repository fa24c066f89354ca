"""The anime recommender's library, one subpackage per stage: data → validation → matrix → models (rating, ranking)
→ evaluation → registry, with tracking (MLflow), serving, tuning (sweeps), the settings and the run's reports. No
Prefect import and no side effect on import: entry points apply the quiet local defaults (`environment.py`)."""
