"""The Prefect server a flow command runs on when none is configured: the same temporary server Prefect would start
(its API app under uvicorn, SQLite under PREFECT_HOME, no UI), but started here and tied to this process, so that
no kill of the command leaves it behind. On Linux the kernel kills it when the process that started it dies, even by
`kill -9` or the out-of-memory killer; elsewhere it is stopped on every normal or interrupted exit."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

from flows.serve import api_answers, stop_server

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with(parent: int) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child killed when `parent` dies (Linux), or None where that is not possible."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def tie() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the tie was made
            os._exit(1)

    return tie


def configured_api_url() -> str | None:
    """The Prefect API this process already talks to (environment, profile, or a test harness), if any."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect.settings" not in sys.modules:
        return None
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def send_what_prefect_holds() -> None:
    """Log lines and events Prefect still queues go to the server before it stops (else: "Error logging to API")."""
    if "prefect.logging.handlers" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def start_api_server(port: int, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Prefect's API app (no UI) under uvicorn on 127.0.0.1:`port`, as Prefect starts its temporary server, tied to
    this process; `env` adds to this process's environment (PREFECT_HOME holds its SQLite database)."""
    env = os.environ | dict(env or {}) | {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                                          "PREFECT__SERVER_FINAL": "1"}
    return subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
        [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(find_spec("prefect").origin).parents[1]), "--factory",
         "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level", "error",
         "--lifespan", "on"], env=env, preexec_fn=die_with(os.getpid()))  # noqa: PLW1509 (prctl only)


def answers_in_time(server: subprocess.Popen, api_url: str, timeout_s: float) -> bool:
    """Wait until the Prefect API `server` started answers at `api_url`; False if it exits or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while not api_answers(api_url):
        if server.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@contextmanager
def temporary_prefect_server(timeout_s: float, meanwhile: Callable[[], object] = lambda: None) -> Iterator[str | None]:
    """Unless a Prefect API is configured, start the temporary server and point this process's Prefect at it
    (before Prefect is imported) for the duration; yields its API URL, or None when one was configured.
    `meanwhile` (importing the flow, seconds) runs while the server starts."""
    if configured_api_url():
        meanwhile()
        yield None
        return
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    server = start_api_server(port)
    os.environ["PREFECT_API_URL"] = api_url
    try:
        meanwhile()
        if not answers_in_time(server, api_url, timeout_s):
            raise RuntimeError(f"the temporary Prefect server on 127.0.0.1:{port} did not start")
        yield api_url
    finally:
        send_what_prefect_holds()
        os.environ.pop("PREFECT_API_URL", None)
        stop_server(server)
