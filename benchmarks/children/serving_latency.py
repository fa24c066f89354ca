"""Child process of the bench's `scale` part: top-10 latency as a serving process sees it — a fresh process
that loads the registered bundle (Keras safe mode) and answers requests, with no training beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.parts.serving import latency_rows
from pipeline.environment import use_local_defaults
from pipeline.serving.bundle import load_bundle


def main() -> None:
    recommender = load_bundle(Path(sys.argv[1]))
    print(json.dumps(latency_rows(recommender, "served, loaded from its bundle in a fresh process")[0]))


if __name__ == "__main__":
    use_local_defaults()
    main()
