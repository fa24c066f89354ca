"""The small interface both served models share, in the spirit of implicit's recommenders: scores of every anime for
a block of users, and a folder to save to and load from. Serving asks no more of a model.

- The rating model (`pipeline.models.rating.train.train_model` fits it; its served form is
  `pipeline.models.rating.scorer.RatingScorer`) scores by predicted rating, from the users' own vectors.
- The ranking model (`pipeline.models.ranking.fit.train_ranking_model` fits it: `ItemToItemModel`) scores from
  the users' histories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp


@runtime_checkable
class AnimeModel(Protocol):
    def scores(self, users: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        """(len(users) × anime) scores, higher listed first, −inf for an anime the model cannot list. `users`: user
        indices; `history`: their rows of what they rated or watched (weighted as the model's input)."""
        ...

    def save(self, folder: Path) -> Path:
        """Write the model into `folder` (created); returns it."""
        ...

    @classmethod
    def load(cls, folder: Path) -> Self:
        """The model `save` wrote, loaded without running code from the folder."""
        ...
