"""The shared real MyAnimeList sample: the counts its README states must come out of ingest + validate."""

import pytest
from conftest import SHARED_SAMPLE

from pipeline.data.ingest import ingest
from pipeline.validation.validate import validate

pytestmark = [pytest.mark.shared_data(SHARED_SAMPLE / "rating.csv", SHARED_SAMPLE / "anime.csv"), pytest.mark.slow]


def test_sample_counts_reconcile(settings):
    validated = validate(ingest(SHARED_SAMPLE), settings)
    counts = validated.counts
    assert counts.rows_in == 520_609
    assert counts.unrated == 100_666
    assert counts.accepted == 419_943
    assert counts.quarantined == 0
    assert counts.anime_rows_in == 12_294
    assert len(validated.ratings["user_id"].unique()) == 4_714
    assert len(validated.ratings["anime_id"].unique()) == 7_157
    names = set(validated.anime["name"].to_pylist())
    assert not any("&#039;" in name for name in names)
