"""Part `data-path`: ingest → validate → matrix at full scale with GX's engine and with the Arrow accelerator, each in
its own process."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.report import Table
from benchmarks.runs import BenchContext, child_json


def data_path_part(size: str, work: Path) -> Table:
    """Ingest → validate → matrix at full scale with the Arrow engine and with GX's own (the reference), each in its
    own child process of this run: on the generated files (sorted by user, every row a rating) and on a shuffled
    copy with unrated and off-scale rows (no order to lean on, rows to leave out)."""
    from benchmarks.children.data_path import STEPS, shuffled_copy
    from benchmarks.children.full_scale import generated_data

    generated = generated_data(size, work)
    table = Table(f"Data path at full scale ({size}): GX's pandas engine (the default) against the Arrow engine "
                  "(`validation_engine = \"arrow\"`)",
                  ["data", "step", "Arrow, s", "rows/s", "GX, s", "rows/s", "GX / Arrow"])
    for label, folder in (("generated: sorted by user, all ratings", generated),
                          ("shuffled copy, 1% unrated, 0.01% off the scale", shuffled_copy(generated,
                                                                                          work / f"{size}-shuffled"))):
        with tempfile.TemporaryDirectory(prefix="data-path-", dir=work) as tmp:
            runs = {engine: child_json("benchmarks.children.data_path", "--data", str(folder), "--work",
                                       f"{tmp}/{engine}", "--engine", engine) for engine in ("arrow", "gx")}
        for step in (*STEPS, "ingest + validate + matrix"):
            seconds = {engine: sum(run["seconds"][part] for part in STEPS) if step not in STEPS
                       else run["seconds"][step] for engine, run in runs.items()}
            rows_in = runs["arrow"]["rows_in"]
            table.rows.append([label if step == STEPS[0] else "", step, f"{seconds['arrow']:.1f}",
                               f"{rows_in / seconds['arrow']:,.0f}", f"{seconds['gx']:.1f}",
                               f"{rows_in / seconds['gx']:,.0f}", f"{seconds['gx'] / seconds['arrow']:.2f}"])
        same = all(runs["arrow"][key] == runs["gx"][key]
                   for key in ("data_version", "accepted", "unrated", "quarantined", "split_sizes"))
        table.notes.append(f"{label}: {rows_in:,} rows in, {runs['arrow']['accepted']:,} accepted, "
                           f"{runs['arrow']['unrated']:,} unrated, {runs['arrow']['quarantined']:,} quarantined; peak "
                           f"RSS Arrow {runs['arrow']['peak_rss_gb']:.2f} GB, GX {runs['gx']['peak_rss_gb']:.2f} GB; "
                           f"same data version, counts and splits from both engines: {same}.")
    table.notes.append("Each engine in its own child process (its own peak RSS), one after the other on the same "
                       "files; imports before the clock, numba's compiled-code cache loaded inside it. Goal: "
                       "≥ 3,000,000 rows/s through ingest + validate + matrix at 57M rows, peak RSS ≤ 8 GB.")
    return table


def run(context: BenchContext) -> list[Table]:
    return [data_path_part(context.size, context.work)]
