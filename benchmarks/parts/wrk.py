"""`wrk` (Debian's package; `make bench` installs it when missing), the load generator of the app's benchmarks: C, one
thread, CLIENTS connections, each sending its next request when the last is answered."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CLIENTS = 16
WRK = shutil.which("wrk") or "/usr/bin/wrk"


def lua_list(values: list) -> str:
    return "{" + ", ".join(json.dumps(value) for value in values) + "}"


def run_wrk(base: str, script: Path, seconds: int) -> dict:
    """`wrk` with a Lua script: requests, p50 and p99 (ms), requests/s and errors (non-2xx answers, socket errors)."""
    out = subprocess.run([WRK, "-t1", f"-c{CLIENTS}", f"-d{seconds}s", "--latency", "-s", str(script), base],
                         capture_output=True, text=True, check=True).stdout

    def milliseconds(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    failed += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)), "p50": milliseconds("50"),
            "p99": milliseconds("99"), "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "errors": failed}
