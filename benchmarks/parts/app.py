"""Part `app`: the web app over the anime sample's champion, as `make app` serves it, under 16 concurrent clients
on 127.0.0.1 (a bounded load: each client sends its requests one after another), and its first page in Chromium.

Goals: a recommendation p99 ≤ 50 ms, a similar-anime p99 ≤ 20 ms, 0 errors, the first page rendered ≤ 1 s."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.csv as pacsv

from benchmarks.report import Table
from benchmarks.runs import PROJECT_ROOT, BenchContext, retrain_child

CLIENTS, REQUESTS_PER_CLIENT = 16, 150
PORT = 8765


async def _client(client: httpx.AsyncClient, requests: list, latencies: list[float], errors: list[int]) -> None:
    for method, url, body in requests:
        started = time.perf_counter()
        answer = await (client.post(url, json=body) if method == "POST" else client.get(url))
        latencies.append(time.perf_counter() - started)
        if answer.status_code != 200:
            errors.append(answer.status_code)


async def _load(base: str, requests: list) -> tuple[np.ndarray, int, float]:
    latencies: list[float] = []
    errors: list[int] = []
    async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=CLIENTS), timeout=30) as client:
        await _client(client, requests[:CLIENTS], [], [])  # warm the connections
        started = time.perf_counter()
        await asyncio.gather(*(_client(client, requests[i::CLIENTS], latencies, errors) for i in range(CLIENTS)))
        wall = time.perf_counter() - started
    return np.array(latencies) * 1000, len(errors), len(latencies) / wall


def first_render_ms(url: str) -> float:
    """Navigation start to the load event of the start page, in Chromium (a fresh browser profile)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.goto(url, wait_until="load")
        timing = page.evaluate("() => { const t = performance.getEntriesByType('navigation')[0]; "
                               "return t.loadEventEnd - t.startTime; }")
        browser.close()
    return float(timing)


def app_part(sample: Path, work: Path) -> Table:
    root = work / "app"
    retrain_child(root, "--data", str(sample))
    env = os.environ | {"ANIMEREC_DATA_ROOT": str(root / "data"), "ANIMEREC_MLRUNS_DIR": str(root / "mlruns")}
    server = subprocess.Popen([sys.executable, "-m", "flows", "app", "--port", str(PORT)], env=env, cwd=PROJECT_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{PORT}"
    try:
        _wait(base, server)
        user = int(pacsv.read_csv(sample / "rating.csv")["user_id"][0].as_py())
        anime = [row["anime_id"] for row in httpx.get(f"{base}/api/users/{user}").json()[:20]]
        rng = np.random.default_rng(0)
        n = CLIENTS * REQUESTS_PER_CLIENT
        lists = [{"ratings": [{"anime_id": int(a), "rating": int(r)} for a, r in zip(
            rng.choice(anime, 5, replace=False), rng.integers(5, 11, 5), strict=True)]} for _ in range(n)]
        kinds = {
            "recommendations for someone new (POST /api/recommendations, 5 rated anime)":
                [("POST", "/api/recommendations", body) for body in lists],
            "recommendations for a known user (GET /api/users/{id}/recommendations)":
                [("GET", f"/api/users/{user}/recommendations", None)] * n,
            "similar anime (GET /api/anime/{id}/similar)":
                [("GET", f"/api/anime/{anime[i % len(anime)]}/similar", None) for i in range(n)],
        }
        table = Table(f"The web app on the anime sample's champion: {CLIENTS} concurrent clients on 127.0.0.1",
                      ["request", "requests", "p50 ms", "p99 ms", "requests/s", "errors"])
        for label, requests in kinds.items():
            latencies, errors, rate = asyncio.run(_load(base, requests))
            table.rows.append([label, f"{len(latencies):,}", f"{np.percentile(latencies, 50):.1f}",
                               f"{np.percentile(latencies, 99):.1f}", f"{rate:.0f}", str(errors)])
        render = first_render_ms(base + "/?r=" + ",".join(f"{a}:9" for a in anime[:3]))
    finally:
        server.terminate()
        server.wait(timeout=30)
    table.notes.append(f"First page (the start page with a list of 3) in Chromium, navigation start to load event: "
                       f"{render:.0f} ms. `animerec app` (one process) in its own process; the clients are one "
                       "Python process (httpx, asyncio) on the same two cores. Goals: recommendation p99 ≤ 50 ms, "
                       "similar anime p99 ≤ 20 ms, no errors, first page ≤ 1 s.")
    return table


def _wait(base: str, server: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            raise RuntimeError("`animerec app` exited before answering")
        try:
            if httpx.get(base + "/api/model", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("`animerec app` did not answer")
        time.sleep(0.5)


def run(context: BenchContext) -> list[Table]:
    return [app_part(context.sample, context.run_dir)]
