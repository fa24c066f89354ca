"""The registered recommender as people use it: the `animerec` CLI, and the real MLflow scoring server."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import evaluate_served, free_port, lineage_of, quick_settings, wait_until_answers

from flows.cli import main as cli_main
from pipeline.registry.registration import register_and_decide
from pipeline.registry.scores import ChampionScores
from pipeline.serving.bundle import load_recommender
from pipeline.serving.presentation import recommend, recommend_new
from pipeline.tracking.model_logging import log_model_bundle
from pipeline.tracking.runs import finish_run, start_run

# trains models and starts the MLflow scoring server; one worker builds the module's fixtures once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serving")]


@pytest.fixture(scope="module")
def store(small_models, small_data, tmp_path_factory):
    """The session's models registered as champion in this module's temp store; the CLI is pointed at that store.
    Yields the store's settings."""
    settings = quick_settings(tmp_path_factory.mktemp("serving"), dataset_name="tests")
    matrix, trained, ranking = small_models.matrix, small_models.trained.model, small_models.ranking.model
    lineage = lineage_of(settings, small_data, matrix)
    run_id = start_run(settings, lineage)
    uri = log_model_bundle(run_id, small_models.trained, ranking, matrix, settings.unrated_value,
                           settings.training.l2)
    report = evaluate_served(trained, ranking, matrix, settings)
    decision = register_and_decide(settings.registered_model_name, uri, run_id, report, ChampionScores(), matrix,
                                   lineage, "test bundle")
    finish_run(run_id, True)
    assert decision.promoted
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ANIMEREC_DATA_ROOT", str(settings.data_root))
        env.setenv("ANIMEREC_MLRUNS_DIR", str(settings.mlruns_dir))
        yield settings


@pytest.fixture(scope="module")
def champion(store):
    """The champion as `animerec` and the scoring server load it."""
    return load_recommender(f"models:/{store.registered_model_name}@champion")


def test_cli_recommend_similar_and_errors(champion, tmp_path, capsys):
    user_id = int(champion.users.ids[0])
    assert cli_main(["recommend", "--user-id", str(user_id), "--top", "4"]) == 0
    title, *out = capsys.readouterr().out.splitlines()
    assert title == f"top 4 for user {user_id} (predicted ratings on the 1-10 scale):"
    assert out[0].split() == ["anime_id", "name", "genre", "type", "predicted_rating", "because_you_watched"]
    assert len(out) == 5
    expected = recommend(champion, user_id, 4)
    assert [int(line.split()[0]) for line in out[1:]] == expected["anime_id"].tolist()
    assert all(line.rstrip().endswith(reasons[-20:]) for line, reasons in zip(out[1:], expected[
        "because_you_watched"], strict=True))

    assert cli_main(["recommend", "--user-id", str(user_id), "--top", "3", "--new"]) == 0
    out = capsys.readouterr().out.split("\nnew: not yet rated by many (")
    assert len(out) == 2 and out[1].startswith(f"{len(champion.rating.new_anime_ids)} anime with no ratings")
    fresh = recommend_new(champion, 3, user_id)
    rows = out[1].splitlines()[2:]
    assert [int(line.split()[0]) for line in rows] == fresh["anime_id"].tolist()
    assert all(line.rstrip().endswith(why) for line, why in zip(rows, fresh["why"], strict=True))

    name = champion.catalog.anime["name"][int(champion.anime.ids[0])]
    assert cli_main(["similar", "--anime", name.lower(), "--top", "3", "--include-self"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert name in out[0] and int(out[2].split()[0]) == int(champion.anime.ids[0])

    mine = tmp_path / "mine.csv"
    mine.write_text("name,rating\n" + "".join(f"\"{champion.catalog.anime['name'][int(a)]}\",9\n"
                                             for a in champion.anime.ids[:3]))
    assert cli_main(["recommend", "--ratings", str(mine), "--top", "3"]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == 3 and not {int(r.split()[0]) for r in rows} & set(champion.anime.ids[:3].tolist())

    for argv in (["recommend", "--user-id", "987654321"], ["similar", "--anime", "zzzz no such anime zzzz"],
                 ["similar-users", "--user-id", "987654321"], ["recommend", "--user-id", "1", "--model", "challenger"]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")


SERVE_WITHOUT_TENSORFLOW = """
import contextlib, io, json, sys
import pandas as pd
import mlflow
from flows.cli import main
from pipeline.serving.bundle import load_recommender

user, anime, uri = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with contextlib.redirect_stdout(io.StringIO()):
    codes = [main(["recommend", "--user-id", str(user)]), main(["similar", "--anime", anime])]
model = mlflow.pyfunc.load_model(uri)
answer = model.predict(pd.DataFrame({"user_id": [user]}), params={"n": 3})
loaded = [name for name in ("tensorflow", "keras") if name in sys.modules]
print(json.dumps({"codes": codes, "rows": len(answer), "loaded": loaded}))
"""


def test_recommend_similar_and_the_pyfunc_model_answer_without_importing_tensorflow(champion, store):
    """Serving reads the bundle's arrays: a process that answers from a registered version never imports TensorFlow
    or Keras (each costs seconds and hundreds of MB per server worker)."""
    child = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_TENSORFLOW, str(int(champion.users.ids[0])),
                            str(int(champion.anime.ids[0])), f"models:/{store.registered_model_name}@champion"],
                           capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0], "rows": 3, "loaded": []}


def test_mlflow_scoring_server_answers_top_n(champion, store):
    port = free_port()
    venv_bin = Path(sys.executable).parent  # the server runs `uvicorn` from PATH
    env = os.environ | {"MLFLOW_TRACKING_URI": store.tracking_uri, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    server = subprocess.Popen(
        [str(venv_bin / "mlflow"), "models", "serve", "-m",
         f"models:/{store.registered_model_name}@champion", "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port)], env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(server, f"{url}/ping", 180)
        user_id = int(champion.users.ids[5])
        new_user = json.dumps([{"anime_id": int(a), "rating": r} for a, r in zip(champion.anime.ids[:4], (10, 9, 3, 2),
                                                                                 strict=True)])
        body = {"dataframe_records": [{"user_id": user_id}, {"user_id": -1, "ratings": new_user}], "params": {"n": 5}}
        answer = httpx.post(f"{url}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        rows = answer.json()["predictions"]
        assert [(r["request"], r["rank"]) for r in rows] == [(q, k) for q in (0, 1) for k in range(1, 6)]
        first = [r for r in rows if r["request"] == 0]
        expected = recommend(champion, user_id, 5)
        assert [r["anime_id"] for r in first] == expected["anime_id"].tolist()
        assert [r["because_you_watched"] for r in first] == expected["because_you_watched"].tolist()
        assert all(r["because_you_watched"] for r in first)  # a known user's list always has a reason
        second = [r for r in rows if r["request"] == 1]
        assert {r["user_id"] for r in second} == {-1} and not {r["anime_id"] for r in second} & set(
            champion.anime.ids[:4].tolist())
        assert all(r["name"] for r in rows)
        # an anime of anime.csv that no rating names: its predicted rating from its features, and lists of them
        new_id = int(champion.rating.new_anime_ids[0])
        asked = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"user_id": user_id, "anime_id": new_id}]},
                           timeout=60).json()["predictions"]
        assert [r["anime_id"] for r in asked] == [new_id] and asked[0]["because_you_watched"]
        assert asked[0]["predicted_rating"] == pytest.approx(champion.predict_pairs([user_id], [new_id])[0], abs=1e-3)
        listed = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"user_id": user_id}],
                                                        "params": {"n": 3, "new": True}}, timeout=60).json()
        expected_new = recommend_new(champion, 3, user_id)
        assert [r["anime_id"] for r in listed["predictions"]] == expected_new["anime_id"].tolist()
        assert [r["because_you_watched"] for r in listed["predictions"]] == expected_new["why"].tolist()
        # errors name the problem in one sentence: no dump of the request, no stack trace
        anime = int(champion.anime.ids[0])
        off_scale = json.dumps([{"anime_id": anime, "rating": 99}])
        for records, sentence in (([{"user_id": 987654321}], "request row 0: unknown user id 987654321"),
                                  ([{"user": 5}], "the request has no rows"),
                                  ([{"ratings": off_scale}], f"request row 0: the rating 99 of anime {anime} is off "
                                                             "the 1–10 scale")):
            refused = httpx.post(f"{url}/invocations", json={"dataframe_records": records}, timeout=60)
            assert refused.status_code == 400 and refused.json()["message"].startswith(sentence), refused.text
            assert "\n" not in refused.json()["message"] and "stack_trace" not in refused.json()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    printed = server.stdout.read()
    assert "Started server process" in printed and not [word for word in ("absl", "oneDNN") if word in printed]
