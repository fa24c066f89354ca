"""Shared fixtures: small generated data sets, per-test settings with a temp MLflow sqlite store, one Prefect API
server for the whole run."""

from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.environment import use_local_defaults

# A folder the whole run shares (pytest-xdist's workers find it in the environment they inherit from the controller),
# and one of this process's own inside it.
_SHARED = Path(os.environ.setdefault("ANIME_REC_TEST_STATE", tempfile.mkdtemp(prefix="anime-rec-tests-")))
_STATE = Path(tempfile.mkdtemp(dir=_SHARED))
_TEST_API = "ANIME_REC_TEST_PREFECT_API"  # the URL of the tests' Prefect server, once one was started
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")  # the tests' own Prefect state, not the project's
if os.environ.get(_TEST_API):
    os.environ["PREFECT_API_URL"] = os.environ[_TEST_API]
else:
    os.environ.pop("PREFECT_API_URL", None)  # never a server of the developer's
use_local_defaults()

import pytest  # noqa: E402

from flows.serve import stop_server  # noqa: E402
from flows.temporary_server import (  # noqa: E402
    answers_in_time,
    free_port,
    send_what_prefect_holds,
    start_api_server,
)
from pipeline.data.generate import DemoSpec, generate_demo_dataset  # noqa: E402
from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.matrix.utility_matrix import UtilityMatrix, build_utility_matrix  # noqa: E402
from pipeline.settings import Settings, TrainingConfig  # noqa: E402

if TYPE_CHECKING:
    from pipeline.models.ranking.fit import RankingFit
    from pipeline.models.rating.train import TrainedModel
    from pipeline.registry.lineage import Lineage

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"  # real rating sets beside the project (CI has them)
SHARED_SAMPLE = SHARED_DATA / "anime-sample"
KAGGLE2020_HEAD = SHARED_DATA / "kaggle2020-head"
SMALL_SPEC = DemoSpec(n_users=300, n_anime=200, n_ratings=12_000, seed=3)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small demo data set (CooperUnion layout), generated once per session; treat as read-only."""
    return generate_demo_dataset(tmp_path_factory.mktemp("small-data"), SMALL_SPEC)


EMPTY_PREFECT_DB = _SHARED / "empty-prefect.db"


def _start_prefect_server() -> subprocess.Popen:
    """The tests' Prefect API server (what `prefect_test_harness` starts) on a free port, its database in the shared
    folder; its URL goes into the environment, for this process's Prefect, the test workers and their children."""
    port, home = free_port(), _SHARED / "prefect-server"
    home.mkdir(exist_ok=True)
    server = start_api_server(port, {"PREFECT_HOME": str(home)})
    os.environ[_TEST_API] = os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    threading.Thread(target=_keep_empty_prefect_database, args=(server, home / "prefect.db"), daemon=True).start()
    return server


def _keep_empty_prefect_database(server: subprocess.Popen, database: Path) -> None:
    """Once the server answers (migrations done, no run yet), copy its database to EMPTY_PREFECT_DB, which says to
    every process that the server is ready: each process's own would migrate a fresh database again."""
    if not answers_in_time(server, os.environ[_TEST_API], 120):
        return  # the fixture waiting for the copy fails and says so
    building = _STATE / "building-prefect.db"
    with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(building)) as copy:
        source.backup(copy)
    os.replace(building, EMPTY_PREFECT_DB)


def _distributes(config: pytest.Config) -> bool:
    """Whether this process is pytest-xdist's controller, which hands the tests to worker processes."""
    return (not hasattr(config, "workerinput") and config.getoption("dist", "no") != "no"
            and not config.getoption("collectonly"))


_SERVER = pytest.StashKey[subprocess.Popen]()


def pytest_configure(config: pytest.Config) -> None:
    """xdist's controller starts the one Prefect server before its workers start (they inherit its URL), so that
    it starts and migrates while they import; a process that runs tests imports Prefect here, under pytest's
    session-long capture: Prefect sets up its console logging on that first import, and a handler made while a test
    runs writes to that test's stream, which pytest closes when the test ends ("I/O operation on closed file")."""
    if _distributes(config):
        config.stash[_SERVER] = _start_prefect_server()
    else:
        import prefect.main  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (otherwise in collection order): xdist hands tests out in this order, so the flows and servers
    start while the quick tests fill the gaps, and none is left running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `shared_data(path, …)` reads real data in ../shared/data: where a path is missing it fails and
    says which, rather than skipping without a word."""
    for marker in item.iter_markers("shared_data"):
        missing = [str(path) for path in marker.args if not Path(path).exists()]
        if missing:
            pytest.fail(f"needs {', '.join(missing)}: the shared real data sets are not beside the project",
                        pytrace=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    if (server := config.stash.get(_SERVER, None)) is not None:
        stop_server(server)


@pytest.fixture(scope="session")
def prefect_server():
    """The real Prefect engine against the run's Prefect API server (started here when no controller started one,
    stopped at the end); its API URL, for child processes that should run their flows on it too."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = None if os.environ.get(_TEST_API) else _start_prefect_server()
    deadline = time.monotonic() + 120
    while not EMPTY_PREFECT_DB.exists():
        assert time.monotonic() < deadline, f"the tests' Prefect server at {os.environ[_TEST_API]} did not start"
        time.sleep(0.2)
    try:
        with temporary_settings(updates={PREFECT_API_URL: os.environ[_TEST_API]}):
            yield os.environ[_TEST_API]
    finally:
        send_what_prefect_holds()
        if server is not None:
            stop_server(server)


@pytest.fixture
def prefect_home(tmp_path, prefect_server) -> Path:
    """A new PREFECT_HOME for a process that runs on its own Prefect server, its database already migrated."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    shutil.copyfile(EMPTY_PREFECT_DB, home / "prefect.db")
    return home


@dataclass(frozen=True)
class SmallModels:
    """Both models trained once on `small_data` with quick settings; tests only read them."""

    matrix: UtilityMatrix
    trained: TrainedModel
    ranking: RankingFit


@pytest.fixture(scope="session")
def small_models(small_data, tmp_path_factory) -> SmallModels:
    """Trained once per session: tests that log, register or serve a model share these instead of retraining."""
    from pipeline.models.ranking.fit import train_ranking_model
    from pipeline.models.rating.train import train_model
    from pipeline.validation.validate import validate

    settings = quick_settings(tmp_path_factory.mktemp("small-models"), dataset_name="tests")
    matrix = build_utility_matrix(validate(ingest(small_data), settings), settings)
    return SmallModels(matrix, train_model(matrix, settings.training),
                       train_ranking_model(matrix, settings.ranking, settings.unrated_value,
                                           settings.relevance_threshold))


@pytest.fixture(scope="session")
def champion_store(small_data, tmp_path_factory, prefect_server) -> Path:
    """A root (as `quick_settings` lays it out) whose data and MLflow store hold one retrain of `small_data`: version 1,
    the champion of data set `tests`. Made once per session; a test takes its own copy with `copy_store`."""
    from flows.retrain import retrain

    root = tmp_path_factory.mktemp("champion-store")
    retrain(data_dir=small_data, settings=quick_settings(root, dataset_name="tests"))
    return root


def copy_store(source: Path, settings: Settings) -> None:
    """Copy the data and MLflow store under `source` to `settings`' (both under one root, as `quick_settings` lays
    them out), and point this process's MLflow at the copy, as the retrain it stands for would. The store's database
    and model files name folders by absolute path: those are rewritten to the copy's."""
    from pipeline.registry.store import configure_tracking

    old, new = str(source.resolve()), str(settings.data_root.parent.resolve())
    assert settings.mlruns_dir.parent.resolve() == Path(new), "data and store under one root"
    for folder in (settings.data_root, settings.mlruns_dir):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(source / folder.name, folder)
    with closing(sqlite3.connect(settings.mlruns_dir / "mlflow.db")) as db, db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            columns = db.execute(f"PRAGMA table_info('{table}')").fetchall()
            for column in [name for _, name, kind, *_ in columns if "CHAR" in kind or "TEXT" in kind]:
                db.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '  # noqa: S608 (schema names)
                           f'WHERE instr("{column}", ?) > 0', (old, new, old))
    for model_file in settings.mlruns_dir.rglob("MLmodel"):
        model_file.write_text(model_file.read_text().replace(old, new))
    configure_tracking(settings)


def _empty_mlflow_store() -> Path:
    """An MLflow sqlite database with its schema migrated, made once per test process: creating one takes ~2 s."""
    template = _STATE / "empty-mlflow.db"
    if not template.exists():
        from mlflow import MlflowClient

        building = _STATE / "building-mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{building}").search_experiments()
        os.replace(building, template)
    return template


def quick_settings(root: Path, **overrides) -> Settings:
    """Settings writing under `root` (its MLflow store starts as an empty, already migrated database), with a quick
    training configuration that still beats the bias baseline on SMALL_SPEC data (a few seconds)."""
    store = root / "mlruns" / "mlflow.db"
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_empty_mlflow_store(), store)
    return Settings(data_root=root / "data", mlruns_dir=root / "mlruns", lock_wait_seconds=5,
                    registry_retry_delay_seconds=0.05,
                    training=TrainingConfig(embedding_dim=32, batch_size=512, epochs=20, learning_rate=0.02,
                                            early_stopping_patience=2), **overrides)


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Quick settings under tmp_path, for data set `tests` whatever the data folder."""
    return quick_settings(tmp_path, dataset_name="tests")


def _gx_results(report) -> list:
    """A suite report's GX results, batch by batch, without the batch id (which names the engine's batch)."""
    return [[{**item, "expectation_config": {**item["expectation_config"], "kwargs": {
        key: value for key, value in item["expectation_config"]["kwargs"].items() if key != "batch_id"}}}
        for item in batch["results"]] for batch in report.gx_result.get("batches", [report.gx_result])]


def validate_with_both_engines(raw, settings: Settings):
    """`validate` with the Arrow engine, checked against GX's own engine (the default) on the same raw data: the
    same accepted, unrated and quarantined rows with the same reasons, the same counts, and GX results that are equal
    expectation by expectation (config, success, counts, samples) — or the same one-line error. Returns Arrow's."""
    from pipeline.errors import PipelineInputError
    from pipeline.validation.validate import validate

    results = {}
    for engine in ("gx", "arrow"):
        try:
            results[engine] = validate(raw, settings.model_copy(update={"validation_engine": engine}))
        except PipelineInputError as exc:
            results[engine] = str(exc)
    reference, fast = results["gx"], results["arrow"]
    if isinstance(reference, str) or isinstance(fast, str):
        assert fast == reference
        raise PipelineInputError(fast)
    assert fast.quarantine.equals(reference.quarantine), (fast.quarantine.to_pylist(), reference.quarantine.to_pylist())
    assert fast.anime_quarantine.equals(reference.anime_quarantine)
    assert fast.ratings.equals(reference.ratings) and fast.unrated.equals(reference.unrated)
    assert fast.counts == reference.counts and fast.data_version == reference.data_version
    assert fast.summary() == reference.summary()
    for fast_report, gx_report in zip(fast.reports, reference.reports, strict=True):
        assert fast_report.gx_result["meta"].get("engine") == "arrow" != gx_report.gx_result["meta"].get("engine")
        assert _gx_results(fast_report) == _gx_results(gx_report)
    return fast


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process that runs the pipeline with `settings`' store, data root, data set name and
    training, on the session's Prefect server."""
    import json

    return os.environ | {
        "ANIMEREC_DATA_ROOT": str(settings.data_root), "ANIMEREC_MLRUNS_DIR": str(settings.mlruns_dir),
        "ANIMEREC_DATASET_NAME": settings.dataset_name, "PREFECT_API_URL": os.environ[_TEST_API],
        "PYTHONPATH": str(PROJECT_ROOT),
        **{f"ANIMEREC_TRAINING__{k.upper()}": json.dumps(v) if isinstance(v, dict) else str(v)
           for k, v in settings.training.model_dump().items()}}


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


RATING_HEADER = ["user_id", "anime_id", "rating"]
ANIME_HEADER = ["anime_id", "name", "genre", "type", "episodes", "rating", "members"]


def write_dataset(folder: Path, ratings: list[list[object]], anime: list[list[object]] | None = None) -> Path:
    """Write a tiny CooperUnion-layout folder; anime.csv lists every anime id in `ratings` by default."""
    if anime is None:
        ids = sorted({int(row[1]) for row in ratings if str(row[1]).lstrip("-").isdigit()})
        anime = [[i, f"Anime {i}", "Action", "TV", 12, 7.5, 100] for i in ids]
    write_csv(folder / "rating.csv", RATING_HEADER, ratings)
    write_csv(folder / "anime.csv", ANIME_HEADER, anime)
    return folder


def listening_hosts(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp and tcp6)."""
    import ipaddress

    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state != "0A" or int(local_port, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian 32-bit words
            ip = ipaddress.ip_address(words)
            hosts.add(str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip))
    return hosts


def lineage_of(settings: Settings, data: Path, matrix) -> Lineage:
    """The lineage a retrain run would record for `matrix` built from `data` under `settings`."""
    from pipeline.registry.lineage import Lineage

    return Lineage(settings.dataset_name, matrix.data_version, data, {})


def wait_until_answers(server, url: str, timeout_s: float) -> None:
    """Wait until the server process `server` (a Popen) answers GET `url` with 200; fail if it exits or time runs
    out."""
    import time

    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        assert server.poll() is None, f"the server for {url} exited"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"no answer from {url} within {timeout_s} s"
        time.sleep(0.5)


def evaluate_served(model, ranking, matrix: UtilityMatrix, settings: Settings):
    """The evaluate stage on the recommender the flow serves from these models (knowing train and validation)."""
    from pipeline.evaluation.evaluate import SEEN_SPLITS, evaluate_model
    from pipeline.serving.recommend import Recommender

    served = Recommender.from_matrix(model, ranking, matrix, settings.unrated_value, splits=SEEN_SPLITS)
    return evaluate_model(served, matrix, settings.relevance_threshold)


# A trained run in a test's own MLflow store, and versions registered from it with a given evaluation.
def evaluation_report(model_rmse: float, n_test: int, ndcg: float = 0.3, ndcg_stderr: float = 0.0):
    """An evaluation with these scores (baselines far behind), to register a version with."""
    from pipeline.evaluation.evaluate import EvaluationReport, RankingReports
    from pipeline.metrics import RankingReport, Scores

    lists = RankingReport(0.1, 0.1, ndcg, 0.5, 0.9, 100, ndcg_stderr)
    return EvaluationReport(Scores(model_rmse, model_rmse), Scores(9.0, 9.0), Scores(9.0, 9.0), n_test,
                            RankingReports(lists, lists, lists))


@pytest.fixture
def trained_run(small_models, small_data, settings):
    """The session's trained models logged as one real run to this test's temp sqlite MLflow store."""
    from pipeline.tracking.model_logging import log_model_bundle, log_rating_model
    from pipeline.tracking.runs import finish_run, start_run
    from pipeline.tracking.stage_logging import log_matrix

    matrix, trained, ranking = small_models.matrix, small_models.trained, small_models.ranking
    lineage = lineage_of(settings, small_data, matrix)
    run_id = start_run(settings, lineage)
    log_rating_model(run_id, trained, settings.training, matrix)
    model_uri = log_model_bundle(run_id, trained, ranking.model, matrix, settings.unrated_value,
                                 settings.training.l2)
    log_matrix(run_id, matrix)
    finish_run(run_id, True)
    return matrix, (trained, ranking), run_id, model_uri, lineage


def register_trained_run(trained_run, settings, report, matrix=None, lineage=None):
    """Register the trained run's model with `report` as its evaluation (on `matrix`, of `lineage`)."""
    from pipeline.monitoring.version_scoring import score_champion
    from pipeline.registry.registration import register_and_decide
    from pipeline.tracking.stage_logging import log_champion_scores

    trained_matrix, _, run_id, model_uri, trained_lineage = trained_run
    matrix, lineage = matrix or trained_matrix, lineage or trained_lineage
    champion = score_champion(settings.registered_model_name, lineage.dataset, matrix, settings.relevance_threshold)
    log_champion_scores(run_id, champion)
    return register_and_decide(settings.registered_model_name, model_uri, run_id, report, champion, matrix, lineage,
                               "biased_mf ratings + EASE lists")


def _postgres_binaries() -> Path:
    """The folder of Debian's PostgreSQL server programs (`make test` installs the package when missing)."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    assert found, "PostgreSQL's server is not installed: `make test` installs Debian's postgresql package"
    return found[-1].parent


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A real PostgreSQL server for this test process, started here on 127.0.0.1 (as the postgres user when this is
    root, which PostgreSQL refuses to run as) and stopped at the end; its URL without a database name."""
    # a folder of its own under /tmp: pytest's temp folders are private to this user
    binaries, folder, port = _postgres_binaries(), Path(tempfile.mkdtemp(prefix="anime-rec-postgres-")), free_port()
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_owner:
        shutil.chown(folder, "postgres")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    subprocess.run([*as_owner, binaries / "initdb", "-D", folder / "data", "-A", "trust", "-U", "animerec",
                    "--no-sync", "-E", "UTF8"], **quiet)
    control = [*as_owner, binaries / "pg_ctl", "-D", folder / "data", "-w"]
    subprocess.run([*control, "-l", folder / "server.log", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}", "start"], **quiet)
    try:
        yield f"postgresql://animerec@127.0.0.1:{port}"
    finally:
        subprocess.run([*control, "-m", "immediate", "stop"], **quiet)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def ratings_db_url(request, tmp_path) -> str:
    """A new, empty ratings database: a SQLite file, or a database of its own on the test process's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ratings.db'}"
    return new_postgres_database(request.getfixturevalue("postgres_server"))


def new_postgres_database(server: str) -> str:
    """A new, empty database on the tests' PostgreSQL server `server`; its URL."""
    import psycopg

    name = f"ratings_{os.getpid()}_{free_port()}_{time.monotonic_ns()}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


class RunningApp:
    """The app served by uvicorn on 127.0.0.1 in a thread of this process, until stopped."""

    def __init__(self, settings, model: str = "champion", refresh_seconds: float = 0.5):
        import uvicorn

        from flows.cli import APP_PROTOCOL
        from pipeline.serving.web.app import create_app

        self.app = create_app(settings, model, refresh_seconds)
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning",
                                                    http=APP_PROTOCOL))  # as `animerec app` serves it
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> RunningApp:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the app did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
