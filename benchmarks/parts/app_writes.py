"""The app's writes under load (part `app`): CLIENTS browsers keep rating anime in their profiles for WRITE_SECONDS
(`wrk`; each profile's cookie sent as a browser sends it), then the ratings database is read back: every write the app
acknowledged must be there. Goals: write p99 ≤ 50 ms, no errors, acknowledged = stored."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from benchmarks.parts.wrk import CLIENTS, lua_list, run_wrk
from benchmarks.report import Table
from pipeline.data.ratings_db.schema import app_ratings
from pipeline.data.ratings_db.store import RatingsStore

WRITE_SECONDS = 30
PROFILES = 5_000  # each written about once every PROFILES requests: far inside the per-minute limit


def write_load(base: str, ratings_db_url: str, anime: list[int], work: Path) -> Table:
    store = RatingsStore.open(ratings_db_url)
    tokens = [store.create_profile()[0] for _ in range(PROFILES)]
    acknowledged_log = work / "acknowledged-changes.txt"
    script = work / "writes.lua"
    # Request i rates anime i // PROFILES for profile i % PROFILES: every pair is new, so each write is one row. The
    # change number of each acknowledged write (in its answer) is logged.
    script.write_text(f"""
tokens = {lua_list(tokens)}
anime = {lua_list(anime)}
i = 0
local log = io.open("{acknowledged_log}", "w")
request = function()
  i = i + 1
  local token = tokens[(i % #tokens) + 1]
  local anime_id = anime[(math.floor(i / #tokens) % #anime) + 1]
  return wrk.format("PUT", "/api/me/ratings/" .. anime_id, {{["Content-Type"] = "application/json",
    ["Cookie"] = "animerec_profile=" .. token}}, '{{"rating": ' .. ((i % 10) + 1) .. '}}')
end
response = function(status, headers, body)
  if status == 200 or status == 201 then
    log:write(string.match(body, '"change":(%d+)'), "\\n")
    log:flush()
  end
end
""")
    load = run_wrk(base, script, WRITE_SECONDS)
    acknowledged = {int(line) for line in acknowledged_log.read_text().split()}
    with store.engine.connect() as connection:
        stored = connection.execute(select(func.count()).select_from(app_ratings)).scalar_one()
        changes = set(connection.execute(select(app_ratings.c.change)).scalars())
    store.close()
    backend = store.engine.url.get_backend_name()
    table = Table(f"Ratings written to profiles in the web app: {CLIENTS} concurrent clients on 127.0.0.1, "
                  f"{WRITE_SECONDS} s", ["database", "writes", "p50 ms", "p99 ms", "writes/s", "errors",
                                        "acknowledged", "stored", "acknowledged and stored"])
    table.rows.append([
        "SQLite (WAL, each commit synced)" if backend == "sqlite" else backend, f"{load['requests']:,}",
        f"{load['p50']:.1f}", f"{load['p99']:.1f}", f"{load['rate']:.0f}", str(load["errors"]),
        f"{len(acknowledged):,}", f"{stored:,}", f"{len(acknowledged & changes):,}"])
    table.notes.append(
        f"PUT /api/me/ratings/{{id}} with a profile's cookie, as the profile page sends it; {PROFILES:,} profiles "
        f"made beforehand, {len(anime)} anime, each request a new (profile, anime) pair. \"Acknowledged\": answers 200 "
        "or 201 that wrk read, each with the change number the database gave the write; \"acknowledged and stored\": "
        "those numbers found in the database afterwards. A write wrk sent but whose answer it did not wait for at its "
        "deadline may be stored without being acknowledged (stored − acknowledged ≤ the clients). Goals: write p99 ≤ "
        "50 ms, no errors, every acknowledged write stored.")
    return table
