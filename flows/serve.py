"""`animerec serve` (`make serve`): start a local Prefect server if none answers, then serve `retrain` on a
cron schedule.

The deployment, its schedule, its runs (task states, logs, artifacts) are in the Prefect UI at
http://127.0.0.1:4200; "Run" there starts one now. Ctrl-C pauses the deployment and stops the server
this command started (a server that was already running is left alone).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEPLOYMENT_NAME = "scheduled-retrain"


def api_answers(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:  # noqa: S310 (http://host:port)
            return response.status == 200
    except OSError:
        return False


def start_server(host: str, port: int, api_url: str, timeout_s: float) -> subprocess.Popen:
    """`prefect server start` (SQLite under PREFECT_HOME, analytics off) in its own session, so Ctrl-C
    reaches this command first and the server is stopped after the deployment is paused."""
    env = os.environ | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_API_HOST": host}
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port",
                               str(port)], env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while not api_answers(api_url):
        if server.poll() is not None or time.monotonic() > deadline:
            stop_server(server)
            raise SystemExit(f"error: Prefect server on {host}:{port} did not start (see its log above)")
        time.sleep(1)
    return server


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _interrupt_as_sigterm(signum, frame) -> None:
    """Ctrl-C → the runner's graceful SIGTERM shutdown (pause the deployment, stop in-flight runs) once the
    runner has installed it; before that, a plain KeyboardInterrupt."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):
        raise KeyboardInterrupt
    os.kill(os.getpid(), signal.SIGTERM)


def serve_on_schedule(host: str, port: int, cron: str, data: Path | None, rating_scale: str | None,
                      dataset_name: str | None, server_timeout_s: float, notify_url: str | None) -> int:
    """Start a Prefect server on host:port unless one answers there, set up the notifications to `notify_url`, then
    serve `retrain` as the cron deployment until Ctrl-C; stop the server if this call started it."""
    api_url = f"http://{host}:{port}/api"
    server = None if api_answers(api_url) else start_server(host, port, api_url, server_timeout_s)
    os.environ["PREFECT_API_URL"] = api_url  # before Prefect is imported: the flow talks to this server
    signal.signal(signal.SIGINT, _interrupt_as_sigterm)
    try:
        from prefect.deployments.runner import EntrypointType

        from flows.console import quiet_expected_errors
        from flows.notifications import set_up_notifications
        from flows.retrain import retrain
        from pipeline.errors import PipelineInputError, RegistryUnavailableError
        from pipeline.storage import LockBusyError

        quiet_expected_errors(PipelineInputError, LockBusyError, RegistryUnavailableError)
        if notify_url:
            automations = set_up_notifications(notify_url, f"http://{host}:{port}")
            print(f"notifications to {notify_url}: {', '.join(automations)}", flush=True)
        else:
            print("notifications: off (set ANIMEREC_NOTIFY_URL to a webhook to have failures and new champions "
                  "posted)", flush=True)
        print(f"Prefect UI: http://{host}:{port}  (Ctrl-C to stop)", flush=True)
        retrain.serve(
            name=DEPLOYMENT_NAME, cron=cron, global_limit=1, limit=1,
            parameters={"data_dir": str(data.resolve()) if data else None, "skip_unchanged": True,
                        "rating_scale": rating_scale, "dataset_name": dataset_name},
            description="Scheduled retrain: merges the inbox, skips unchanged data, registers and promotes.",
            tags=["anime-recommender"], entrypoint_type=EntrypointType.MODULE_PATH,
        )
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if server is not None:
            stop_server(server)
    return 0
