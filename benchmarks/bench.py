"""`make bench`: every part's tables against a baseline run in the same process, written to BENCHMARKS.md.

Nothing here is asserted: the numbers are printed and written to the `BENCHMARKS.md` section named after the parts
run, with the machine and the exact command. Options: `python -m benchmarks --help` (--parts, --size of the
generated full-scale data, --layout of the scale part, --sample: the rating set of the sample parts).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from benchmarks.parts import DEFAULT_PARTS, PARTS
from benchmarks.report import REPORT, write_report
from benchmarks.runs import DEFAULT_SAMPLE, BenchContext
from pipeline.errors import PipelineInputError
from pipeline.settings import PROJECT_ROOT


def run_benchmarks(parts: list[str], size: str = "kaggle2020", layout: str = "cooperunion",
                   sample: Path = DEFAULT_SAMPLE, work: Path = PROJECT_ROOT / "data" / "bench") -> int:
    """Run the named parts (`animerec bench`), print their tables and replace their sections of BENCHMARKS.md.
    `size`/`layout`: the scale part's generated data; `work`: where generated data and matrices stay between runs."""
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise PipelineInputError(f"unknown bench part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=work) as tmp:
        context = BenchContext(sample, work, Path(tmp), size, layout)
        tables = [table for name, part in PARTS.items() if name in parts for table in part(context)]
    for table in tables:
        print(table.markdown(), end="\n\n")
    command = "make bench" + (f" PARTS={','.join(parts)}" if parts != list(DEFAULT_PARTS) else "") + (
        f" SIZE={size}" if size != "kaggle2020" and {"data-path", "scale", "full"} & set(parts) else "") + (
        f" LAYOUT={layout}" if layout != "cooperunion" and "scale" in parts else "")
    layout_note = f", {layout} layout" if layout != "cooperunion" else ""
    write_report(f"Parts: {', '.join(parts)}" + (f" (size {size}{layout_note})"
                                                 if {"data-path", "scale", "full"} & set(parts) else ""), command,
                 tables)
    print(f"written to {REPORT.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The bench's command line (`python -m benchmarks`): the options, then the parts."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                        help=f"comma-separated subset of {', '.join(DEFAULT_PARTS)} (all of these by default), and "
                        "full (the whole retrain flow at --size)")
    parser.add_argument("--size", choices=["kaggle2020", "tenth"], default="kaggle2020",
                        help="size of the generated data of the data-path, scale and full parts")
    parser.add_argument("--layout", choices=["cooperunion", "kaggle2020"], default="cooperunion",
                        help="file layout of the scale part's generated data")
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE,
                        help="the rating set of the sample parts (default: the shared anime sample)")
    parser.add_argument("--verbose", action="store_true", help="also show the libraries' own output (read on start)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    try:
        return run_benchmarks(parts, args.size, args.layout, args.sample)
    except PipelineInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
