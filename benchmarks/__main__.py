"""`python -m benchmarks` (what `animerec bench` and `make bench` run): the quiet local defaults first, then the
bench (benchmarks/bench.py)."""

import sys

from pipeline.environment import use_local_defaults

use_local_defaults()

from benchmarks.bench import main  # noqa: E402  (TensorFlow, Prefect and MLflow read the defaults on import)

sys.exit(main())
