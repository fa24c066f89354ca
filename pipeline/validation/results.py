"""What validation hands on: the suites' outcomes, the row counts that reconcile, the rating-scale check and the
validated data with its version."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from pipeline.hashing import multiset_digest

RATING_COLUMNS = ["user_id", "anime_id", "rating"]
SUITE_RATING_COLUMNS = ["source_rank", *RATING_COLUMNS]


@dataclass(frozen=True)
class ExpectationOutcome:
    expectation: str
    column: str
    success: bool
    unexpected_count: int
    on_failure: str


@dataclass(frozen=True)
class SuiteReport:
    suite: str
    source: str
    rows_in: int
    quarantined: int
    outcomes: list[ExpectationOutcome]
    gx_result: dict[str, Any] = field(repr=False)
    neutralized: dict[str, Any] = field(default_factory=dict, repr=False)  # column → rows (numpy) of `neutral` fails

    def summary_lines(self) -> list[str]:
        passed = sum(o.success for o in self.outcomes)
        lines = [f"suite '{self.suite}' on {self.source}: {passed}/{len(self.outcomes)} expectations passed, "
                 f"{self.quarantined:,} of {self.rows_in:,} rows quarantined"]
        lines += [f"  FAILED {o.expectation}({o.column}): {o.unexpected_count:,} rows -> {o.on_failure}"
                  for o in self.outcomes if not o.success]
        return lines


@dataclass(frozen=True)
class ValidationCounts:
    rows_in: int
    accepted: int
    unrated: int  # interactions without a rating: −1 rows, Kaggle 2020 list entries that are not ratings
    quarantined: int
    superseded: int  # valid rows replaced by a newer rating of the same (user, anime) in a later file
    anime_rows_in: int
    anime_accepted: int
    anime_quarantined: int
    ratings_without_metadata: int  # accepted ratings whose anime is not in anime.csv (kept)
    anime_neutralized: dict[str, int] = field(default_factory=dict)  # column → cells left out as neutral features
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)  # the same four counts, file by file
    unrated_by_status: dict[str, int] = field(default_factory=dict)  # watched / watching / dropped / …

    def __post_init__(self) -> None:
        for name, c in [("all files", asdict(self)), *self.per_source.items()]:
            if c["rows_in"] != c["accepted"] + c["unrated"] + c["quarantined"] + c["superseded"]:
                raise AssertionError(f"counts of {name} do not reconcile: {c}")


@dataclass(frozen=True)
class ScaleCheck:
    """The declared rating scale against the accepted ratings."""

    minimum: int
    maximum: int
    observed_min: int | None
    observed_max: int | None

    @property
    def warning(self) -> str | None:
        """Set when the data use only part of the scale (a 1–5 data set read as 1–10, say)."""
        if self.observed_min is None or (self.observed_min, self.observed_max) == (self.minimum, self.maximum):
            return None
        return (f"the ratings use only {self.observed_min}-{self.observed_max} of the declared {self.minimum}-"
                f"{self.maximum} scale; if their scale is {self.observed_min}-{self.observed_max}, say so with "
                f"RATING_SCALE={self.observed_min}-{self.observed_max} (make pipeline) or rating_scale = "
                f"\"{self.observed_min}-{self.observed_max}\" in dataset.toml beside the data")


@dataclass(frozen=True)
class ValidatedData:
    ratings: pa.Table  # accepted ratings: user_id, anime_id, rating
    unrated: pa.Table  # interactions without a rating: user_id, anime_id, watching_status (0 = not given)
    quarantine: pa.Table  # rating rows left out: source, row_number, user_id, anime_id, rating, reason
    anime: pa.Table  # accepted anime metadata
    anime_quarantine: pa.Table  # anime.csv rows left out, with reason
    counts: ValidationCounts
    reports: list[SuiteReport]
    scale: ScaleCheck

    def summary(self) -> str:
        lines = [line for report in self.reports for line in report.summary_lines()]
        return "\n".join(lines + ([f"warning: {self.scale.warning}"] if self.scale.warning else []))

    @functools.cached_property
    def data_version(self) -> str:
        """Names the matrix folder and tells whether the data changed since the last trained run."""
        return data_version_of(self.ratings, self.unrated)


def data_version_of(ratings: pa.Table, unrated: pa.Table | None = None) -> str:
    """Content hash of the accepted ratings and of the interactions without a rating (the ranking model learns
    from both), independent of row order in the source files."""
    digest = multiset_digest(*(ratings[name] for name in RATING_COLUMNS))
    if unrated is None or unrated.num_rows == 0:
        return digest[:16]
    listed = multiset_digest(*(unrated[name] for name in ("user_id", "anime_id", "watching_status")))
    return hashlib.sha256(f"{digest}:{listed}".encode()).hexdigest()[:16]
