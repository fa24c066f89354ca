"""`python -m flows`: the `animerec` command line (flows/cli.py)."""

import sys

from flows.cli import main

sys.exit(main())
