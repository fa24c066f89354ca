"""What people read about a sweep: the terminal summary, its Prefect artifact and each trial's log line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pipeline.tuning.sweep import OBJECTIVES, Objective, SweptModel, TrialResult


@dataclass(frozen=True)
class SweepSummary:
    model: SweptModel
    trials: list[TrialResult]
    best: TrialResult
    test_score: float  # of the best configuration, for the record
    mlflow_run_id: str

    def format(self) -> str:
        objective = OBJECTIVES[self.model]
        prefix = "ANIMEREC_RANKING__" if self.model == "ranking" else "ANIMEREC_TRAINING__"
        settings_lines = [f"{prefix}{key.upper()}={_setting(value)}"
                          for key, value in sorted(self.best.changed.items())]
        test_metric = "test NDCG@10" if self.model == "ranking" else "test RMSE"
        return "\n".join([
            f"sweep of the {self.model} model: {len(self.trials)} trials, chosen on {objective.metric} "
            f"(MLflow run {self.mlflow_run_id})",
            format_trials(self.trials, self.best, objective),
            f"best: {objective.metric} {self.best.validation_score:.4f}, {test_metric} {self.test_score:.4f}",
            "to train with it: " + " ".join(settings_lines),
        ])

    def markdown(self) -> str:
        return f"```\n{self.format()}\n```"


def trial_line(result: TrialResult, objective: Objective) -> str:
    return f"{result.changed}: {objective.metric} {result.validation_score:.4f} ({result.fit_seconds:.1f} s)"


def _setting(value: Any) -> str:
    """A value as an ANIMEREC_* variable takes it: a Keras part as quoted JSON."""
    return f"'{value.model_dump_json()}'" if isinstance(value, BaseModel) else str(value)


def format_trials(results: list[TrialResult], best: TrialResult, objective: Objective) -> str:
    names = sorted(results[0].changed)
    widths = {n: max(14, len(n), *(len(str(r.changed[n])) for r in results)) for n in names}
    detail_names = sorted(results[0].details)
    header = (" ".join(f"{n:>{widths[n]}}" for n in names) + f" {objective.metric:>22} {'fit s':>6} "
              + " ".join(f"{n:>13}" for n in detail_names))
    lines = [header]
    ordered = sorted(results, key=lambda r: -r.validation_score if objective.higher_is_better else r.validation_score)
    for r in ordered:
        values = " ".join(f"{r.changed[n]!s:>{widths[n]}}" for n in names)
        details = " ".join(f"{r.details[n]:>13,.6g}" for n in detail_names)
        mark = "  <- best" if r is best else ""
        lines.append(f"{values} {r.validation_score:22.4f} {r.fit_seconds:6.1f} {details}{mark}")
    return "\n".join(lines)
