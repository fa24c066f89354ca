"""The stages' import contract (docs/architecture.md), checked by import-linter on the real code."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120)


def test_every_stage_imports_only_the_stages_below_it():
    result = _lint_imports(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The same contract on a copy of the code where evaluation imports serving (above it): it must fail and name
    the import."""
    for package in ("pipeline", "flows"):
        shutil.copytree(PROJECT_ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path)
    evaluate = tmp_path / "pipeline" / "evaluation" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\nfrom pipeline.serving.recommend import Recommender  # noqa\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "pipeline.evaluation.evaluate -> pipeline.serving.recommend" in result.stdout
