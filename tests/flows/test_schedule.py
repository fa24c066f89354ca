"""`make serve` for real: a Prefect server on a free loopback port, the `retrain` deployment on a cron
schedule, one run triggered through the API and followed to completion, its promotion and a failing run posted by
Prefect's automations to a webhook receiver on 127.0.0.1, then Ctrl-C stops it all."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import PROJECT_ROOT, free_port, listening_hosts
from mlflow import MlflowClient

from flows.serve import DEPLOYMENT_NAME

pytestmark = pytest.mark.slow  # starts a Prefect server and runs a deployment


def _wait_for(check, timeout_s: float, what: str, serve: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            pytest.fail(f"make serve exited ({serve.returncode}) while waiting for {what}")
        try:
            result = check()
        except (httpx.HTTPError, ValueError):  # not answering yet, or not JSON yet
            result = None
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _json_or_none(response: httpx.Response):
    """The API may answer with an error while it is still starting: treat that as 'not yet'."""
    return response.json() if response.status_code == 200 else None


def _first_deployment(client: httpx.Client):
    deployments = _json_or_none(client.post("/deployments/filter", json={}))
    return deployments[0] if isinstance(deployments, list) and deployments else None


def _start_run(client: httpx.Client, deployment_id: str, parameters: dict | None = None) -> str | None:
    """Trigger a run now (as 'Run' in the UI does); a SQLite server can refuse while the runner writes."""
    response = client.post(f"/deployments/{deployment_id}/create_flow_run",
                           json={"parameters": parameters} if parameters else {})
    return response.json()["id"] if response.status_code in (200, 201) else None


def _final_state(client: httpx.Client, flow_run_id: str) -> str | None:
    flow_run = _json_or_none(client.get(f"/flow_runs/{flow_run_id}"))
    state = (flow_run or {}).get("state") or {}
    return state.get("type") if state.get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None


@pytest.fixture
def webhook():
    """A Slack-style webhook receiver on 127.0.0.1: its URL and the JSON bodies posted to it."""
    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def _posted(received: list, words: str):
    return next((body["text"] for body in received if words in body.get("text", "")), None)


def test_serve_deploys_retrain_on_a_cron_schedule_and_runs_it(small_data, settings, prefect_home, webhook):
    url, received = webhook
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(prefect_home), "ANIMEREC_DATA_ROOT": str(settings.data_root),
            "ANIMEREC_MLRUNS_DIR": str(settings.mlruns_dir), "ANIMEREC_NOTIFY_URL": url,
            "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    env |= {f"ANIMEREC_TRAINING__{name.upper()}": str(value)  # the tests' quick training, which gets promoted
            for name, value in settings.training.model_dump(include={
                "embedding_dim", "batch_size", "epochs", "learning_rate", "early_stopping_patience"}).items()}
    serve = subprocess.Popen([sys.executable, "-m", "flows", "serve", "--port", str(port), "--data", str(small_data),
                              "--cron", "30 4 * * *"], cwd=PROJECT_ROOT, env=env, start_new_session=True)
    try:
        with httpx.Client(base_url=api, timeout=10) as client:
            deployment = _wait_for(lambda: _first_deployment(client), 180, "the deployment", serve)
            assert listening_hosts(port) == {"127.0.0.1"}  # the server it started is local only
            assert deployment["name"] == DEPLOYMENT_NAME
            assert [(s["schedule"]["cron"], s["active"]) for s in deployment["schedules"]] == [("30 4 * * *", True)]
            assert deployment["paused"] is False
            assert deployment["parameters"] == {"data_dir": str(small_data), "skip_unchanged": True,
                                                "rating_scale": None, "dataset_name": None}
            assert deployment["global_concurrency_limit"]["limit"] == 1

            run_id = _wait_for(lambda: _start_run(client, deployment["id"]), 60, "a triggered run", serve)
            final = _wait_for(lambda: _final_state(client, run_id), 300, "the flow run", serve)
            assert final == "COMPLETED"
            keys = {a["key"] for a in client.post("/artifacts/filter", json={}).json()}
            assert {"retrain-row-counts", "retrain-row-counts-per-file", "retrain-validation", "retrain-scores",
                    "retrain-decision"} <= keys
            promoted = _wait_for(lambda: _posted(received, "new champion"), 60, "the promotion's post", serve)
            assert promoted.startswith(f"anime-recommender version 1 is the new champion of data set {small_data.name}")

            missing = {"data_dir": str(small_data / "missing")}
            failing = _wait_for(lambda: _start_run(client, deployment["id"], missing), 60, "a failing run", serve)
            assert _wait_for(lambda: _final_state(client, failing), 120, "the failing run", serve) == "FAILED"
            failed = _wait_for(lambda: _posted(received, "ended Failed"), 60, "the failure's post", serve)
            assert "retrain run " in failed and f"/runs/flow-run/{failing}" in failed
            assert len(received) == 2
        registry = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
        assert [str(v.version) for v in registry.search_model_versions("name = 'anime-recommender'")] == ["1"]
    finally:
        serve.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            serve.wait(timeout=60)
        finally:
            if serve.poll() is None:
                os.killpg(serve.pid, signal.SIGKILL)
    assert serve.returncode == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api}/health", timeout=2)  # the server this command started is gone
