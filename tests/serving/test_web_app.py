"""The web app over a registered champion: its JSON API against the served MLflow model, its answers to bad input,
following the alias, and its pages in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import RunningApp, quick_settings
from mlflow import MlflowClient

from flows.retrain import retrain
from pipeline.registry.scores import CHAMPION
from pipeline.serving.presentation import recommend, recommend_new, similar_anime
from pipeline.serving.web.answers import NEW_N

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server"),
              pytest.mark.xdist_group("web-app")]  # one worker builds the module's fixtures once
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("ANIMEREC_SCREENSHOTS")  # a folder: the browser test saves a picture of each page there


def raw_get(url: str, target: str) -> str:
    """The whole answer to a GET of `target`, sent as bytes on a socket."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return b"".join(iter(lambda: connection.recv(65536), b"")).decode()


@pytest.fixture(scope="module")
def champion(small_data, tmp_path_factory):
    settings = quick_settings(tmp_path_factory.mktemp("web"), dataset_name="tests")
    retrain(data_dir=small_data, settings=settings)
    return settings


@pytest.fixture(scope="module")
def app(champion):
    with RunningApp(champion) as running:
        yield running


@pytest.fixture(scope="module")
def pyfunc(champion):
    """The champion as the MLflow scoring server loads it."""
    import mlflow

    mlflow.set_tracking_uri(champion.tracking_uri)
    mlflow.set_registry_uri(champion.tracking_uri)
    return mlflow.pyfunc.load_model(f"models:/{champion.registered_model_name}@{CHAMPION}")


@pytest.fixture(scope="module")
def recommender(pyfunc):
    return pyfunc.unwrap_python_model().recommender


def test_api_answers_as_the_served_mlflow_model_does(app, pyfunc, recommender):
    anime = [int(a) for a in recommender.anime.ids[[3, 11, 19]]]
    ratings = [9, 4, "watched"]
    body = {"ratings": [{"anime_id": a, "rating": r} for a, r in zip(anime, ratings, strict=True)], "n": 10}
    answer = httpx.post(f"{app.url}/api/recommendations", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    rows = answer.json()
    served = pyfunc.predict(pd.DataFrame({"ratings": [json.dumps(
        [{"anime_id": a, "rating": recommender.unrated_value if r == "watched" else r}
         for a, r in zip(anime, ratings, strict=True)])]}), params={"n": 10})
    assert [r["anime_id"] for r in rows] == served["anime_id"].tolist()
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert [r["because_you_watched"] for r in rows] == served["because_you_watched"].tolist()
    np.testing.assert_allclose([r["predicted_rating"] for r in rows], served["predicted_rating"], atol=1e-3)
    assert not {r["anime_id"] for r in rows} & set(anime)  # nothing the person listed

    user = int(recommender.users.ids[0])
    known = httpx.get(f"{app.url}/api/users/{user}/recommendations", params={"n": 5}).json()
    assert [r["anime_id"] for r in known] == recommend(recommender, user, 5)["anime_id"].tolist()
    similar = httpx.get(f"{app.url}/api/anime/{anime[0]}/similar", params={"n": 5}).json()
    assert [r["anime_id"] for r in similar] == similar_anime(recommender, anime[0], 5)["anime_id"].tolist()
    assert httpx.get(f"{app.url}/api/anime/{anime[0]}/similar", params={"n": 3}).json() == similar[:3]  # kept
    model = httpx.get(f"{app.url}/api/model").json()
    assert model["version"] == "1" and model["alias"] == CHAMPION and model["dataset"] == "tests"
    assert model["new_anime"] == len(recommender.rating.new_anime_ids) > 0

    # new anime (no ratings yet): as the served model lists them, with the reason
    fresh = httpx.post(f"{app.url}/api/recommendations/new", json={**body, "n": 4}, timeout=30).json()
    served_new = pyfunc.predict(pd.DataFrame({"ratings": [json.dumps(
        [{"anime_id": a, "rating": recommender.unrated_value if r == "watched" else r}
         for a, r in zip(anime, ratings, strict=True)])]}), params={"n": 4, "new": True})
    assert [r["anime_id"] for r in fresh] == served_new["anime_id"].tolist()
    assert [r["why"] for r in fresh] == served_new["because_you_watched"].tolist() and all(r["why"] for r in fresh)
    assert set(r["anime_id"] for r in fresh) <= set(recommender.rating.new_anime_ids.tolist())
    user_new = httpx.get(f"{app.url}/api/users/{user}/recommendations/new", params={"n": 3}).json()
    assert [r["anime_id"] for r in user_new] == recommend_new(recommender, 3, user)["anime_id"].tolist()
    first_new = httpx.get(f"{app.url}/api/anime/{fresh[0]['anime_id']}", params={"n": 3}).json()
    assert first_new["new"] and first_new["ratings"] == 0 and len(first_new["similar"]) == 3


def test_title_search_forgives_case_punctuation_and_partial_words(app, recommender):
    name = next(n for n in recommender.catalog.anime["name"].dropna() if len(n.split()) >= 2)
    first, second = name.split()[:2]
    query = f"{first.upper()}!! {second[:3].lower()}"
    found = httpx.get(f"{app.url}/api/anime", params={"q": query}).json()
    assert name in [row["name"] for row in found]


@pytest.mark.parametrize(("method", "path", "payload", "status", "sentence"), [
    ("POST", "/api/recommendations", {"ratings": []}, 400, "add at least one anime"),
    ("POST", "/api/recommendations", {"ratings": [{"anime_id": "ANIME", "rating": 11}]}, 400, "off the 1–10 scale"),
    ("POST", "/api/recommendations", {"ratings": [{"anime_id": 987654321, "rating": 8}]}, 400, "is not known"),
    ("POST", "/api/recommendations", {"ratings": [{"anime_id": "ANIME", "rating": "great"}]}, 422,
     'entry 1 of the list: a rating is a whole number on the rating scale, or "watched"'),
    ("POST", "/api/recommendations", {"ratings": [{"anime_id": "ANIME"}]}, 422,
     "entry 1 of the list: a rating is missing"),
    ("POST", "/api/recommendations", {"ratings": [{"anime_id": "x", "rating": 8}]}, 422,
     "entry 1 of the list: an anime id is a whole number"),
    ("POST", "/api/recommendations", {"ratings": [{"anime_id": "ANIME", "rating": 8}] * 301}, 422,
     "a list holds at most 300 anime"),
    ("POST", "/api/recommendations", {"ratings": [{"anime_id": "ANIME", "rating": 8}], "colour": "red"}, 422,
     "'colour' is not something this request takes"),
    ("POST", "/api/recommendations", "{not json", 422, "not valid JSON"),
    ("GET", "/api/users/987654321/recommendations", None, 404, "unknown user id 987654321"),
    ("GET", "/api/users/1/recommendations?n=500", None, 422, "ask for between 1 and 100 anime"),
    ("GET", "/api/users/1/recommendations?min_ratings=-3", None, 422, "the minimum number of ratings is at least 0"),
    ("GET", "/api/users/someone", None, 422, "a user id is a whole number"),
    ("GET", "/api/anime/987654321", None, 404, "unknown anime id 987654321"),
    ("GET", "/api/anime?q=" + "a" * 101, None, 422, "a search is at most 100 characters"),
    ("GET", "/api/nowhere", None, 404, "there is no page at /api/nowhere"),
])
def test_bad_input_gets_a_4xx_and_one_sentence(app, recommender, method, path, payload, status, sentence):
    anime = int(recommender.anime.ids[0])
    if isinstance(payload, dict):
        payload = json.loads(json.dumps(payload).replace('"ANIME"', str(anime)))
        answer = httpx.request(method, app.url + path, json=payload)
    else:
        answer = httpx.request(method, app.url + path, content=payload,
                               headers={"content-type": "application/json"})
    assert answer.status_code == status
    error = answer.json()["error"]
    assert sentence.replace("ANIME", str(anime)) in error and "\n" not in error and "Traceback" not in error


def test_a_page_shows_the_sentence_and_static_files_are_cached(app, recommender):
    anime = int(recommender.anime.ids[0])
    page = httpx.get(f"{app.url}/recommendations", params={"r": f"{anime}:99"})
    assert page.status_code == 400 and f"The rating 99 of anime {anime} is off the 1–10 scale." in page.text
    entry = f"{anime}:9,"
    for length, status in ((6_000, 422), (100_000, 414)):  # past what the app reads, then past what uvicorn parses
        answer = raw_get(app.url, "/?r=" + entry * (length // len(entry) + 1))  # httpx refuses such a URL itself
        assert answer.startswith(f"HTTP/1.1 {status} ") and "ist holds at most 300 anime." in answer, length
    assert "public" in httpx.get(f"{app.url}/static/app.css").headers["cache-control"]
    docs = httpx.get(f"{app.url}/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert "<script>" not in docs  # no inline script: the page passes the Content-Security-Policy
    assert httpx.get(f"{app.url}/static/swagger/swagger-ui-bundle.js").status_code == 200
    document = httpx.get(f"{app.url}/openapi.json").json()
    body = document["paths"]["/api/recommendations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    reference = body["properties"]["ratings"]["items"]["$ref"]  # every schema the docs name is in the document
    assert reference.rsplit("/", 1)[1] in document["components"]["schemas"]


def test_doors_a_body_that_is_not_json_another_host_and_framing_are_refused(app, recommender):
    """A POST whose body is not declared JSON (what another site may send without a preflight) is a 415; a request
    for a host the app does not serve (DNS rebinding) is refused; every answer forbids framing and sniffing; HEAD is
    answered wherever GET is, and a 405 names what is."""
    body = json.dumps({"ratings": [{"anime_id": int(recommender.anime.ids[0]), "rating": 9}]})
    assert httpx.post(f"{app.url}/api/recommendations", content=body,
                      headers={"content-type": "application/json"}).status_code == 200
    for content_type in ("text/plain", None):
        refused = httpx.post(f"{app.url}/api/recommendations", content=body,
                             headers={"content-type": content_type} if content_type else {})
        assert refused.status_code == 415 and "Content-Type: application/json" in refused.json()["error"]
    assert httpx.get(f"{app.url}/api/model", headers={"host": "rebound.example.com"}).status_code == 400
    assert httpx.get(f"{app.url}/api/model", headers={"host": "localhost"}).status_code == 200
    for path in ("/", "/api/model", "/static/app.css"):
        headers = httpx.get(app.url + path).headers
        assert (headers["x-frame-options"], headers["x-content-type-options"], headers["referrer-policy"]) == (
            "DENY", "nosniff", "same-origin"), path
        assert "default-src 'self'" in headers["content-security-policy"], path
        head, get = httpx.head(app.url + path), httpx.get(app.url + path)  # HEAD wherever GET, without the body
        assert (head.status_code, head.content) == (get.status_code, b""), path
    wrong = httpx.post(f"{app.url}/api/model")  # a 405 says what is answered there
    assert wrong.status_code == 405 and {m.strip() for m in wrong.headers["allow"].split(",")} == {"GET", "HEAD"}
    assert wrong.json()["error"] == "POST is not answered at /api/model"


def test_no_champion_yet_says_to_run_the_pipeline(tmp_path):
    with RunningApp(quick_settings(tmp_path)) as empty:
        page = httpx.get(empty.url + "/")
        api = httpx.get(empty.url + "/api/model")
    assert page.status_code == 503 and "make pipeline" in page.text
    assert api.status_code == 503 and "make pipeline" in api.json()["error"]


def test_the_app_follows_the_champion_alias(champion):
    client = MlflowClient(tracking_uri=champion.tracking_uri, registry_uri=champion.tracking_uri)
    name = champion.registered_model_name
    first = client.get_model_version_by_alias(name, CHAMPION)
    with RunningApp(champion, refresh_seconds=0.2) as running:
        assert httpx.get(running.url + "/api/model").json()["version"] == str(first.version)
        second = client.create_model_version(name, first.source, first.run_id, tags=first.tags)
        client.set_registered_model_alias(name, CHAMPION, second.version)
        try:
            deadline = time.monotonic() + 30
            while httpx.get(running.url + "/api/model").json()["version"] != str(second.version):
                assert time.monotonic() < deadline, "the app kept serving the old champion"
                time.sleep(0.2)
            assert f"version {second.version} (champion)" in httpx.get(running.url + "/model").text
        finally:
            client.set_registered_model_alias(name, CHAMPION, first.version)


def _shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"app-{name}.png"), full_page=True)


def test_a_person_finds_anime_gets_ten_recommendations_with_reasons_and_follows_them(app, recommender):
    from playwright.sync_api import expect, sync_playwright

    names = [n for n in recommender.catalog.anime["name"].dropna() if len(n) > 3][:3]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        refused = []  # what the Content-Security-Policy blocked, on any page: it must be nothing
        page.on("console", lambda message: refused.append(message.text)
                if "Content Security Policy" in message.text else None)
        page.goto(app.url + "/")
        expect(page.locator("h1")).to_have_text("What have you watched?")
        for count, name in enumerate(names, start=1):
            page.fill("#search", name.lower())
            row = page.locator("#results li", has_text=name).first
            row.locator("select").select_option("9" if count < 3 else "w")
            row.locator("button").click()
            expect(page.locator("#mylist li")).to_have_count(count)
        _shot(page, "start")
        page.reload()
        expect(page.locator("#mylist li")).to_have_count(3)  # the list lives in the URL
        start = page.url
        page.click("#keep-list")  # the same list kept in a profile instead
        expect(page.locator("#myprofile li[data-anime]")).to_have_count(3)
        kept = page.locator("#myprofile select.change").evaluate_all("selects => selects.map(s => s.value)")
        assert sorted(kept) == ["9", "9", "w"]  # as rated in the list
        page.goto(start)

        page.click("#get-recommendations")
        cards = page.locator("#recommendations li.card")
        expect(cards).to_have_count(10)
        assert page.locator("#recommendations .because").count() >= 5
        _shot(page, "recommendations")

        new_cards = page.locator("#new-anime li.card")  # beside the list: anime nobody has rated yet
        expect(new_cards).to_have_count(min(NEW_N, len(recommender.rating.new_anime_ids)))
        expect(page.locator("#new-heading")).to_have_text("New: not yet rated by many")
        whys = new_cards.locator(".why").all_inner_texts()
        assert all(why.startswith(("you rate ", "predicted from what it is: ")) for why in whys)
        new_title = new_cards.first.locator(".title a").inner_text()
        recommendations = page.url

        title = cards.first.locator(".title a")
        listed = title.inner_text()
        title.click()
        expect(page.locator("h1")).to_have_text(listed)
        expect(page.locator("#similar li.card").first).to_be_visible()
        _shot(page, "anime")

        page.goto(recommendations)
        page.locator("#new-anime li.card .title a").first.click()
        expect(page.locator("h1")).to_have_text(new_title)
        expect(page.locator("main")).to_contain_text("0 ratings in the data · new: the model scores it from what it is")
        expect(page.locator("#similar li.card")).to_have_count(10)  # rated anime nearest by its features
        _shot(page, "new-anime")

        page.click("text=The model")
        expect(page.locator("dl.model")).to_contain_text("version 1 (champion)")
        expect(page.locator("dl.model")).to_contain_text(
            f"{len(recommender.rating.new_anime_ids)} anime of anime.csv that no rating names")
        _shot(page, "model")

        page.goto(app.url + "/users/" + str(int(recommender.users.ids[0])))
        expect(page.locator("#recommendations li.card")).to_have_count(10)
        _shot(page, "user")

        page.goto(app.url + "/recommendations?r=1:99")
        expect(page.locator(".error")).to_contain_text("off the 1–10 scale")

        document = httpx.get(f"{app.url}/openapi.json").json()  # the API docs list every operation the API has
        operations = sum(len(methods) for methods in document["paths"].values())
        page.goto(app.url + "/docs")
        expect(page.locator(".opblock")).to_have_count(operations)
        assert page.locator(".errors-wrapper").count() == 0  # Swagger UI's "Unable to render this definition"
        _shot(page, "docs")
        browser.close()
    assert refused == []
