"""Which data a run learned from: what the registry compares versions within, and what a run records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lineage:
    """Which data a run learned from. Versions are compared only within one data set (the same name); the
    data version and the source files' sha256 say which state of it."""

    dataset: str
    data_version: str
    location: Path  # the data folder or .zip
    source_sha256: dict[str, str]
