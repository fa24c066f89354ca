"""`make serve`: start a local Prefect server if none answers, then serve `retrain` on a cron schedule.

The deployment, its schedule, its runs (task states, logs, artifacts) are in the Prefect UI at
http://127.0.0.1:4200; "Run" there starts one now. Ctrl-C pauses the deployment and stops the server
this command started (a server that was already running is left alone).
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    from pipeline.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="Prefect server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--cron", default=settings.retrain_cron, help=f"schedule (default '{settings.retrain_cron}')")
    parser.add_argument("--data", type=Path, help="data folder or .zip for scheduled runs (default: demo data)")
    parser.add_argument("--rating-scale", help="the data's rating scale, MIN-MAX (default: dataset.toml, else 1-10)")
    parser.add_argument("--dataset-name", help="the data set's name (default: dataset.toml's name, else the folder's)")
    parser.add_argument("--server-timeout", type=float, default=120, help="seconds to wait for a new server")
    args = parser.parse_args(argv)

    api_url = f"http://{args.host}:{args.port}/api"
    server = None if api_answers(api_url) else start_server(args.host, args.port, api_url, args.server_timeout)
    os.environ["PREFECT_API_URL"] = api_url  # before Prefect is imported: the flow talks to this server
    signal.signal(signal.SIGINT, _interrupt_as_sigterm)
    try:
        from prefect.deployments.runner import EntrypointType

        from flows.retrain import retrain

        print(f"Prefect UI: http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
        retrain.serve(
            name=DEPLOYMENT_NAME, cron=args.cron, global_limit=1, limit=1,
            parameters={"data_dir": str(args.data.resolve()) if args.data else None, "skip_unchanged": True,
                        "rating_scale": args.rating_scale, "dataset_name": args.dataset_name},
            description="Scheduled retrain: merges the inbox, skips unchanged data, registers and promotes.",
            tags=["anime-recommender"], entrypoint_type=EntrypointType.MODULE_PATH,
        )
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if server is not None:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
