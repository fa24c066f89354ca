"""Typed reading of one CSV file into Arrow: headers matched forgivingly, values parsed column by column, rows that do
not parse kept with the reason (validation quarantines them), HTML entities in names decoded."""

from __future__ import annotations

import csv
import html
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipeline.data.layouts import ANIME_COLUMNS, RATING_COLUMNS, WATCH_LIST_COLUMNS, Columns, DataFile
from pipeline.errors import PipelineInputError

_INTEGER = r"^\s*[+-]?\d{1,18}(\.0*)?\s*$"  # "8.0" (spreadsheets, pandas) is the integer 8
_TOO_LONG = r"^\s*[+-]?\d{19,}(\.0*)?\s*$"  # beyond int64 (and beyond any real id)
_NUMBER = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


def _header(source: DataFile) -> list[str]:
    """The first line's field names, as written (a BOM dropped)."""
    if source.member is None and source.path.is_symlink():  # reading or moving it would touch what it points to
        raise PipelineInputError(f"{source.name}: is a symbolic link; put the file itself there")
    try:
        with source.open() as stream:
            head = stream.read(1 << 16)
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PipelineInputError(f"{source.name}: cannot be read ({str(exc).splitlines()[0]})") from exc
    line = head.decode("utf-8-sig", errors="replace").splitlines()[0] if head.strip() else ""
    return [name.strip() for name in next(csv.reader([line]), [])] if line.strip() else []


def header_key(name: str) -> str:
    """What a header name is matched by: letters and digits, lower-cased (`User ID`, `userId`, `user_id` alike)."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _column_names(source: DataFile, columns: Columns) -> list[str]:
    """Canonical names for the file's header fields (unused fields get names no schema has)."""
    header = _header(source)
    if not header:
        raise PipelineInputError(f"{source.name}: empty file, expected a header {','.join(columns.required)}")
    keys = [header_key(name) for name in header]
    names = [f"\0unused{i}" for i in range(len(header))]
    for canonical in columns.types:
        for accepted in map(header_key, columns.header_names(canonical)):
            if accepted in keys and names[keys.index(accepted)].startswith("\0"):
                names[keys.index(accepted)] = canonical
                break
    missing = [name for name in columns.required if name not in names]
    if missing:
        hint = ": the delimiter must be a comma" if len(header) == 1 and any(c in header[0] for c in ";\t|") else ""
        raise PipelineInputError(f"{source.name}: missing column {', '.join(repr(m) for m in missing)} "
                                 f"(header has {','.join(header)}){hint}")
    return names


def _as_numbers(strings: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Text → `target` (int64: `8.0` is 8) where it is a number of that kind, null elsewhere; and which parsed."""
    valid = pc.fill_null(pc.match_substring_regex(strings, _INTEGER if target == pa.int64() else _NUMBER), False)
    text = pc.utf8_trim_whitespace(strings)
    if target == pa.int64():
        text = pc.replace_substring_regex(text, r"\.0*$", "")
    return pc.cast(pc.if_else(valid, text, None), target), valid


def _parse_column(strings: pa.ChunkedArray, name: str, target: pa.DataType) -> tuple[pa.ChunkedArray, pa.Array]:
    """Cast a string column to `target`; cells that don't parse become null plus an error message."""
    present = pc.invert(pc.is_null(strings))
    values, valid = _as_numbers(strings, target)
    too_long = pc.fill_null(pc.match_substring_regex(strings, _TOO_LONG), False) if target == pa.int64() else None
    kind = "an integer" if target == pa.int64() else "a number"

    def message(what: str) -> pa.ChunkedArray:
        return pc.binary_join_element_wise(f"column '{name}' value '", strings, f"' {what}", "",
                                           null_handling="replace")

    error = pc.if_else(pc.and_(present, pc.invert(valid)), message(f"is not {kind}"), pa.scalar(None, pa.string()))
    if too_long is not None:
        error = pc.if_else(too_long, message("is out of range (more than 18 digits)"), error)
    return values, error


@dataclass
class _InvalidRows:
    """Rows with the wrong number of fields (say, a truncated last line), skipped by the parser."""

    rows: list[tuple[int | None, int, int]] = field(default_factory=list)  # (line number, fields, expected)

    def skip(self, row) -> str:
        self.rows.append((row.number, row.actual_columns, row.expected_columns))
        return "skip"


def _read(source: DataFile, names: list[str], column_types: dict[str, pa.DataType],
          threads: bool) -> tuple[pa.Table, _InvalidRows]:
    """Stream the file in 16 MB blocks under canonical column names, keeping only the schema's columns."""
    invalid = _InvalidRows()
    table = pacsv.read_csv(
        source.readable(),
        read_options=pacsv.ReadOptions(block_size=1 << 24, use_threads=threads, column_names=names, skip_rows=1),
        parse_options=pacsv.ParseOptions(invalid_row_handler=invalid.skip),
        convert_options=pacsv.ConvertOptions(column_types=column_types, include_columns=list(column_types),
                                             include_missing_columns=True, strings_can_be_null=True))
    return table, invalid


def _decoded(values: pa.ChunkedArray, name: str) -> tuple[pa.ChunkedArray, pa.Array]:
    """Bytes → text; values that are not UTF-8 are decoded with replacement characters and flagged."""
    try:
        return pc.cast(values, pa.string()), pa.nulls(len(values), pa.string())
    except pa.ArrowInvalid:
        raw = values.to_pylist()
        text = [None if v is None else v.decode("utf-8", errors="replace") for v in raw]
        bad = [v is not None and t.encode("utf-8", errors="surrogatepass") != v for v, t in zip(raw, text, strict=True)]
        message = f"column '{name}' is not valid UTF-8"
        return pa.chunked_array([pa.array(text, pa.string())]), pa.array([message if b else None for b in bad],
                                                                        pa.string())


def read_csv_file(source: DataFile, columns: Columns) -> pa.Table:
    """Read the columns' fields (optional ones missing from the file come back null; extra ones are ignored);
    unparseable cells and rows with the wrong number of fields are flagged per row in `parse_error`
    (validation quarantines them). Text fields are trimmed of surrounding spaces."""
    names = _column_names(source, columns)
    schema = columns.types
    try:
        try:
            table, invalid = _read(source, names, schema, threads=True)
            errors = pa.nulls(table.num_rows)  # null-typed: no buffer per row while no value failed
        except pa.ArrowInvalid as exc:
            if "conversion error" not in str(exc).lower():
                raise PipelineInputError(f"{source.name}: unparseable CSV ({str(exc).splitlines()[0]})") from exc
            table, invalid = _read(source, names, {name: pa.binary() for name in schema}, threads=True)
            errors = pa.nulls(table.num_rows, pa.string())
            for name, target in schema.items():
                text, column_errors = _decoded(table[name], name)
                if target != pa.string():
                    text, column_errors = _parse_column(text, name, target)  # bad bytes fail as "not an integer"
                table = table.set_column(table.schema.get_field_index(name), name, text)
                errors = pc.coalesce(errors, column_errors)
        if invalid.rows and any(number is None for number, _, _ in invalid.rows):
            invalid = _read(source, names, {name: pa.binary() for name in schema}, threads=False)[1]  # one thread
    except (OSError, EOFError, zipfile.BadZipFile) as exc:  # a damaged .gz/.zip: name it, don't trace back
        raise PipelineInputError(f"{source.name}: cannot be read ({str(exc).splitlines()[0]})") from exc
    for name, target in schema.items():
        if target == pa.string():
            table = table.set_column(table.schema.get_field_index(name), name, pc.utf8_trim_whitespace(table[name]))
    return _with_row_numbers(table, errors, invalid, schema)


def _with_row_numbers(table: pa.Table, errors: pa.Array, invalid: _InvalidRows,
                      schema: dict[str, pa.DataType]) -> pa.Table:
    """Number data rows from 1 (the header is line 1; int32 below 2**31 rows) and append the skipped rows, all
    fields null."""
    skipped = [number - 1 for number, _, _ in invalid.rows]
    n = table.num_rows + len(skipped)
    numbers = np.arange(1, n + 1, dtype=np.int32 if n < 2 ** 31 - 1 else np.int64)
    if skipped:  # a mask, not setdiff1d: that one sorts all 57M numbers
        kept = np.ones(len(numbers), dtype=bool)
        kept[np.asarray(skipped) - 1] = False
        numbers = numbers[kept]
        errors = errors.cast(pa.string())  # the skipped rows get a text reason below
    table = table.append_column("row_number", pa.array(numbers)).append_column("parse_error", errors)
    if not skipped:
        return table
    broken = pa.table({
        **{name: pa.nulls(len(skipped), table.schema.field(name).type) for name in schema},
        "row_number": pa.array(skipped, table.schema.field("row_number").type),
        "parse_error": pa.array([f"row has {fields} fields, expected {expected}"
                                 for _, fields, expected in invalid.rows], pa.string()),
    })
    return pa.concat_tables([table, broken.cast(table.schema)])


def _as_source(path: Path | DataFile) -> DataFile:
    return path if isinstance(path, DataFile) else DataFile(Path(path))


def read_ratings(path: Path | DataFile) -> pa.Table:
    return read_csv_file(_as_source(path), RATING_COLUMNS)


def read_watch_list(path: Path | DataFile) -> pa.Table:
    return read_csv_file(_as_source(path), WATCH_LIST_COLUMNS)


# What MyAnimeList's files write where a value is not known (Kaggle 2020: `Unknown`, `None found, add some`)
NOT_KNOWN = ("unknown", "none found, add some", "n/a", "none")
LIST_COLUMNS = ("genre", "studios")  # comma-separated lists, written back as "A, B" whatever their spacing


def _known_text(values: pa.ChunkedArray, is_list: bool) -> pa.Array:
    """Text cells with `NOT_KNOWN` placeholders and blanks as null; list cells as "A, B" (spacing and empty items
    dropped, inner runs of spaces collapsed)."""
    out = []
    for value in values.to_pylist():
        text = None if value is None else re.sub(r"\s+", " ", value).strip()
        if text and is_list:
            text = ", ".join(item.strip() for item in text.split(",") if item.strip())
        out.append(None if not text or text.casefold() in NOT_KNOWN else text)
    return pa.array(out, pa.string())


def read_anime(path: Path | DataFile) -> pa.Table:
    """Anime metadata in the CooperUnion columns (a Kaggle 2020 `anime.csv` is mapped by ANIME_COLUMNS), HTML
    entities decoded (`&#039;` → `'`); metadata numbers that don't parse (`Unknown`, blank) are null, never a
    quarantine, and so are placeholders for unknown text (`Unknown`)."""
    table = read_csv_file(_as_source(path), ANIME_COLUMNS)
    names = pa.array([None if n is None else html.unescape(n) for n in table["name"].to_pylist()], pa.string())
    table = table.set_column(table.schema.get_field_index("name"), "name", names)
    for name in ("genre", "type", "studios", "source", "premiered"):
        table = table.set_column(table.schema.get_field_index(name), name,
                                 _known_text(table[name], name in LIST_COLUMNS))
    for name, target in (("episodes", pa.int64()), ("rating", pa.float64()), ("members", pa.int64())):
        table = table.set_column(table.schema.get_field_index(name), name, _as_numbers(table[name], target)[0])
    return table
