"""A person's profile in the web app: kept in the ratings database under a cookie's token, shown to its owner only,
guarded against other sites and floods; and, in a real browser, learned by the next retrain and forgotten on request."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from conftest import RunningApp, copy_store, new_postgres_database, quick_settings
from sqlalchemy import text

from flows.retrain import retrain
from pipeline.data.ratings_db.schema import APP_USER_ID_BASE
from pipeline.data.ratings_db.store import RatingsStore
from pipeline.monitoring.new_ratings import all_ratings
from pipeline.registry.registration import promote_manually
from pipeline.registry.scores import CHAMPION

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server"),
              pytest.mark.xdist_group("champion-store")]  # one worker copies one trained store
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("ANIMEREC_SCREENSHOTS")
WRITES_PER_MINUTE = 12


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(request, champion_store, tmp_path_factory):
    """The app over a copy of the champion store, its ratings in a SQLite file or on the tests' PostgreSQL server."""
    database = None if request.param == "sqlite" else new_postgres_database(
        request.getfixturevalue("postgres_server"))
    settings = quick_settings(tmp_path_factory.mktemp("profiles"), dataset_name="tests", ratings_db=database,
                              profile_writes_per_minute=WRITES_PER_MINUTE, profile_max_ratings=50)
    copy_store(champion_store, settings)
    with RunningApp(settings) as running:
        yield running, settings


@pytest.fixture(scope="module")
def anime_ids(site) -> list[int]:
    app, _ = site
    return [row["anime_id"] for row in httpx.get(f"{app.url}/api/anime", params={"q": "a", "limit": 40}).json()]


def put(client: httpx.Client, url: str, anime: int, rating, **headers) -> httpx.Response:
    return client.put(f"{url}/api/me/ratings/{anime}", json={"rating": rating}, headers=headers)


def test_the_first_rating_creates_a_profile_that_only_its_cookie_opens(site, anime_ids):
    app, settings = site
    with httpx.Client() as owner, httpx.Client() as stranger:
        created = put(owner, app.url, anime_ids[0], 8)
        assert created.status_code == 201
        cookie = created.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
        token = owner.cookies["animerec_profile"]
        assert len(token) >= 22  # at least 128 random bits in base64url
        assert put(owner, app.url, anime_ids[1], "watched").status_code == 200  # same profile: no new cookie
        assert put(owner, app.url, anime_ids[0], 3).json()["rating"] == 3  # a change is visible at once
        mine = owner.get(f"{app.url}/api/me").json()
        assert {(r["anime_id"], r["rating"]) for r in mine["ratings"]} == {(anime_ids[0], 3), (anime_ids[1], None)}
        assert len(mine["recommendations"]) == 10 and mine["learned"] is False and "Folded in" in mine["note"]

        assert stranger.get(f"{app.url}/api/me").status_code == 404  # no cookie: no profile, nobody else's
        stranger.cookies.set("animerec_profile", token[:-2] + "xx")
        assert stranger.get(f"{app.url}/api/me").status_code == 404
        assert put(stranger, app.url, anime_ids[2], 9).status_code == 201  # a profile of its own
        assert [r["anime_id"] for r in stranger.get(f"{app.url}/api/me").json()["ratings"]] == [anime_ids[2]]

        store = RatingsStore.open(settings.ratings_db_url)
        profile = store.profile(token)
        for path in (f"/api/users/{profile.user_id}", f"/users/{profile.user_id}"):  # never shown as a known user
            answer = httpx.get(app.url + path)
            assert answer.status_code == 400 and "only its owner sees it" in answer.text
        assert owner.delete(f"{app.url}/api/me/ratings/{anime_ids[1]}").json()["removed"] is True
        assert owner.delete(f"{app.url}/api/me/ratings/{anime_ids[1]}").status_code == 404
        forgotten = owner.delete(f"{app.url}/api/me")
        assert forgotten.status_code == 200 and 'animerec_profile=""' in forgotten.headers["set-cookie"]
        assert store.profile(token) is None and owner.get(f"{app.url}/api/me").status_code == 404
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM app_ratings WHERE profile_id = :p"),
                                      {"p": profile.id}).scalar_one() == 0
        store.close()


@pytest.mark.parametrize(("headers", "body", "status", "sentence"), [
    ({"Origin": "http://evil.example"}, {"rating": 8}, 403, "must come from this site's own pages"),
    ({"Sec-Fetch-Site": "cross-site"}, {"rating": 8}, 403, "must come from this site's own pages"),
    ({"Content-Type": "text/plain"}, "8", 415, "send the rating as JSON"),
    ({}, {"rating": 99}, 400, "off the 1–10 scale"),
    ({}, {"rating": "nine"}, 422, "rating"),
    ({}, {"rating": 8, "note": "x" * 400}, 413, "a rating is a small JSON object"),
])
def test_a_bad_write_gets_a_4xx_with_one_sentence_and_keeps_nothing(site, anime_ids, headers, body, status, sentence):
    app, settings = site
    with httpx.Client() as client:
        content = body if isinstance(body, str) else None
        answer = client.put(f"{app.url}/api/me/ratings/{anime_ids[3]}", headers=headers, content=content,
                            json=None if content else body)
        assert answer.status_code == status
        assert sentence in answer.json()["error"] and "\n" not in answer.json()["error"]
        assert "animerec_profile" not in client.cookies  # no profile made for a refused write


def test_writes_past_the_limit_get_429_and_unknown_anime_a_sentence(site, anime_ids):
    app, _ = site
    with httpx.Client() as client:
        assert put(client, app.url, 10**12, 7).status_code == 400  # an anime the model does not know
        answers = [put(client, app.url, anime_ids[i % 5], 7).status_code for i in range(WRITES_PER_MINUTE + 2)]
        assert answers[:WRITES_PER_MINUTE] == [201] + [200] * (WRITES_PER_MINUTE - 1)
        refused = put(client, app.url, anime_ids[0], 5)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert f"at most {WRITES_PER_MINUTE} changes a minute" in refused.json()["error"]
        assert {r["rating"] for r in client.get(f"{app.url}/api/me").json()["ratings"]} == {7}  # the 5 was not kept


def _app_ratings_in(summary) -> dict[int, int]:
    """The app profiles' rated anime in a run's matrix: user id → how many."""
    table = all_ratings(summary.outcome.run.matrix, ["user_id"]).to_pandas()
    return table[table.user_id >= APP_USER_ID_BASE].user_id.value_counts().to_dict()


def _serve_the_new_version(settings, summary) -> str:
    """The version a retrain registered, as champion: promoted by its rule, or by hand as `make promote` would."""
    decision = summary.outcome.decision
    if not decision.promoted:
        promote_manually(settings.registered_model_name, decision.version, "serve what learned the profile", "tests")
    return decision.version


@pytest.mark.parametrize("site", ["sqlite"], indirect=True)  # the API tests above run on both databases
def test_a_person_rates_five_anime_a_retrain_learns_them_and_forget_me_removes_them(site, small_data):
    from playwright.sync_api import expect, sync_playwright

    app, settings = site
    # the retrains' data and what the page says of them are checked, not their models' quality: short fits
    short = settings.model_copy(update={"training": settings.training.model_copy(update={"epochs": 2})})
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(app.url + "/me")
        expect(page.locator("#what-is-kept")).to_contain_text("a SQLite file in its data folder")
        for count in range(1, 6):
            page.fill("#search", "a")
            row = page.locator("#results li").nth(count)
            row.locator("select").select_option(str(4 + count))
            row.locator("button").click()
            expect(page.locator("#myprofile li[data-anime]")).to_have_count(count)
        page.reload()
        expect(page.locator("#myprofile li[data-anime]")).to_have_count(5)  # kept on the server, not in the URL
        token = next(c["value"] for c in page.context.cookies() if c["name"] == "animerec_profile")
        store = RatingsStore.open(settings.ratings_db_url)
        user = store.profile(token).user_id
        store.close()
        expect(page.locator("#recommendation-source")).to_have_attribute("data-learned", "no")
        _shot(page, "profile-folded-in")

        summary = retrain(data_dir=small_data, settings=short)
        counts = _app_ratings_in(summary)
        assert counts[user] == 5
        assert summary.outcome.new_data.new_ratings == sum(counts.values())  # new data, as inbox ratings are
        version = _serve_the_new_version(settings, summary)
        for _ in range(40):  # the app follows the alias within its refresh period
            page.reload()
            if page.locator("#recommendation-source").get_attribute("data-learned") == "yes":
                break
            page.wait_for_timeout(250)
        expect(page.locator("#recommendation-source")).to_have_text(
            f"From version {version} ({CHAMPION}), which learned your ratings when it was trained.")
        expect(page.locator("#recommendations li.card")).to_have_count(10)
        _shot(page, "profile-learned")

        page.once("dialog", lambda dialog: dialog.accept())  # "Delete your profile and every rating in it?"
        page.click("#forget-me")
        expect(page.locator("label[for=search]")).to_have_text("Rate an anime to start your profile")
        expect(page.locator("#myprofile")).to_have_count(0)
        assert not [c for c in page.context.cookies() if c["name"] == "animerec_profile"]
        browser.close()
    after = _app_ratings_in(retrain(data_dir=small_data, settings=short))
    assert user not in after and set(after) == set(counts) - {user}


def _shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"app-{name}.png"), full_page=True)

