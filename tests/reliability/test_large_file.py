"""A very large rating file (the 2 GB case, here ~630 MB) is streamed: Arrow memory is the rows kept plus
a bounded read buffer, not the size of the file. (Measured here: 70, 209 and 628 MB files peaked at the
rows kept + 107, 131 and 121 MB.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow  # writes and reads a 630 MB file
READ_IN_A_FRESH_PROCESS = """
import json, sys
from pathlib import Path
import pyarrow as pa
from pipeline.data.ingest import ingest
raw = ingest(Path(sys.argv[1]))
print(json.dumps({"rows": raw.rows_in, "peak": pa.default_memory_pool().max_memory(), "kept": raw.ratings.nbytes}))
"""


def test_a_large_file_is_streamed_not_read_whole(tmp_path):
    rows_per_block, blocks = 100_000, 36
    padding = "x" * 170  # a wide column ingest does not keep (say, a review text)
    block = "".join(f"{u},{u % 977 + 1},{u % 10 + 1},{padding}\n" for u in range(1, rows_per_block + 1))
    with (tmp_path / "rating.csv").open("w") as handle:
        handle.write("user_id,anime_id,rating,review\n")
        for _ in range(blocks):
            handle.write(block)
    (tmp_path / "anime.csv").write_text("anime_id,name\n1,One\n")
    size = (tmp_path / "rating.csv").stat().st_size
    assert size > 600 * 2**20

    child = subprocess.run([sys.executable, "-c", READ_IN_A_FRESH_PROCESS, str(tmp_path)], capture_output=True,
                           text=True, cwd=PROJECT_ROOT, check=True)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["rows"] == rows_per_block * blocks
    assert result["peak"] < size / 2  # never the whole file in memory
    assert result["peak"] < result["kept"] + 192 * 2**20  # the typed columns kept, plus a few 16 MB read blocks
