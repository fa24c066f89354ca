"""Raw ids ↔ the dense indices a model's rows are numbered by. Built once from the matrix's index files and saved
with a bundle; the recommender, the rating scorer and the ranking model look ids up through it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pipeline.errors import UnknownIdError


@dataclass(frozen=True)
class IdMap:
    ids: np.ndarray  # index → raw id
    noun: str = "id"  # what the ids name ("user", "anime"), for the sentence about an unknown one

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def _sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """The ids sorted, and where each sorted id sits: built on the first lookup, kept for the next."""
        order = np.argsort(self.ids, kind="stable")
        return self.ids[order], order

    def indices(self, ids: np.ndarray) -> np.ndarray:
        """Each raw id's index (int64), −1 for an id this map does not know."""
        ids = np.asarray(ids)
        sorted_ids, order = self._sorted
        if not len(sorted_ids):
            return np.full(len(ids), -1, np.int64)
        position = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        return np.where(sorted_ids[position] == ids, order[position], -1).astype(np.int64)

    def index(self, raw_id: int) -> int:
        """One raw id's index; `UnknownIdError` saying so when this map does not know it."""
        found = int(self.indices(np.array([raw_id]))[0])
        if found < 0:
            known = f", ids {self.ids.min()}..{self.ids.max()}" if len(self.ids) else ""
            raise UnknownIdError(f"unknown {self.noun} id {raw_id}: the model's data has no {self.noun} by that id "
                                 f"(it knows {len(self.ids):,}{known})")
        return found
