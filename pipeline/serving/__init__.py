"""Serving: the registered pyfunc bundle, the recommender it wraps, the rating model's scorer and the catalog.

`RecommenderModel` is importable from here because every bundle registered before the stage packages names it
`pipeline.serving.RecommenderModel` in its pickle."""

from pipeline.serving.bundle import RecommenderModel

__all__ = ["RecommenderModel"]
