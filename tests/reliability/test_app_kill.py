"""`kill -9` of the web app (`animerec app`, its own process) while people write ratings: every write it acknowledged
is in the database afterwards, with the value acknowledged, on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from conftest import (
    PROJECT_ROOT,
    child_env,
    copy_store,
    free_port,
    new_postgres_database,
    quick_settings,
    wait_until_answers,
)

from pipeline.data.ratings_db.store import RatingsStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server"),
              pytest.mark.xdist_group("champion-store")]  # one worker copies one trained store
CLIENTS = 4
KILL_AFTER_ACKS = 150


def _writer(url: str, anime: list[int], acknowledged: list[tuple[str, int, int]], enough: threading.Event) -> None:
    """People one after another, each rating every anime once (so each acknowledged write is one row of its own),
    until the app dies."""
    while True:
        with httpx.Client(timeout=10) as client:  # a new browser: its first write makes a new profile
            for index, anime_id in enumerate(anime):
                rating = index % 10 + 1
                try:
                    answer = client.put(f"{url}/api/me/ratings/{anime_id}", json={"rating": rating})
                except httpx.HTTPError:
                    return  # the app is gone: this write was never acknowledged
                assert answer.status_code in (200, 201), answer.text
                acknowledged.append((client.cookies["animerec_profile"], anime_id, rating))
                if len(acknowledged) >= KILL_AFTER_ACKS:
                    enough.set()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_killed_app_loses_no_acknowledged_write(database, champion_store, tmp_path, request):
    settings = quick_settings(tmp_path, dataset_name="tests", ratings_db=None if database == "sqlite" else
                              new_postgres_database(request.getfixturevalue("postgres_server")))
    copy_store(champion_store, settings)
    port = free_port()
    env = child_env(settings) | {"ANIMEREC_PROFILE_WRITES_PER_MINUTE": "100000"}
    if settings.ratings_db:
        env["ANIMEREC_RATINGS_DB"] = settings.ratings_db
    # SQLite: `make app`'s default, a worker process per core writing to one file; PostgreSQL: one (the server is
    # another process either way)
    workers = "2" if database == "sqlite" else "1"
    app = subprocess.Popen([str(Path(sys.executable).parent / "animerec"), "app", "--port", str(port), "--workers",
                            workers], env=env,
                           cwd=PROJECT_ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(app, f"{url}/api/model", 120)
        anime = [row["anime_id"] for row in httpx.get(f"{url}/api/anime", params={"q": "a", "limit": 100}).json()]
        acknowledged: list[tuple[str, int, int]] = []
        enough = threading.Event()
        writers = [threading.Thread(target=_writer, args=(url, anime, acknowledged, enough))
                   for i in range(CLIENTS)]
        for writer in writers:
            writer.start()
        assert enough.wait(60), f"only {len(acknowledged)} writes acknowledged"
        os.killpg(app.pid, signal.SIGKILL)  # mid-load: writes are in flight
        for writer in writers:
            writer.join(timeout=30)
    finally:
        if app.poll() is None:
            os.killpg(app.pid, signal.SIGKILL)
        app.wait(timeout=30)
    assert app.returncode == -signal.SIGKILL
    store = RatingsStore.open(settings.ratings_db_url)  # opened after the crash: SQLite replays its write-ahead log
    kept = {}
    for token in {token for token, _, _ in acknowledged}:
        profile = store.profile(token)
        kept |= {(token, item.anime_id): item.rating for item in store.ratings(profile, settings.dataset_name)}
    store.close()
    lost = [(token[:6], anime_id, rating) for token, anime_id, rating in acknowledged
            if kept.get((token, anime_id)) != rating]
    assert lost == [] and len(acknowledged) >= KILL_AFTER_ACKS
    assert len(kept) - len(acknowledged) <= CLIENTS  # at most the writes in flight were kept unacknowledged
