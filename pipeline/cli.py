"""`animerec` (or `python -m pipeline`): look at and act on the model registry from a terminal."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from pipeline import tracking
from pipeline.registry import format_versions, list_versions, promote_manually, rmse_chart
from pipeline.settings import Settings


def compare(settings: Settings, chart_path: Path) -> int:
    rows = list_versions(settings.registered_model_name)
    print(format_versions(settings.registered_model_name, rows))
    if rows:
        import matplotlib.pyplot as plt

        figure = rmse_chart(settings.registered_model_name, rows)
        chart_path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(chart_path, dpi=100)
        run_id = tracking.log_registry_chart(settings, figure)
        plt.close(figure)
        print(f"chart: {chart_path} (also in MLflow run {run_id}: rmse_per_version.png)")
    return 0


def promote(settings: Settings, version: str, reason: str) -> int:
    name = settings.registered_model_name
    previous = promote_manually(name, version, reason, getpass.getuser())
    print(f"{name} version {version} is now champion (was: {previous or 'none'}); reason recorded: {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="animerec", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    compare_cmd = commands.add_parser("compare", help="table and chart of every registered version")
    compare_cmd.add_argument("--chart", type=Path, default=None, help="PNG path (default: mlruns/rmse_per_version.png)")
    promote_cmd = commands.add_parser("promote", help="make a version champion by hand, with a reason")
    promote_cmd.add_argument("version")
    promote_cmd.add_argument("--reason", required=True, help="why (recorded on the version)")
    args = parser.parse_args(argv)

    settings = Settings()
    tracking.configure_tracking(settings)
    try:
        if args.command == "compare":
            return compare(settings, args.chart or settings.mlruns_dir / "rmse_per_version.png")
        return promote(settings, args.version, args.reason)
    except Exception as exc:  # one clear line for the person at the terminal
        from mlflow.exceptions import MlflowException

        if not isinstance(exc, MlflowException | ValueError):
            raise
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
