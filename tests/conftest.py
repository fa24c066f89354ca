"""Shared fixtures: small generated data sets, per-test settings with a temp MLflow sqlite store."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.environment import use_local_defaults

_STATE = Path(tempfile.mkdtemp(prefix="anime-rec-tests-"))
os.environ["PREFECT_HOME"] = str(_STATE / "prefect")  # the tests' own Prefect state, not the project's
use_local_defaults()

# Prefect sets up its logging when `prefect.main` is first imported (`import prefect` alone is lazy): done here,
# under pytest's session-long capture, its console handler writes to that stream, not to the one of whichever test
# first ran a flow, which pytest closes when that test ends ("I/O operation on closed file", "lost sys.stderr").
import prefect.main  # noqa: E402, F401
import pytest  # noqa: E402

from pipeline.data.generate import DemoSpec, generate_demo_dataset  # noqa: E402
from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.matrix.utility_matrix import UtilityMatrix, build_utility_matrix  # noqa: E402
from pipeline.models.ranking.fit import RankingFit, train_ranking_model  # noqa: E402
from pipeline.models.rating.train import TrainedModel, train_model  # noqa: E402
from pipeline.registry.promotion import Lineage  # noqa: E402
from pipeline.settings import Settings, TrainingConfig  # noqa: E402
from pipeline.validation.validate import validate  # noqa: E402

SHARED_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "anime-sample"
SMALL_SPEC = DemoSpec(n_users=300, n_anime=200, n_ratings=12_000, seed=3)


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> Path:
    """A small demo data set (CooperUnion layout), generated once per session; treat as read-only."""
    return generate_demo_dataset(tmp_path_factory.mktemp("small-data"), SMALL_SPEC)


@pytest.fixture(scope="session")
def prefect_server() -> str:
    """The real Prefect engine against a temporary local API server (started once, stopped at the end); its API
    URL, for child processes that should run their flows on it too."""
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL, PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        _keep_empty_prefect_database(PREFECT_API_DATABASE_CONNECTION_URL.value())
        yield PREFECT_API_URL.value()


EMPTY_PREFECT_DB = _STATE / "empty-prefect.db"


def _keep_empty_prefect_database(url: str) -> None:
    """A copy of the harness's database as it starts (migrated, no runs): a fresh PREFECT_HOME migrates for ~10 s."""
    import sqlite3

    with sqlite3.connect(url.split(":///", 1)[1]) as source, sqlite3.connect(EMPTY_PREFECT_DB) as copy:
        source.backup(copy)


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
    settings = quick_settings(tmp_path_factory.mktemp("small-models"), dataset_name="tests")
    matrix = build_utility_matrix(validate(ingest(small_data), settings), settings)
    return SmallModels(matrix, train_model(matrix, settings.training),
                       train_ranking_model(matrix, settings.ranking, settings.unrated_value,
                                           settings.relevance_threshold))


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
    """`validate` with the Arrow engine (the default), checked against GX's own engine on the same raw data: the
    same accepted, unrated and quarantined rows with the same reasons, the same counts, and GX results that are equal
    expectation by expectation (config, success, counts, samples) — or the same one-line error. Returns Arrow's."""
    from pipeline.errors import PipelineInputError

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
    return Lineage(settings.dataset_name, matrix.data_version, data, {})


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server a test starts)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
