"""The registry's words: its aliases, the decision a version carries, and the scores it is tagged with and compared
on."""

from __future__ import annotations

import math
from dataclasses import dataclass

CHAMPION, CHALLENGER = "champion", "challenger"
OTHER_DATASET = "challenger: other data set"  # the decision when the champion learned from another data set
MANUAL = "champion: manual"  # the decision recorded when a person promotes a version
# Scores are tagged, printed and compared at this precision: far finer than any tolerance (one standard error of
# a test split's RMSE or NDCG@10), coarse enough to read in the registry page.
SCORE_DECIMALS = 4
NOT_MEASURED = "not measured"
# The scale of a version or run recorded before the scale was: the only one there was then.
UNRECORDED_RATING_SCALE = "1-10"


def score_tag(value: float | None) -> str:
    return NOT_MEASURED if value is None or math.isnan(value) else f"{value:.{SCORE_DECIMALS}f}"


def tagged_score(text: str | None) -> float:
    """A score tag read back (nan when absent or not measured)."""
    return math.nan if text in (None, NOT_MEASURED) else float(text)


@dataclass(frozen=True)
class VersionScores:
    """What promotion compares, on one test split: RMSE of predicted ratings (lower is better) and NDCG@10
    of the served lists (higher is better; None for a version registered before lists were measured)."""

    rmse: float
    ndcg: float | None

    @classmethod
    def rounded(cls, rmse: float, ndcg: float | None) -> VersionScores:
        return cls(round(rmse, SCORE_DECIMALS), None if ndcg is None else round(ndcg, SCORE_DECIMALS))


@dataclass(frozen=True)
class ChampionScores:
    """The champion the registry decides against: which version, of which data set, and its scores on this split
    (None when there is no champion, it learned from another data set, or it could not be loaded: `missing`)."""

    version: str | None = None
    dataset: str | None = None
    scores: VersionScores | None = None
    rescored: bool = False
    missing: str = "no champion yet"
