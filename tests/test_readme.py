"""The newcomer's path: the README's command lines, run in the order it gives them, on the demo data its first command
makes (then the RATINGS= example of docs/recommendations.md), each as written, each answering."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pipeline.settings import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("readme")]
README = (PROJECT_ROOT / "README.md").read_text()
# commands the README lists that this test does not run, and where they are tried instead
NOT_RUN_HERE = {
    "test": "this suite itself",
    "serve": "a server: tests/flows/test_schedule.py",
    "ui": "a server: tests/registry/test_lineage.py",
    "app": "a server: tests/serving/test_web_app.py",
    "serve-model": "a server: tests/serving/test_serving.py",
    "sweep": "minutes of trials: tests/tuning/test_sweep.py, tests/flows/test_dask.py",
    "bench": "minutes: make bench",
    "clean": "removes the project's own data and MLflow store",
}
# what each command run here must print: its answer, not only an exit code of 0
ANSWERS = {
    "pipeline": r"registered\s+anime-recommender version 1",
    "compare": r"data set demo \(1 version\)",
    "promote": r"version 1 is now champion",
    "recommend": r"top 10 for user 5",
    "similar": r"anime most similar to Cowboy Bebop",
    "similar-users": r"user_id",
    "lint": r"All checks passed",
}


def readme_commands() -> list[str]:
    """The `make …` lines of the README's first code block, then the first column of its commands table."""
    first_block = re.search(r"```bash\n(.*?)```", README, re.DOTALL).group(1)
    lines = [line.split("#")[0].strip() for line in first_block.splitlines()]
    lines += re.findall(r"^\| `(make [^`]+)` \|", README, re.MULTILINE)
    return list(dict.fromkeys(line for line in lines if line.startswith("make ")))


def run_make(line: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """One README line as a person types it (its placeholders `n` and `[…]` filled or dropped)."""
    words = [word for word in shlex.split(line)[1:] if not word.startswith("[")]
    words = ["VERSION=1" if word == "VERSION=n" else word for word in words]
    return subprocess.run(["make", "--no-print-directory", *words], cwd=PROJECT_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_readme_commands_run_as_written_on_the_demo_data(tmp_path):
    env = os.environ | {"ANIMEREC_DATA_ROOT": str(tmp_path / "data"), "ANIMEREC_MLRUNS_DIR": str(tmp_path / "mlruns")}
    commands = readme_commands()
    targets = [shlex.split(line)[1] for line in commands]
    assert targets[0] == "pipeline" and set(NOT_RUN_HERE) < set(targets)  # the README still lists what this skips
    ran = []
    for line, target in zip(commands, targets, strict=True):
        if target in NOT_RUN_HERE:
            continue
        done = run_make(line, env)
        assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        assert re.search(ANSWERS[target], done.stdout), f"{line}: {done.stdout[-2000:]}"
        ran.append(target)
    assert ran == ["pipeline", "compare", "promote", "recommend", "similar", "similar-users", "lint"]

    # docs/recommendations.md: a list of your own, by names, for someone new
    example = re.search(r"```\n\s*(name,rating\n.*?)```", (PROJECT_ROOT / "docs" / "recommendations.md").read_text(),
                        re.DOTALL).group(1)
    ratings = Path(tmp_path / "my.csv")
    ratings.write_text(re.sub(r"^ +", "", example, flags=re.MULTILINE))
    done = run_make(f"make recommend RATINGS={ratings}", env)
    assert done.returncode == 0 and "top 10 for your 3 ratings" in done.stdout, done.stdout + done.stderr
