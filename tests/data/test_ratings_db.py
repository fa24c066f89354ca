"""The ratings database, on SQLite and on a real PostgreSQL server alike: what a profile keeps, who can see it, the
write limit, and the export's watermark (every change exported into exactly one committed run as new)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect, text

from pipeline.data.ratings_db.export import commit_export, exported_watermark, read_app_ratings
from pipeline.data.ratings_db.schema import APP_USER_ID_BASE
from pipeline.data.ratings_db.store import ProfileFullError, RatingsStore, WriteLimitError, WriteLimits

LIMITS = WriteLimits(per_minute=1000, max_ratings=100)


@pytest.fixture
def store(ratings_db_url):
    opened = RatingsStore.open(ratings_db_url)
    yield opened
    opened.close()


def pairs(export) -> dict[tuple[int, int], int]:
    table = export.ratings
    return {(u, a): r for u, a, r in zip(table["user_id"].to_pylist(), table["anime_id"].to_pylist(),
                                         table["rating"].to_pylist(), strict=True)}


def test_the_schema_is_migrated_once_to_alembic_head(ratings_db_url):
    RatingsStore.open(ratings_db_url).close()
    again = RatingsStore.open(ratings_db_url)  # a second open finds it at head and changes nothing
    with again.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == ["0001"]
        assert connection.execute(text("SELECT value FROM change_counter")).scalars().all() == [0]
    assert {"profiles", "app_ratings", "change_counter", "exports"} <= set(inspect(again.engine).get_table_names())
    again.close()


def test_a_profile_keeps_changes_and_removes_its_ratings_and_forgetting_deletes_it(store, ratings_db_url):
    token, profile = store.create_profile()
    other_token, other = store.create_profile()
    assert len(token) >= 43 and token != other_token  # 256 random bits, base64url
    for anime, rating in ((11, 9), (12, None), (13, 4)):
        store.rate(profile, "sample", anime, rating, LIMITS)
    store.rate(other, "sample", 11, 2, LIMITS)
    store.rate(profile, "sample", 13, 7, LIMITS)  # changed
    assert store.remove(profile, "sample", 12, LIMITS) and not store.remove(profile, "sample", 12, LIMITS)
    store.rate(profile, "other-set", 11, 5, LIMITS)

    reopened = RatingsStore.open(ratings_db_url)  # committed: another connection pool sees it
    found = reopened.profile(token)
    assert found.id == profile.id and found.user_id == APP_USER_ID_BASE + profile.id
    assert {(r.anime_id, r.rating) for r in reopened.ratings(found, "sample")} == {(11, 9), (13, 7)}
    assert {(r.anime_id, r.rating) for r in reopened.ratings(reopened.profile(other_token), "sample")} == {(11, 2)}
    assert reopened.profile("not-a-token") is None and reopened.profile("") is None
    with reopened.engine.connect() as connection:  # the token itself is never stored
        assert connection.execute(text("SELECT count(*) FROM profiles WHERE token_sha256 = :t"), {"t": token}
                                  ).scalar_one() == 0

    reopened.forget(found)
    assert reopened.profile(token) is None
    assert pairs(read_app_ratings(reopened, "sample", -1)) == {(other.user_id, 11): 2}
    assert pairs(read_app_ratings(reopened, "other-set", -1)) == {}
    reopened.close()


def test_writes_past_the_limits_are_refused_and_not_kept(store):
    _, profile = store.create_profile()
    tight = WriteLimits(per_minute=3, max_ratings=2)
    store.rate(profile, "sample", 1, 8, tight)
    store.rate(profile, "sample", 2, 8, tight)
    with pytest.raises(ProfileFullError, match="at most 2 anime"):
        store.rate(profile, "sample", 3, 8, tight)
    store.rate(profile, "sample", 1, 5, tight)  # a change of one held: the refused write did not count
    with pytest.raises(WriteLimitError, match="at most 3 changes a minute") as refused:
        store.rate(profile, "sample", 2, 5, tight)
    assert 1 <= refused.value.retry_after <= 61
    assert {(r.anime_id, r.rating) for r in store.ratings(profile, "sample")} == {(1, 5), (2, 8)}


def test_an_export_counts_what_changed_since_the_last_committed_one(store):
    _, first = store.create_profile()
    _, second = store.create_profile()
    for anime in (1, 2, 3):
        store.rate(first, "sample", anime, anime + 5, LIMITS)
    store.rate(second, "sample", 1, None, LIMITS)

    killed = read_app_ratings(store, "sample", unrated_value=-1)  # a run that dies before it commits
    assert (killed.new_ratings, killed.ratings.num_rows) == (4, 4)
    assert pairs(killed)[(second.user_id, 1)] == -1  # watched: the data set's unrated value
    run = read_app_ratings(store, "sample", unrated_value=-1)
    assert run.new_ratings == 4 and pairs(run) == pairs(killed)  # exported again, not lost
    commit_export(store, run, "run-1")
    assert exported_watermark(store, "run-1") == run.watermark and exported_watermark(store, "run-2") is None

    after = read_app_ratings(store, "sample", unrated_value=-1)
    assert (after.new_ratings, after.since) == (0, run.watermark)  # a finished run's ratings are never new again
    store.rate(first, "sample", 2, 1, LIMITS)
    store.remove(first, "sample", 3, LIMITS)
    changed = read_app_ratings(store, "sample", unrated_value=-1)
    assert changed.new_ratings == 1
    assert pairs(changed) == {(first.user_id, 1): 6, (first.user_id, 2): 1, (second.user_id, 1): -1}


def test_an_export_read_beside_writers_holds_exactly_the_changes_up_to_its_watermark(store):
    profiles = [store.create_profile()[1] for _ in range(6)]
    exports, errors = [], []

    def writer(profile) -> None:
        try:
            for anime in range(30):
                store.rate(profile, "sample", anime, anime % 10 + 1, LIMITS)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(profile,)) for profile in profiles]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        exports.append(read_app_ratings(store, "sample", -1))
    for thread in threads:
        thread.join()
    assert errors == []
    final = read_app_ratings(store, "sample", -1)
    assert final.ratings.num_rows == final.watermark == 6 * 30  # one change number per write, none lost
    with store.engine.connect() as connection:
        changes = dict(connection.execute(text(
            "SELECT profile_id * 1000 + anime_id, change FROM app_ratings")).all())
    for export in exports:  # each snapshot holds every write numbered up to its watermark, and no later one
        held = {(user - APP_USER_ID_BASE) * 1000 + anime for user, anime in pairs(export)}
        assert held == {key for key, change in changes.items() if change <= export.watermark}
