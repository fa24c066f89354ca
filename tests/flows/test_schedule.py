"""`make serve` for real: a Prefect server on a free loopback port, the `retrain` deployment on a cron
schedule, one run triggered through the API and followed to completion, then Ctrl-C stops it all."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import listening_hosts
from mlflow import MlflowClient

from flows.serve import DEPLOYMENT_NAME

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # starts a Prefect server and runs a deployment


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}")


def _json_or_none(response: httpx.Response):
    """The API may answer with an error while it is still starting: treat that as 'not yet'."""
    return response.json() if response.status_code == 200 else None


def _first_deployment(client: httpx.Client):
    deployments = _json_or_none(client.post("/deployments/filter", json={}))
    return deployments[0] if isinstance(deployments, list) and deployments else None


def _start_run(client: httpx.Client, deployment_id: str) -> str | None:
    """Trigger a run now (as 'Run' in the UI does); a SQLite server can refuse while the runner writes."""
    response = client.post(f"/deployments/{deployment_id}/create_flow_run", json={})
    return response.json()["id"] if response.status_code in (200, 201) else None


def _final_state(client: httpx.Client, flow_run_id: str) -> str | None:
    flow_run = _json_or_none(client.get(f"/flow_runs/{flow_run_id}"))
    state = (flow_run or {}).get("state") or {}
    return state.get("type") if state.get("type") in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None


def test_serve_deploys_retrain_on_a_cron_schedule_and_runs_it(small_data, settings, prefect_home):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(prefect_home), "ANIMEREC_DATA_ROOT": str(settings.data_root),
            "ANIMEREC_MLRUNS_DIR": str(settings.mlruns_dir), "ANIMEREC_TRAINING__EPOCHS": "3",
            "ANIMEREC_TRAINING__EMBEDDING_DIM": "16", "ANIMEREC_TRAINING__BATCH_SIZE": "1024",
            "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    serve = subprocess.Popen([sys.executable, "-m", "flows", "serve", "--port", str(port), "--data", str(small_data),
                              "--cron", "30 4 * * *"], cwd=REPO, env=env, start_new_session=True)
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
