"""`python -m benchmarks` (what `animerec bench` and `make bench` run): the quiet local defaults first, then the
bench (benchmarks/bench.py), its terminal kept to its own lines unless --verbose."""

import sys

from pipeline.environment import quiet_libraries, quiet_native_stderr, use_local_defaults

use_local_defaults()
verbose = "--verbose" in sys.argv[1:]
quiet_libraries(verbose)
with quiet_native_stderr(quiet=not verbose):
    from benchmarks.bench import main  # TensorFlow, Prefect and MLflow read the defaults on import

    sys.exit(main())
