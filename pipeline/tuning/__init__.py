"""Hyperparameter sweeps of either model, best on validation."""
