"""BENCHMARKS.md: tables as Markdown, one section per set of parts run, with the machine and the command."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.settings import PROJECT_ROOT

REPORT = PROJECT_ROOT / "BENCHMARKS.md"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" for _ in self.columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines + ([""] + self.notes if self.notes else []))


def machine() -> str:
    import tensorflow as tf

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {memory_gb:.0f} GB RAM, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}")


def repository_path(path: str | Path) -> str:
    """A path as BENCHMARKS.md shows it: relative to the repository when inside it (not this machine's layout)."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(PROJECT_ROOT)) if resolved.is_relative_to(PROJECT_ROOT) else str(path)


def write_report(title: str, command: str, tables: list[Table]) -> None:
    """Replace (or append) this run's section of BENCHMARKS.md."""
    section = "\n\n".join([f"## {title}", f"Machine: {machine()}.", f"Command: `{command}` "
                           f"({time.strftime('%Y-%m-%d')}).", *[t.markdown() for t in tables]]) + "\n"
    text = REPORT.read_text() if REPORT.exists() else (
        "# Benchmarks\n\nWritten by `make bench` (see `.venv/bin/python -m benchmarks --help`). Each section is "
        "replaced by the next run of the same parts.\n")
    head, marker, rest = text.partition(f"## {title}\n")
    if marker:
        following = rest.find("\n## ")
        text = head + section + ("\n" + rest[following + 1:] if following >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    REPORT.write_text(text)
