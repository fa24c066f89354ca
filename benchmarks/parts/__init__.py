"""The bench's parts, one module each, in the order `make bench` runs them; each module's `run(context)` returns
its tables and its docstring says what they measure."""

from collections.abc import Callable

from benchmarks.parts import (
    accuracy,
    app,
    cold_start,
    dask,
    data_path,
    data_shapes,
    device,
    full,
    init_schedule,
    optimizers,
    ranking,
    scale,
    serving,
    speed,
    stages,
    time_to_model,
)
from benchmarks.report import Table
from benchmarks.runs import BenchContext

PARTS: dict[str, Callable[[BenchContext], list[Table]]] = {
    "accuracy": accuracy.run, "init-schedule": init_schedule.run, "optimizers": optimizers.run,
    "ranking": ranking.run, "speed": speed.run, "serving": serving.run, "stages": stages.run, "dask": dask.run,
    "time-to-model": time_to_model.run, "data-shapes": data_shapes.run, "data-path": data_path.run,
    "scale": scale.run, "device": device.run, "app": app.run, "cold-start": cold_start.run, "full": full.run,
}
DEFAULT_PARTS = tuple(name for name in PARTS if name != "full")  # the whole retrain at full scale only when named
