"""MLflow tracking at the edges of the stages: runs, what each stage logs, the model bundle, sweeps."""
