"""Part `app`: the web app over the anime sample's champion, as `make app` serves it, under 16 concurrent clients
on 127.0.0.1 (`wrk`, Debian's package: each connection sends its next request when the last is answered), and
its first page in Chromium.

Goals: a recommendation p99 ≤ 50 ms, a similar-anime p99 ≤ 20 ms, 0 errors, the first page rendered ≤ 1 s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pyarrow.csv as pacsv

from benchmarks.parts.app_writes import write_load
from benchmarks.parts.wrk import CLIENTS, lua_list, run_wrk
from benchmarks.report import Table
from benchmarks.runs import PROJECT_ROOT, BenchContext, retrain_child
from pipeline.settings import Settings

LOAD_SECONDS, WARM_UP_SECONDS = 10, 5
PORT = 8765


def wrk_load(base: str, method: str, paths: list[str], bodies: list[str] | None, work: Path,
             seconds: int = LOAD_SECONDS) -> dict:
    """`wrk` (C, one thread, CLIENTS connections) for `seconds`, the requests taken in turn from `paths` (and
    `bodies`): latency percentiles, requests/s, and every answer that was not 200 or failed."""
    script = work / f"load-{len(list(work.glob('load-*.lua')))}.lua"
    script.write_text(f"""
paths = {lua_list(paths)}
bodies = {lua_list(bodies or [])}
i = 0
request = function()
  i = i + 1
  local body = nil
  if #bodies > 0 then body = bodies[(i % #bodies) + 1] end
  return wrk.format("{method}", paths[(i % #paths) + 1], {{["Content-Type"] = "application/json"}}, body)
end
""")
    return run_wrk(base, script, seconds)


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


def app_part(sample: Path, work: Path) -> list[Table]:
    root = work / "app"
    retrain_child(root, "--data", str(sample))
    env = os.environ | {"ANIMEREC_DATA_ROOT": str(root / "data"), "ANIMEREC_MLRUNS_DIR": str(root / "mlruns")}
    base = f"http://127.0.0.1:{PORT}"
    with _app(env | {"ANIMEREC_REGISTERED_MODEL_NAME": "no-such-model"}, base, ready=503) as server:
        bare = [worker_memory(pid) for pid in _workers(server)]  # every library imported, no version loaded
    started = time.monotonic()
    with _app(env, base, ready=200) as server:
        first_answer = time.monotonic() - started
        user = int(pacsv.read_csv(sample / "rating.csv")["user_id"][0].as_py())
        anime = [row["anime_id"] for row in httpx.get(f"{base}/api/users/{user}").json()[:20]]
        rng = np.random.default_rng(0)
        bodies = [json.dumps({"ratings": [{"anime_id": int(a), "rating": int(r)} for a, r in zip(
            rng.choice(anime, 5, replace=False), rng.integers(5, 11, 5), strict=True)]}) for _ in range(50)]
        kinds = {
            "recommendations for someone new (POST /api/recommendations, 5 rated anime)":
                ("POST", ["/api/recommendations"], bodies),
            "recommendations for a known user (GET /api/users/{id}/recommendations)":
                ("GET", [f"/api/users/{user}/recommendations"], None),
            "similar anime (GET /api/anime/{id}/similar)":
                ("GET", [f"/api/anime/{a}/similar" for a in anime], None),
        }
        table = Table(f"The web app on the anime sample's champion: {CLIENTS} concurrent clients on 127.0.0.1",
                      ["request", "requests", "p50 ms", "p99 ms", "requests/s", "errors"])
        for label, (method, paths, payloads) in kinds.items():
            wrk_load(base, method, paths, payloads, root, seconds=WARM_UP_SECONDS)  # every worker loaded and warm
            load = wrk_load(base, method, paths, payloads, root)
            table.rows.append([label, f"{load['requests']:,}", f"{load['p50']:.1f}", f"{load['p99']:.1f}",
                               f"{load['rate']:.0f}", str(load["errors"])])
        render = first_render_ms(base + "/?r=" + ",".join(f"{a}:9" for a in anime[:3]))
        loaded = [worker_memory(pid) for pid in _workers(server)]
        writes = write_load(base, Settings(data_root=root / "data").ratings_db_url, anime, root)
    table.notes.append(
        f"First answer (GET /api/model) {first_answer:.1f} s after `animerec app` starts; first page (the start "
        f"page with a list of 3) in Chromium, navigation start to load event: {render:.0f} ms. `animerec app` as "
        "`make app` starts it (one worker process per core, each answering on one thread); the clients are `wrk` "
        f"(one thread, {CLIENTS} connections, {LOAD_SECONDS} s per kind of request after {WARM_UP_SECONDS} s not "
        "counted) on the same cores. The app keeps each anime's similar-anime answer once given, so the measured "
        "requests for these 20 anime are answered from it; the first for an anime computes it. Goals: "
        "recommendation p99 ≤ 50 ms, similar anime p99 ≤ 20 ms, no errors, first answer ≤ 5 s, first page ≤ 1 s.")
    return [table, writes, memory_table(bare, loaded, bundle_array_bytes(root))]


def worker_memory(pid: int) -> dict[str, float]:
    """A process's resident memory and the part of it no other process shares (MiB, /proc/PID/smaps_rollup)."""
    fields = {line.split(":")[0]: int(line.split()[1]) for line in
              Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]}
    return {"rss": fields["Rss"] / 1024, "private": (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024}


def bundle_array_bytes(root: Path) -> int:
    """What the served version's arrays take in memory: the rating and ranking models, id maps, known pairs."""
    from pipeline.registry.store import configure_tracking
    from pipeline.serving.bundle import load_recommender
    settings = Settings(data_root=root / "data", mlruns_dir=root / "mlruns")
    configure_tracking(settings)
    recommender = load_recommender(f"models:/{settings.registered_model_name}@champion")
    rating, ranking = recommender.rating, recommender.ranking
    arrays = [rating.user_vectors, rating.user_bias, rating.anime_vectors, rating.anime_bias, ranking.weights.data,
              ranking.weights.indices, ranking.weights.indptr, ranking.precision_diagonal, recommender.users.ids,
              recommender.anime.ids]
    return sum(array.nbytes for array in arrays) + recommender.known.nbytes


def memory_table(bare: list[dict], loaded: list[dict], array_bytes: int) -> Table:
    table = Table("Memory of each app worker (MiB), as `make app` serves the anime sample's champion",
                  ["worker", "resident", "own (not shared)", "own, without a model loaded",
                   "the model's share of own", "the bundle's arrays", "ratio"])
    arrays = array_bytes / 2**20
    bare_private = sum(worker["private"] for worker in bare) / len(bare)
    for number, worker in enumerate(loaded, start=1):
        added = worker["private"] - bare_private
        table.rows.append([str(number), f"{worker['rss']:.0f}", f"{worker['private']:.0f}", f"{bare_private:.0f}",
                           f"{added:.0f}", f"{arrays:.0f}", f"{added / arrays:.1f}"])
    table.notes.append(
        "Measured after the load above, from /proc/PID/smaps_rollup. \"Own\" is the memory only that worker holds "
        "(private pages); the libraries' code is shared by the workers. \"Without a model loaded\": the same app "
        "started over a registered model name that has no version, so each worker imports every library and loads "
        "nothing. The model's share is the difference; the ratio divides it by the bytes of the bundle's arrays (both "
        "models, id maps, known pairs). Goal: ratio about 2 or less.")
    return table


@contextmanager
def _app(env: dict[str, str], base: str, ready: int):
    """`animerec app` (as `make app` starts it) until it answers GET /api/model with `ready`; stopped on leaving."""
    server = subprocess.Popen([sys.executable, "-m", "flows", "app", "--port", str(PORT)], env=env, cwd=PROJECT_ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(base, server, ready)
        yield server
    finally:
        server.terminate()
        server.wait(timeout=30)


def _workers(server: subprocess.Popen) -> list[int]:
    """The app's worker processes (uvicorn's small helper processes aside), once their memory has settled."""
    def workers() -> dict[int, float]:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        return {int(pid): memory["rss"] for pid in children if (memory := worker_memory(int(pid)))["rss"] > 50}

    settled, seen = 0, workers()
    while settled < 3:
        time.sleep(0.5)
        now = workers()
        settled, seen = (settled + 1 if now.keys() == seen.keys() and all(
            abs(now[pid] - seen[pid]) < 1 for pid in now) else 0), now
    return sorted(seen)


def _wait(base: str, server: subprocess.Popen, ready: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            raise RuntimeError("`animerec app` exited before answering")
        try:
            if httpx.get(base + "/api/model", timeout=2).status_code == ready:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("`animerec app` did not answer")
        time.sleep(0.05)


def run(context: BenchContext) -> list[Table]:
    return app_part(context.sample, context.run_dir)
